"""MLflow run handling shared by every entry point."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow


@contextmanager
def tracked_run(experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start (or, under ``mlflow run``, attach to) a run that never stays RUNNING after an error.

    An exception ends it as FAILED; an interrupt (Ctrl-C) as KILLED, since the work may resume.

    Under ``mlflow run`` the launcher has already created the run and chosen the experiment
    (``MLFLOW_RUN_ID``), so ``experiment`` only applies to direct Python or console use.
    """
    if not os.environ.get("MLFLOW_RUN_ID") and mlflow.active_run() is None:
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {})) as run:
        try:
            yield run
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")
            raise


def log_params(params: Mapping[str, Any]) -> None:
    """Log parameters on the active run; None becomes "" so every run has every column.

    Under ``mlflow run`` the launcher has already logged the entry point's parameters as the user
    typed them, and MLflow forbids changing a logged value, so those keys keep the launcher's value.
    """
    run = mlflow.active_run()
    already = mlflow.get_run(run.info.run_id).data.params if run is not None else {}
    mlflow.log_params({k: "" if v is None else v for k, v in params.items() if k not in already})

"""MLflow run handling shared by every entry point."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow


@contextmanager
def tracked_run(
    experiment: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    *,
    run_id: str | None = None,
    nested: bool = False,
    killed_by: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
) -> Iterator[mlflow.ActiveRun]:
    """Start (or, under ``mlflow run`` or with ``run_id``, resume) a run that never stays RUNNING
    after an error.

    An exception ends it as FAILED; one of ``killed_by`` (an interrupt, since the work may resume;
    a pruned trial) as KILLED.

    Under ``mlflow run`` the launcher has already created the run and chosen the experiment
    (``MLFLOW_RUN_ID``), so ``experiment`` only applies to direct Python or console use.
    """
    if not os.environ.get("MLFLOW_RUN_ID") and mlflow.active_run() is None and run_id is None:
        ensure_experiment(experiment)
    with mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested, tags=dict(tags or {})) as run:
        try:
            yield run
        except killed_by:
            mlflow.end_run("KILLED")
            raise


def ensure_experiment(name: str) -> str:
    """Make ``name`` the active experiment, creating it if needed; return its id.

    Safe when several processes create the same experiment at once (parallel tuning workers):
    ``mlflow.set_experiment`` then returns the other process's experiment without activating it.
    """
    try:
        experiment_id = mlflow.set_experiment(name).experiment_id
    except mlflow.exceptions.MlflowException:
        if (existing := mlflow.get_experiment_by_name(name)) is None:
            raise
        experiment_id = existing.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_params(params: Mapping[str, Any]) -> None:
    """Log parameters on the active run; None becomes "" so every run has every column.

    Under ``mlflow run`` the launcher has already logged the entry point's parameters as the user
    typed them, and MLflow forbids changing a logged value, so those keys keep the launcher's value.
    """
    run = mlflow.active_run()
    already = mlflow.get_run(run.info.run_id).data.params if run is not None else {}
    mlflow.log_params({k: "" if v is None else v for k, v in params.items() if k not in already})

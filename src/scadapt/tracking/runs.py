"""MLflow run handling shared by every entry point."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR


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


@contextmanager
def quiet_artifact_downloads() -> Iterator[None]:
    """No MLflow progress bar per downloaded artifact (small files, fetched many at a time)."""
    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


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


def shared_run(experiment: str, identity: Mapping[str, str], run_name: str,
               tags: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """The run that several processes (or a resumed job) share, and whether this call created it:
    the oldest run of ``experiment`` carrying every ``identity`` tag, created with ``identity``
    and ``tags`` if there is none.

    Under ``mlflow run`` the launcher's run (``MLFLOW_RUN_ID``, consumed here so nested runs do
    not resume it) becomes the shared run if none exists yet; otherwise the launcher is tagged
    ``scadapt.joined_run`` with the shared run's id and ended, and its experiment is used.
    """
    client = MlflowClient()
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    if launcher:
        experiment_id = client.get_run(launcher).info.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    else:
        experiment_id = ensure_experiment(experiment)
    existing = _runs_tagged(client, experiment_id, identity)
    if existing:
        if launcher:
            client.set_tag(launcher, "scadapt.joined_run", existing[0])
            client.set_terminated(launcher)
        return existing[0], False
    own = launcher or client.create_run(experiment_id, run_name=run_name).info.run_id
    for key, value in {**dict(tags or {}), **identity}.items():
        client.set_tag(own, key, value)
    chosen = _runs_tagged(client, experiment_id, identity)[0]
    if chosen != own:  # another process created the shared run at the same moment
        client.delete_run(own)
    return chosen, chosen == own


def search_all_runs(experiment_ids: list[str], query: str) -> list[mlflow.entities.Run]:
    """Every run matching ``query``, page by page (``search_runs`` returns at most one page)."""
    client, runs, token = MlflowClient(), [], None
    while True:
        page = client.search_runs(experiment_ids, query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _runs_tagged(client: MlflowClient, experiment_id: str, identity: Mapping[str, str]) -> list[str]:
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in identity.items())
    runs = search_all_runs([experiment_id], query)
    return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

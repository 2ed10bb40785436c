"""MLflow run handling shared by every entry point."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.environment_variables import (
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)

from scadapt.infra.databases import CONNECT_TIMEOUT_SEC, is_server_url, probe
from scadapt.infra.errors import ScadaptError
from scadapt.infra.redaction import redact
from scadapt.tracking.contract import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, INTERRUPTED_TAG, JOINED_RUN_TAG

T = TypeVar("T")


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
    tags = {key: redact(value) for key, value in (tags or {}).items()}
    with mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested, tags=tags) as run:
        if not nested and run_id is None:  # e.g. the launcher's experiment under `mlflow run`
            mark_model_development(MlflowClient().get_experiment(run.info.experiment_id))
        try:
            yield run
        except killed_by:
            mlflow.end_run("KILLED")
            raise


@contextmanager
def resumed_run(run_id: str, keep_status: bool = False) -> Iterator[mlflow.ActiveRun]:
    """Run ``run_id`` as the active run for the block (nested under an active one), whichever
    experiment is active (MLflow refuses to resume a run of another: a promoted ``train`` run
    seen from a benchmark), which stays active after. The run ends FINISHED (FAILED after an
    error), or with ``keep_status`` as it was whatever happens in the block: an interrupt while
    logging to finished work must not fail it."""
    status = MlflowClient().get_run(run_id).info.status if keep_status else "RUNNING"
    fluent = mlflow.tracking.fluent
    active, fluent._active_experiment_id = fluent._active_experiment_id, None  # no public setter clears it
    try:
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None) as run:
            yield run
    finally:
        fluent._active_experiment_id = active
        if status != "RUNNING":
            MlflowClient().set_terminated(run_id, status)


@contextmanager
def quiet_artifact_downloads() -> Iterator[None]:
    """No MLflow progress bar per downloaded artifact (small files, fetched many at a time)."""
    with temporary_environment({MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name: "false"}):
        yield


@contextmanager
def temporary_environment(settings: Mapping[str, str]) -> Iterator[None]:
    """Environment variables set for the block, restored (or removed) after it."""
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ensure_experiment(name: str) -> str:
    """Make ``name`` the active experiment, creating it if needed; return its id.

    Safe when several processes create the same experiment at once (parallel tuning workers):
    ``mlflow.set_experiment`` then returns the other process's experiment without activating it.
    """
    try:
        experiment = mlflow.set_experiment(name)
    except mlflow.exceptions.MlflowException:
        if (experiment := mlflow.get_experiment_by_name(name)) is None:
            raise
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    mark_model_development(experiment)
    return experiment.experiment_id


def mark_model_development(experiment: mlflow.entities.Experiment) -> None:
    """Tag an experiment as model development, so the MLflow UI opens it on its training runs
    (MLflow 3 opens untagged experiments on its GenAI overview)."""
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        retry_racing_writers(MlflowClient().set_experiment_tag, experiment.experiment_id, EXPERIMENT_KIND_TAG,
                             EXPERIMENT_KIND)


_RACE_ATTEMPTS = 6


def retry_racing_writers(write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``write(*args, **kwargs)``, retried while it loses a race with another process inserting
    the same row (a dataset, an experiment tag) into the tracking store.

    The store checks for the row, then inserts it; two workers doing so together make one fail
    with a unique-constraint violation ("UNIQUE constraint failed" from SQLite, "duplicate key
    value violates unique constraint" from PostgreSQL behind a tracking server). Once the winner
    has committed, the same call finds the row and succeeds."""
    for attempt in range(_RACE_ATTEMPTS):
        try:
            return write(*args, **kwargs)
        except mlflow.exceptions.MlflowException as error:
            if "unique constraint" not in str(error).lower() or attempt == _RACE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def log_params(params: Mapping[str, Any], run_id: str | None = None) -> None:
    """Log parameters on the active run (or run ``run_id``); None becomes "" so every run has every column,
    and a credential in a value (a storage URL's password) is masked.

    Under ``mlflow run`` the launcher has already logged the entry point's parameters as the user
    typed them, and MLflow forbids changing a logged value, so those keys keep the launcher's value.
    """
    if run_id is None and (run := mlflow.active_run()) is not None:
        run_id = run.info.run_id
    already = mlflow.get_run(run_id).data.params if run_id is not None else {}
    new = {k: "" if v is None else redact(v) for k, v in params.items() if k not in already}
    if run_id is None:
        mlflow.log_params(new)
    elif new:
        MlflowClient().log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in new.items()])


def shared_run(experiment: str, identity: Mapping[str, str], run_name: str,
               tags: Mapping[str, str] | None = None, launcher: str | None = None) -> tuple[str, bool]:
    """The run that several processes (or a resumed job) share, and whether this call created it:
    the oldest run of ``experiment`` carrying every ``identity`` tag, created with ``identity``
    and ``tags`` if there is none. Call it under the workers' lock for that run
    (:mod:`scadapt.infra.coordination`), so that only one process creates it.

    Under ``mlflow run`` the launcher's run (``launcher``, or ``MLFLOW_RUN_ID``, consumed here so
    nested runs do not resume it) becomes the shared run if none exists yet; otherwise the launcher
    is tagged ``scadapt.joined_run`` with the shared run's id and ended, and its experiment is used.
    """
    client = MlflowClient()
    launcher = launcher or os.environ.pop("MLFLOW_RUN_ID", None)
    if launcher:
        experiment_id = client.get_run(launcher).info.experiment_id
        mark_model_development(mlflow.set_experiment(experiment_id=experiment_id))
    else:
        experiment_id = ensure_experiment(experiment)
    existing = _runs_tagged(client, experiment_id, identity)
    if existing:
        if launcher:
            client.set_tag(launcher, JOINED_RUN_TAG, existing[0])
            client.set_terminated(launcher)
        return existing[0], False
    own = launcher or client.create_run(experiment_id, run_name=run_name).info.run_id
    for key, value in {**dict(tags or {}), **identity}.items():
        client.set_tag(own, key, redact(value))
    return own, True


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


def check_tracking_store(attempts: int = 3) -> None:
    """Fail with a message, before any work and within seconds, when the MLflow tracking store
    cannot be used: a corrupt or foreign ``mlflow.db``, a server that is down, refuses the login or
    lacks the database.

    A database server is connected to once with a short timeout (a wrong password is never tried
    twice); a tracking server is asked once, without MLflow's retries. Only a SQLite store that
    another process is creating at this moment (locked for a moment) is retried."""
    uri = mlflow.get_tracking_uri()
    for store, what in ((uri, "the MLflow tracking store"), (mlflow.get_registry_uri(), "the MLflow model registry")):
        if is_server_url(store):
            probe(store, what)
    for attempt in range(attempts):
        try:
            with _one_http_attempt():
                MlflowClient().search_experiments(max_results=1)
            return
        except Exception as error:  # sqlalchemy, HTTP and MLflow errors alike: the store is unusable
            if attempt < attempts - 1 and _store_being_created(error):
                time.sleep(1.0 + attempt)
                continue
            detail = " ".join(str(getattr(error, "orig", None) or error).split())[:300]
            hint = ("If it is a SQLite file it may be corrupt or not an MLflow database: move it aside (a new one is "
                    "created) or point MLFLOW_TRACKING_URI at another store." if uri.startswith("sqlite") else
                    "Check that the tracking server runs, that MLFLOW_TRACKING_URI is right and that its user and "
                    "password (or MLFLOW_TRACKING_TOKEN) are accepted.")
            raise ScadaptError(f"The MLflow tracking store {uri} cannot be used ({type(error).__name__}: {detail}). "
                               f"{hint}") from None


def _store_being_created(error: BaseException) -> bool:
    """What a worker meets while another creates the same new store: a locked SQLite file, a
    table or row another process is inserting."""
    text = str(error).lower()
    return any(word in text for word in ("locked", "unique constraint", "already exists", "duplicate key"))


def _one_http_attempt():
    """MLflow's HTTP client without retries and with a short timeout, for the store check only
    (by default it retries for minutes before a server that is down is reported)."""
    return temporary_environment({MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: "0",
                                  MLFLOW_HTTP_REQUEST_TIMEOUT.name: str(CONNECT_TIMEOUT_SEC)})


class RetryNotice(logging.Filter):
    """urllib3's warning for every retried request to a tracking server that stopped answering,
    said at most once a minute: a long job keeps going while MLflow retries with back-off."""

    INTERVAL_SEC = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Retrying"):
            return True
        now = time.monotonic()
        if now - self.last < self.INTERVAL_SEC:
            return False
        self.last = now
        record.msg, record.args = ("The tracking server does not answer; MLflow retries with back-off and the job goes "
                                   "on when it is back (said once a minute). Last attempt: %s", (record.getMessage(),))
        return True


def announce_server_retries() -> None:
    """Install :class:`RetryNotice` on urllib3's connection-pool logger (once)."""
    pool = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, RetryNotice) for f in pool.filters):
        pool.addFilter(RetryNotice())


def close_orphaned_runs(experiment_id: str, query: str = "") -> list[mlflow.entities.Run]:
    """End as FAILED (tagged ``scadapt.interrupted``) the RUNNING runs matching ``query`` whose
    worker (tag ``scadapt.worker``) was a process on this host that no longer runs, e.g. one
    killed with SIGKILL; return them."""
    from scadapt.tracking.contract import WORKER_TAG
    from scadapt.tracking.workers import is_dead_local_worker

    client = MlflowClient()
    running = search_all_runs([experiment_id], " and ".join(filter(None, [query, "attributes.status = 'RUNNING'"])))
    orphans = [r for r in running if (w := r.data.tags.get(WORKER_TAG)) and is_dead_local_worker(w)]
    for run in orphans:
        client.set_tag(run.info.run_id, INTERRUPTED_TAG, "true")
        client.set_terminated(run.info.run_id, "FAILED")
    return orphans

"""Where Optuna studies live, and recovery of trials whose worker died.

One ``storage`` string chooses the backend:

- a SQLite URL (``sqlite:///optuna.db``, the default): one process at a time, or a few on one host;
- ``journal:PATH`` (or a path ending in ``.journal``/``.log``): Optuna's journal file, for several
  worker processes on one host (file locks, no database);
- a PostgreSQL URL (``postgresql://user:pass@host/db``): workers on several hosts.

Optuna leaves the trial of a killed worker RUNNING forever. Every trial records its worker
(host, process id, process start time); :func:`recover_interrupted` marks the trials of dead
workers on this host FAILED. Database storages also run Optuna's heartbeat: a trial whose worker
has not beaten for the grace period (``SCADAPT_HEARTBEAT_SEC``, default 60 s, times five) is
failed by any other worker, on any host.

The workers' locks (:func:`coordinator`) are kept by the storage's own database (PostgreSQL's
advisory locks) or, on one host, by OS file locks beside the SQLite or journal file. A database server is connected to once with a short timeout before anything
else (:func:`scadapt.infra.databases.probe`): a refused login or a server that is down is reported at
once, and only races between workers creating the same tables are retried.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from scadapt.infra.coordination import Coordinator, coordinator_for
from scadapt.infra.databases import engine_options, is_server_url, probe
from scadapt.infra.errors import ScadaptError
from scadapt.infra.redaction import redact
from scadapt.infra.storage import writable_file
from scadapt.tracking.workers import is_dead_local_worker

DEFAULT_STORAGE = "sqlite:///optuna.db"
HEARTBEAT_ENV, DEFAULT_HEARTBEAT_SEC, GRACE_BEATS = "SCADAPT_HEARTBEAT_SEC", 60, 5
WORKER_ATTR = "scadapt_worker"
_CREATE_ATTEMPTS = 8


def open_storage(url: str | None, on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> BaseStorage:
    """The Optuna storage named by ``url`` (see the module docstring)."""
    url = url or DEFAULT_STORAGE
    journal = _journal_path(url)
    if journal is not None:
        writable_file(os.path.abspath(journal), "the study journal", "--storage journal:PATH")
        return JournalStorage(JournalFileBackend(journal))
    if "://" not in url:
        raise ScadaptError(
            f"Unknown study storage {describe_storage(url)!r}: give a SQLite or database URL "
            "(sqlite:///optuna.db, postgresql://user:password@host/db) or journal:PATH for a journal file."
        )
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        writable_file(os.path.abspath(url.removeprefix("sqlite:///")), "the study database", "--storage sqlite:///PATH")
    if is_server_url(url):
        probe(url, "the study storage")  # one login with a short timeout: a wrong password is never retried
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat
                beat = heartbeat_seconds()
                return RDBStorage(url, engine_kwargs=engine_options(url), heartbeat_interval=beat, grace_period=beat * GRACE_BEATS,
                                  heartbeat_stale_trial_callback=on_stale)
        except ImportError as error:
            raise ScadaptError(f"The study storage {describe_storage(url)} needs a database driver: {error}.") from None
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as error:
            if not _racing_another_creator(error) or attempt == _CREATE_ATTEMPTS - 1:
                raise ScadaptError(
                    f"Cannot open the study storage {describe_storage(url)}: {_first_line(error)}. Check the path or "
                    "URL, that the database is reachable and writable, and that the file is an Optuna database."
                ) from None
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _racing_another_creator(error: BaseException) -> bool:
    """Whether ``error`` is what a worker meets while another creates the same new study database.

    SQLite says "locked"; PostgreSQL, depending on the moment, a unique violation in its catalogue,
    or "relation/type ... already exists" (a ProgrammingError). Once the winner has committed the
    tables, opening the database again works. Nothing else is retried: not a refused login (which
    could lock the account), not a server that is down."""
    if isinstance(error, sqlalchemy.exc.IntegrityError):
        return True
    if isinstance(error, sqlalchemy.exc.OperationalError):  # SQLite: "database is locked", "table ... already exists"
        return "locked" in str(error) or "already exists" in str(error)
    return isinstance(error, sqlalchemy.exc.ProgrammingError) and "already exists" in str(error)


def heartbeat_seconds() -> int:
    """Seconds between a running trial's heartbeats (``SCADAPT_HEARTBEAT_SEC``)."""
    text = os.environ.get(HEARTBEAT_ENV, "")
    try:
        beat = int(text) if text else DEFAULT_HEARTBEAT_SEC
    except ValueError:
        beat = 0
    if beat < 1:
        raise ScadaptError(f"{HEARTBEAT_ENV} must be a whole number of seconds of at least 1, got {text!r}.")
    return beat


def coordinator(url: str | None) -> Coordinator:
    """The workers' locks of the study storage ``url`` (see :mod:`scadapt.infra.coordination`)."""
    url = url or DEFAULT_STORAGE
    open_storage(url)  # a bad URL, path or database is refused with open_storage's message
    journal = _journal_path(url)
    try:
        return coordinator_for(url, os.path.abspath(journal) if journal is not None else None)
    except (ValueError, OSError) as error:
        raise ScadaptError(f"Cannot keep the workers' locks beside the study storage {describe_storage(url)}: "
                           f"{_first_line(error)}.") from None


def _first_line(error: BaseException) -> str:
    return str(getattr(error, "orig", None) or error).splitlines()[0][:300]


def describe_storage(url: str | None) -> str:
    """``url`` with any credential masked, safe to log."""
    return redact(url or DEFAULT_STORAGE)


def _journal_path(url: str) -> str | None:
    if url.startswith("journal:"):
        return url.removeprefix("journal:").removeprefix("//")
    if "://" not in url and url.endswith((".journal", ".log")):
        return url
    return None


def recover_interrupted(study: optuna.Study, storage: BaseStorage) -> list[FrozenTrial]:
    """Mark RUNNING trials whose worker on this host no longer runs as FAILED; return them."""
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if worker is not None and is_dead_local_worker(worker):
            if storage.set_trial_state_values(trial_id(storage, study.study_name, trial.number), TrialState.FAIL):
                recovered.append(trial)
    return recovered


def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of a study (Optuna's public storage API)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)

"""Where Optuna studies live, and recovery of trials whose worker died.

One ``storage`` string chooses the backend:

- a SQLite URL (``sqlite:///optuna.db``, the default): one process at a time, or a few on one host;
- ``journal:PATH`` (or a path ending in ``.journal``/``.log``): Optuna's journal file, for several
  worker processes on one host (file locks, no database);
- any other SQLAlchemy URL (``postgresql://user:pass@host/db``): workers on several hosts.

Optuna leaves the trial of a killed worker RUNNING forever. Every trial records its worker
(host, process id, process start time); :func:`recover_interrupted` marks the trials of dead
workers on this host FAILED. Database storages also run Optuna's heartbeat, which does the same
for workers on other hosts after a grace period.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from scadapt.errors import ScadaptError
from scadapt.tracking.workers import is_dead_local_worker

DEFAULT_STORAGE = "sqlite:///optuna.db"
HEARTBEAT_SEC, GRACE_SEC = 60, 300
WORKER_ATTR = "scadapt_worker"


def open_storage(url: str | None, on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> BaseStorage:
    """The Optuna storage named by ``url`` (see the module docstring)."""
    url = url or DEFAULT_STORAGE
    journal = _journal_path(url)
    if journal is not None:
        os.makedirs(os.path.dirname(os.path.abspath(journal)), exist_ok=True)
        return JournalStorage(JournalFileBackend(journal))
    if "://" not in url:
        raise ScadaptError(
            f"Unknown study storage {describe_storage(url)!r}: give a SQLite or database URL "
            "(sqlite:///optuna.db, postgresql://user:password@host/db) or journal:PATH for a journal file."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_SEC, grace_period=GRACE_SEC,
                              heartbeat_stale_trial_callback=on_stale)
    except ImportError as error:
        raise ScadaptError(f"The study storage {describe_storage(url)} needs a database driver: {error}.") from None


def describe_storage(url: str | None) -> str:
    """``url`` with any password replaced, safe to log."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url or DEFAULT_STORAGE)


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
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                recovered.append(trial)
    return recovered

"""Locks that workers share, kept by the databases themselves.

Workers share nothing but the tracking server and the study storage. Some steps must happen
once however many workers reach them at the same moment: creating a study's parent run,
starting the study's next trial only while its budget has room, marking the best trial, running
one cell of a benchmark. Each is done under a named lock of :func:`coordinator_for` the study
storage:

- a PostgreSQL storage: a session-scoped advisory lock (``pg_try_advisory_lock``) on a connection
  of its own, held for the block. The server releases it when that connection ends: at the end
  of the block, or when the holder's process is killed (its socket closes), or when its machine
  goes silent (the lock's session turns on TCP keepalives: about a minute).
- a SQLite file or a journal file (one host): an OS file lock (``flock``, via ``filelock``) on a
  file in a folder beside it, which the kernel releases when the holder's process ends however
  it ends.

No lock table, expiry, renewal or clock comparison: a lock is held exactly while its holder lives.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import sqlalchemy
from filelock import FileLock, Timeout

from scadapt.infra.databases import dialect, engine_options

log = logging.getLogger(__name__)

POLL_SEC = 0.2  # how often a waiting worker asks again
# the lock's session on the server: a holder whose machine goes silent is dropped after ~60 s
_KEEPALIVE = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


class Coordinator(ABC):
    """Named locks that every worker on the same study storage sees."""

    @abstractmethod
    def hold(self, name: str, wait: bool = True) -> AbstractContextManager[bool]:
        """Hold lock ``name`` for the block. With ``wait`` the block waits for the lock (and yields
        True); without, it yields whether the lock was free."""


class AdvisoryLocks(Coordinator):
    """PostgreSQL's session-scoped advisory locks, one connection per held lock."""

    def __init__(self, url: str):
        # no pool: a lock's connection is closed with the lock, never handed to another block
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **engine_options(url))

    @contextmanager
    def hold(self, name: str, wait: bool = True) -> Iterator[bool]:
        key = _lock_key(name)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for setting, value in _KEEPALIVE.items():
                connection.execute(sqlalchemy.text(f"SET {setting} = {int(value)}"))
            take = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)").bindparams(key=key)
            if not _wait_for(lambda: bool(connection.execute(take).scalar()), name, wait):
                yield False
                return
            try:
                yield True
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)").bindparams(key=key))


class FileLocks(Coordinator):
    """OS file locks in ``folder`` (on one host: beside a SQLite file or a journal)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def hold(self, name: str, wait: bool = True) -> Iterator[bool]:
        lock = FileLock(self.folder / lock_file_name(name), thread_local=False, fallback_to_soft=False,
                        preserve_lock_file=True)

        def take() -> bool:
            try:
                lock.acquire(timeout=0)
                return True
            except Timeout:
                return False

        if not _wait_for(take, name, wait):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()


def _wait_for(take, name: str, wait: bool) -> bool:
    """``take()`` until it returns True (with ``wait``) or once (without); whether it was taken."""
    said = False
    while not take():
        if not wait:
            return False
        if not said:
            log.debug("Waiting for %s, held by another worker.", name)
            said = True
        time.sleep(POLL_SEC)
    return True


def lock_file_name(name: str) -> str:
    """The file of lock ``name``: readable (``lsof`` shows who holds ``cell_...``) and unique."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    return f"{readable}.{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"


def _lock_key(name: str) -> int:
    """A lock name as PostgreSQL's advisory-lock key (a signed 64-bit integer)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_COORDINATORS: dict[str, Coordinator] = {}


def coordinator_for(storage_url: str, journal_path: str | None = None) -> Coordinator:
    """The locks of a study storage: advisory locks in its PostgreSQL database, else file locks
    beside its SQLite file or journal file (an in-memory database: this process's own folder)."""
    key = journal_path or storage_url
    if key not in _COORDINATORS:
        if journal_path:
            _COORDINATORS[key] = FileLocks(Path(f"{journal_path}.locks"))
        elif dialect(storage_url) == "postgresql":
            _COORDINATORS[key] = AdvisoryLocks(storage_url)
        elif storage_url.startswith("sqlite:///") and storage_url != "sqlite:///:memory:":
            _COORDINATORS[key] = FileLocks(Path(f"{Path(storage_url.removeprefix('sqlite:///')).resolve()}.locks"))
        elif storage_url == "sqlite:///:memory:":
            _COORDINATORS[key] = FileLocks(Path(tempfile.mkdtemp(prefix="scadapt-locks-")))
        else:
            raise ValueError(f"workers can share locks through PostgreSQL, a SQLite file or a journal file, "
                             f"not {dialect(storage_url)}")
    return _COORDINATORS[key]

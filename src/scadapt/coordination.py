"""Locks that workers on several machines share through the study database.

Workers share nothing but the tracking server and the study storage. Some steps must happen
once however many workers reach them at the same moment: creating a study's parent run,
starting the study's next trial only while its budget has room, marking the best trial, running
one cell of a benchmark. A :class:`Coordinator` keeps named locks in a table of its own
(``scadapt_locks``) in the same database as the Optuna studies (PostgreSQL, or the SQLite file;
beside a journal file, a SQLite file next to it).

A lock is held for ``ttl`` seconds and renewed by a background thread while its holder runs,
so a lock whose holder was killed (or whose machine went away) expires and another worker takes
it over. Expiry compares wall clocks of different machines: keep them in sync (NTP) and ``ttl``
well above any skew.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy
from sqlalchemy import Column, Float, MetaData, String, Table

from scadapt.databases import engine_options
from scadapt.tracking.workers import worker_id

log = logging.getLogger(__name__)

DEFAULT_TTL = 120.0
_METADATA = MetaData()
_LOCKS = Table(
    "scadapt_locks", _METADATA,
    Column("name", String(512), primary_key=True),
    Column("owner", String(256), nullable=False),
    Column("expires", Float, nullable=False),  # unix time after which another worker may take the lock
)


class Coordinator:
    """Named, expiring locks in the database at ``url`` (a SQLAlchemy URL)."""

    def __init__(self, url: str, ttl: float = DEFAULT_TTL):
        options: dict = {"pool_pre_ping": True, **engine_options(url)}
        if url.startswith("sqlite"):
            options["connect_args"] = {"timeout": 60, "check_same_thread": False}
            if ":memory:" in url:  # one connection, or the renewing thread would see another database
                options["poolclass"] = sqlalchemy.pool.StaticPool
        self.engine = sqlalchemy.create_engine(url, **options)
        self.ttl = ttl
        for attempt in range(5):  # several workers may create the table at the same moment
            try:
                _METADATA.create_all(self.engine, checkfirst=True)
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) \
                    as error:
                racing = not isinstance(error, sqlalchemy.exc.OperationalError) or \
                    "locked" in str(error) or "already exists" in str(error)
                if attempt == 4 or not racing:  # a refused login or a server that is down is not retried
                    raise
                time.sleep(0.2 * (attempt + 1))

    def try_acquire(self, name: str, owner: str) -> bool:
        """Take lock ``name`` for ``owner`` if it is free or expired; True when taken."""
        now = time.time()
        with self.engine.begin() as connection:
            taken = connection.execute(_LOCKS.update().where(_LOCKS.c.name == name, _LOCKS.c.expires < now)
                                       .values(owner=owner, expires=now + self.ttl)).rowcount
            if taken:
                return True
        try:
            with self.engine.begin() as connection:
                connection.execute(_LOCKS.insert().values(name=name, owner=owner, expires=now + self.ttl))
            return True
        except sqlalchemy.exc.IntegrityError:
            return False  # another worker holds it
        except sqlalchemy.exc.OperationalError as error:  # SQLite: "database is locked" under contention
            if "locked" in str(error):
                return False
            raise

    def renew(self, name: str, owner: str) -> bool:
        """Push the lock's expiry forward; False if ``owner`` no longer holds it."""
        with self.engine.begin() as connection:
            return bool(connection.execute(_LOCKS.update().where(_LOCKS.c.name == name, _LOCKS.c.owner == owner)
                                           .values(expires=time.time() + self.ttl)).rowcount)

    def release(self, name: str, owner: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(_LOCKS.delete().where(_LOCKS.c.name == name, _LOCKS.c.owner == owner))

    @contextmanager
    def hold(self, name: str, wait: bool = True, poll: float = 0.5) -> Iterator[bool]:
        """Hold lock ``name`` for the block, renewed while it runs. With ``wait`` the block waits
        for the lock (and yields True); without, it yields whether the lock was free."""
        owner = f"{worker_id()}:{uuid.uuid4().hex[:8]}"
        said = False
        while not self.try_acquire(name, owner):
            if not wait:
                yield False
                return
            if not said:
                log.debug("Waiting for %s, held by another worker.", name)
                said = True
            time.sleep(poll)
        stop = threading.Event()
        renewer = threading.Thread(target=self._keep, args=(name, owner, stop), daemon=True,
                                   name=f"scadapt-lock-{name[:40]}")
        renewer.start()
        try:
            yield True
        finally:
            stop.set()
            renewer.join()
            self.release(name, owner)

    def _keep(self, name: str, owner: str, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 4):
            try:
                if not self.renew(name, owner):
                    log.warning("Lost the lock %s (it expired); another worker may now do the same work.", name)
                    return
            except sqlalchemy.exc.SQLAlchemyError as error:  # a blip of the database: try again next round
                log.warning("Could not renew the lock %s: %s", name, str(error).splitlines()[0][:200])


_COORDINATORS: dict[str, Coordinator] = {}


def coordinator_for(storage_url: str, journal_path: str | None = None) -> Coordinator:
    """The coordinator next to a study storage: in its database, or beside its journal file."""
    url = f"sqlite:///{Path(journal_path).resolve()}.locks.db" if journal_path else storage_url
    if url not in _COORDINATORS:
        _COORDINATORS[url] = Coordinator(url)
    return _COORDINATORS[url]

"""The workers' locks: one holder at a time, waiters queue, and a holder that is killed loses its
lock at once, whether the locks live in PostgreSQL (advisory locks) or beside a SQLite file (file
locks). No expiry: a lock held for longer than any timeout stays held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from servers import create_database, postgres_bin, postgres_cluster

from scadapt.infra.coordination import AdvisoryLocks, FileLocks, coordinator_for

HOLDER = """
import sys, time
from scadapt.infra.coordination import coordinator_for
with coordinator_for(sys.argv[1]).hold(sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def postgres():
    if postgres_bin() is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with postgres_cluster() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return create_database(request.getfixturevalue("postgres"), f"locks_{abs(hash(str(tmp_path))) % 10**8}")


def test_each_storage_gets_the_locks_its_database_keeps(tmp_path, postgres):
    assert isinstance(coordinator_for(f"sqlite:///{tmp_path / 'a.db'}"), FileLocks)
    assert isinstance(coordinator_for("sqlite:///:memory:"), FileLocks)
    assert isinstance(coordinator_for("ignored", str(tmp_path / "studies.journal")), FileLocks)
    assert isinstance(coordinator_for(create_database(postgres, "kinds")), AdvisoryLocks)


def test_a_lock_has_one_holder_and_is_free_again_after_the_block(storage):
    board = coordinator_for(storage)
    with board.hold("cell:a", wait=False) as first:
        assert first
        taken = []
        other = threading.Thread(target=lambda: taken.append(_try(board, "cell:a")))
        other.start()
        other.join()
        assert taken == [False]  # held (by another thread here: each hold is its own holder)
        assert _try(board, "cell:b")  # another name is another lock
    assert _try(board, "cell:a")


def test_waiters_queue_and_a_long_hold_never_expires(storage):
    board = coordinator_for(storage)
    order = []

    def second() -> None:
        with board.hold("study-slots:s"):
            order.append("second")

    with board.hold("study-slots:s"):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(2.0)
        order.append("first")
    waiter.join(timeout=10)
    assert order == ["first", "second"]


@pytest.mark.integration
def test_a_killed_holders_lock_is_taken_by_another_worker_within_seconds(storage, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, storage, "cell:x"], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path)
    try:
        assert holder.stdout.readline().strip() == "held"
        board = coordinator_for(storage)
        assert not _try(board, "cell:x")
        holder.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        holder.wait(10)
        while not _try(board, "cell:x"):
            assert time.monotonic() - killed < 5, "the dead holder's lock was not released within 5 s"
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()


def _try(board, name: str) -> bool:
    with board.hold(name, wait=False) as taken:
        return taken

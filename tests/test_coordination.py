"""The workers' locks: one holder at a time, renewed while held, expired when the holder died."""

from __future__ import annotations

import threading
import time

from scadapt.coordination import Coordinator


def test_a_lock_has_one_holder_and_a_dead_holders_lock_expires(tmp_path):
    board = Coordinator(f"sqlite:///{tmp_path / 'locks.db'}", ttl=1.0)
    assert board.try_acquire("cell:a", "dead-worker")  # taken, then never renewed nor released
    assert not board.try_acquire("cell:a", "alive-worker")
    with board.hold("cell:a", wait=False) as claimed:
        assert not claimed
    time.sleep(1.2)
    with board.hold("cell:a", wait=False) as claimed:  # expired: another worker takes it over
        assert claimed
        assert not board.try_acquire("cell:a", "third-worker")
    assert board.try_acquire("cell:a", "third-worker")  # released at the end of the block


def test_a_held_lock_is_renewed_past_its_ttl_and_waiters_queue(tmp_path):
    board = Coordinator(f"sqlite:///{tmp_path / 'locks.db'}", ttl=0.8)
    order = []

    def second() -> None:
        with board.hold("study-slots:s"):
            order.append("second")

    with board.hold("study-slots:s"):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(2.0)  # well past the ttl: the renewing thread keeps the lock
        order.append("first")
    waiter.join(timeout=10)
    assert order == ["first", "second"]

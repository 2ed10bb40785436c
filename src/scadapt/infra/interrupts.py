"""Ctrl-C at a safe point: never in the middle of a database transaction.

Python raises ``KeyboardInterrupt`` between any two bytecodes. Raised inside SQLAlchemy (an MLflow or
Optuna write), it can leave a SQLite connection holding the write lock, and the run can then not be
ended as KILLED ("database is locked"). While the main thread is inside a store, the interrupt is held
back and delivered again a moment later, once the transaction is over.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: Modules whose code may hold a database transaction open.
STORE_MODULES = ("sqlalchemy", "sqlite3", "mlflow.store", "optuna.storages", "alembic")
RETRY_SECONDS = 0.05


def inside_store(frame: FrameType | None) -> bool:
    """Whether any frame on the stack belongs to a store module."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if inside_store(frame):
        threading.Timer(RETRY_SECONDS, os.kill, (os.getpid(), signal.SIGINT)).start()
        return
    raise KeyboardInterrupt


@contextmanager
def interrupts_at_safe_points() -> Iterator[None]:
    """Within the block, SIGINT raises ``KeyboardInterrupt`` only outside store transactions (main
    thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

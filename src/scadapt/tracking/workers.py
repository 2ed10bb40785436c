"""Which process does a piece of work, and whether it still runs.

A killed process cannot end its own Optuna trial or MLflow run. Work records its worker
(``host:pid:start-time``) so that a later process on the same host can tell a dead worker's
leftovers from work in progress.
"""

from __future__ import annotations

import socket

import psutil


def worker_id() -> str:
    """This process as ``host:pid:start-time`` (the start time tells a reused pid apart)."""
    process = psutil.Process()
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.3f}"


def is_dead_local_worker(worker: str) -> bool:
    host, pid, started = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return False  # another host's worker: left to the heartbeat (database storages)
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" != started
    except psutil.NoSuchProcess:
        return True

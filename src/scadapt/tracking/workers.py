"""Which process does a piece of work, and whether it still runs.

A killed process cannot end its own Optuna trial or MLflow run. Work records its worker
(``host:pid:start-time``) so that a later process on the same host can tell a dead worker's
leftovers from work in progress.
"""

from __future__ import annotations

import os
import socket

import psutil

WORKER_NAME_ENV = "SCADAPT_WORKER_NAME"


def host_name() -> str:
    """This machine's name in worker ids: ``$SCADAPT_WORKER_NAME`` (e.g. one name per GPU node,
    shown in the MLflow UI and the trials), else the host name."""
    return os.environ.get(WORKER_NAME_ENV) or socket.gethostname()


def worker_id() -> str:
    """This process as ``host:pid:start-time`` (the start time tells a reused pid apart)."""
    process = psutil.Process()
    return f"{host_name()}:{process.pid}:{process.create_time():.3f}"


def is_dead_local_worker(worker: str) -> bool:
    host, pid, started = worker.rsplit(":", 2)
    if host != host_name():
        return False  # another host's worker: left to the heartbeat (database storages)
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" != started
    except psutil.NoSuchProcess:
        return True

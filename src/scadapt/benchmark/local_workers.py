"""Helper worker processes on this machine: the matrix shared out over its CPU cores.

On CPU the backbones trained here are small enough that one process cannot keep two cores busy
(torch's intra-op threads help little on ``[32, 200, 64]`` tensors, and logging, figures and
scoring run on one core anyway). Several single-threaded processes that split the matrix through
the same locks as workers on several machines (:mod:`scadapt.infra.coordination`) finish it sooner.
The process that was started stays in charge: it starts the helpers once the benchmark's parent
run exists, takes cells itself, waits for them, then merges their timing and writes the report.

Helpers get the benchmark's settings as a JSON file (never code), the tracking URI of the
process that started them and their share of the cores; a helper runs cells only.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from scadapt.benchmark.config import BenchmarkConfig
from scadapt.tracking.runs import temporary_environment

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 4  # each holds its own copy of the data and backbone
AUTO_MEMORY_PER_WORKER = 4 * 2**30  # available memory per worker for more than one to start by themselves
STOP_WAIT_SEC = 30.0  # after an interrupt, how long a helper may take to close its runs
OWN_INTERRUPT_SEC = 3.0  # how long a helper may take to end on a Ctrl-C that reached it directly
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# what a helper process runs: scadapt.benchmark.helper.main, with an interrupt answered by one line
# even while its modules load (the package's imports come before any code of the helper module)
HELPER_BOOT = ("import os, sys\ntry:\n    from scadapt.benchmark.helper import main\n    sys.exit(main(sys.argv[1]))\n"
               "except KeyboardInterrupt:\n    sys.stderr.write(f'helper {os.getpid()}: interrupted; its unfinished cell "
               "runs again when the benchmark is started again.\\n')\n    sys.exit(130)\n")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_memory() -> int:
    """Bytes of memory this machine can still give without swapping."""
    import psutil

    return int(psutil.virtual_memory().available)


def plan_workers(requested: int, device: str, storage: str | None, n_cells: int) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` for a matrix of ``n_cells`` unfinished cells.

    ``requested`` 0 is automatic: one worker per core up to :data:`MAX_AUTO_WORKERS` on CPU, no
    more than there are cells or than :data:`AUTO_MEMORY_PER_WORKER` fits in the available memory
    as many times, and one on a GPU (the workers would share it). An in-memory study storage cannot
    be shared, so it always gets one worker."""
    cores = usable_cores()
    gpu = device.startswith("cuda") or (device == "auto" and _cuda_available())
    if storage == "sqlite:///:memory:" or n_cells < 2:
        workers = 1
    elif requested > 0:
        workers = min(requested, n_cells)
    elif gpu:
        workers = 1
    else:
        workers = max(1, min(cores, MAX_AUTO_WORKERS, n_cells, available_memory() // AUTO_MEMORY_PER_WORKER))
    return workers, max(1, cores // workers)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def share_env(workers: int, threads: int) -> dict[str, str]:
    """The environment of one of ``workers`` workers: its threads, and its share of the memory
    budget of training and of the memory the frozen-layer cache may hold (both budgets are the
    machine's, not each process's)."""
    from scadapt.fitting.frozen_layers import BUDGET_ENV, budget_bytes
    from scadapt.fitting.memory import SHARE_ENV

    return {**dict.fromkeys(THREAD_ENV, str(threads)), BUDGET_ENV: f"{budget_bytes() / 2**20 / workers:g}",
            SHARE_ENV: str(workers)}


@contextmanager
def every_core() -> Iterator[None]:
    """Inside the block torch may use every core: for work the other workers wait for (pretraining
    the demo backbone), which would otherwise run on this worker's share alone."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(before, usable_cores()))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def worker_share(workers: int, threads: int) -> Iterator[None]:
    """Inside the block this process is one of ``workers`` workers: torch and BLAS use at most
    ``threads`` threads, and training and the frozen-layer cache their share of the memory budgets."""
    import torch
    from threadpoolctl import threadpool_limits

    from scadapt.fitting.frozen_layers import BUDGET_ENV
    from scadapt.fitting.memory import SHARE_ENV

    before = torch.get_num_threads()
    shared = share_env(workers, threads)
    torch.set_num_threads(threads)
    try:
        with temporary_environment({name: shared[name] for name in (BUDGET_ENV, SHARE_ENV)}), \
                threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)


def helper_settings(cfg: BenchmarkConfig) -> dict:
    """The settings a helper worker runs with, as plain values for its JSON spec (it reads them
    back with ``BenchmarkConfig(**settings)``): the launcher's, one worker, no progress bars."""
    return asdict(replace(cfg, workers=1, progress=False))


class LocalWorkers:
    """``n`` helper processes running the cells of ``cfg``'s matrix beside this one, under the
    benchmark's parent run ``parent_run_id``."""

    def __init__(self, cfg: BenchmarkConfig, parent_run_id: str, n: int, threads: int):
        import mlflow

        self.folder = Path(tempfile.mkdtemp(prefix="scadapt-workers-"))
        self.processes: list[subprocess.Popen] = []
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), **share_env(n + 1, threads)}
        env.pop("MLFLOW_RUN_ID", None)  # the launcher's run belongs to this process
        for i in range(n):
            spec = self.folder / f"helper{i}.json"
            spec.write_text(json.dumps({"config": helper_settings(cfg), "threads": threads, "parent_run_id": parent_run_id,
                                        "timing": str(self.folder / f"timing{i}.csv")}))
            self.processes.append(subprocess.Popen([sys.executable, "-c", HELPER_BOOT, str(spec)], env=env))
        log.info("Started %d helper worker process%s (%d torch thread%s each) beside this one, to share the cells.",
                 n, "" if n == 1 else "es", threads, "" if threads == 1 else "s")

    def finish(self) -> pd.DataFrame:
        """Wait for the helpers (the matrix is complete, so they are ending) and return their timing."""
        tables = []
        for i, process in enumerate(self.processes):
            code = process.wait()
            if code != 0:  # its claims ended with it, and its cells ran here
                log.warning("Helper worker %d (pid %d) ended with exit code %d; the cells it left ran in this "
                            "process. Its messages are above.", i, process.pid, code)
            path = self.folder / f"timing{i}.csv"
            if path.is_file():
                tables.append(pd.read_csv(path))
        self._clean()
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()

    def stop(self) -> None:
        """Interrupt the helpers (they close their runs as KILLED, as after Ctrl-C), then end them.
        After Ctrl-C in a terminal they have the interrupt already: they get a moment to act on it
        before a second one could cut their cleanup short."""
        deadline = time.monotonic() + OWN_INTERRUPT_SEC
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(STOP_WAIT_SEC)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._clean()

    def _clean(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()


TIMING_COLUMNS = ["dataset", "strategy", "cells_run", "wall_sec", "tuning_sec", "cell_fit_sec"]


def merge_timing(*tables: pd.DataFrame) -> pd.DataFrame:
    """Sum the timing rows of several workers per dataset and strategy (worker-seconds); with the
    columns, rows or not (every worker here may have found its cells taken by other hosts')."""
    tables = [t for t in tables if not t.empty]
    if len(tables) < 2:
        return tables[0] if tables else pd.DataFrame(columns=TIMING_COLUMNS)
    merged = pd.concat(tables, ignore_index=True)
    return merged.groupby(["dataset", "strategy"], sort=False, as_index=False).sum()

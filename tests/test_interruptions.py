"""Interrupted work: Ctrl-C is one line and the run ends KILLED; a SIGKILLed run is closed by the next
start; workers creating one new SQLite study store at the same moment all get it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.integration  # kill and Ctrl-C tests: real processes and signals

TINY_PRETRAIN = ["pretrain", "--data", "pancreas_small", "--d-model", "16", "--nlayers", "1", "--nhead", "2",
                 "--d-hid", "16", "--max-seq-len", "64", "--min-genes", "50", "--batch-size", "8"]


def _open_files(process) -> list:
    import psutil

    try:
        return process.open_files()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _start(*args: str) -> subprocess.Popen:
    # create the test's tracking store first: this process polls it while the worker starts, and
    # two processes creating a new SQLite MLflow store at the same moment race in its migrations
    mlflow.search_experiments()
    return subprocess.Popen([sys.executable, "-m", "scadapt.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_running_run(process: subprocess.Popen, timeout: float = 120) -> mlflow.entities.Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="attributes.status = 'RUNNING'")
        if runs:
            time.sleep(2)  # well inside the epoch loop
            return runs[0]
        time.sleep(0.5)
    raise AssertionError("the run never started")


def test_ctrl_c_is_one_line_and_the_run_ends_killed(tmp_path):
    process = _start(*TINY_PRETRAIN, "--epochs", "500", "--output-dir", str(tmp_path / "bb"))
    run = _wait_for_running_run(process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.count("scadapt: interrupted") == 1
    assert "run the same command again to continue" in err
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"


def test_a_sigkilled_pretraining_run_is_closed_on_the_next_start(tmp_path):
    process = _start(*TINY_PRETRAIN, "--epochs", "500", "--output-dir", str(tmp_path / "bb"))
    run = _wait_for_running_run(process)
    process.kill()
    process.communicate(timeout=60)
    assert mlflow.get_run(run.info.run_id).info.status == "RUNNING"  # nobody could close it
    again = subprocess.run([sys.executable, "-m", "scadapt.cli", *TINY_PRETRAIN, "--epochs", "1", "--output-dir",
                            str(tmp_path / "bb")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"Closed pretraining run {run.info.run_id}" in again.stderr
    closed = mlflow.get_run(run.info.run_id)
    assert closed.info.status == "FAILED" and closed.data.tags["scadapt.interrupted"] == "true"


def test_workers_creating_a_new_sqlite_study_store_at_once_all_succeed(tmp_path):
    start = time.time() + 6  # every worker has imported optuna by then
    script = ("import sys, time\n"
              "from scadapt.jobs.study_storage import open_storage\n"
              "import optuna\n"
              f"time.sleep(max(0.0, {start} - time.time()))\n"
              "storage = open_storage(sys.argv[1])\n"
              "optuna.create_study(storage=storage, study_name='shared', load_if_exists=True)\n"
              "print('ok')\n")
    url = f"sqlite:///{tmp_path / 'new_optuna.db'}"
    workers = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "OPTUNA_LOGGING": "0"}) for _ in range(4)]
    results = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err[-800:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["ok"] * 4


def test_ctrl_c_inside_a_store_transaction_waits_until_it_is_over():
    from scadapt.infra.interrupts import interrupts_at_safe_points

    store_code = {"__name__": "sqlalchemy.engine.fake", "os": os, "signal": signal, "time": time}
    exec("def transaction():\n"
         "    os.kill(os.getpid(), signal.SIGINT)\n"
         "    end = time.monotonic() + 0.3\n"
         "    while time.monotonic() < end:\n"
         "        pass\n"
         "    return 'committed'\n", store_code)
    finished, interrupted = None, False
    with interrupts_at_safe_points():
        try:
            finished = store_code["transaction"]()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            interrupted = True
    assert finished == "committed" and interrupted


def test_ctrl_c_on_a_benchmark_stops_its_helper_workers_and_leaves_no_run_open(tiny_checkpoint, tmp_path):
    import psutil

    studies = f"sqlite:///{tmp_path / 'optuna.db'}"
    process = _start("benchmark", "--datasets", "pancreas_small", "--strategies", "lora,full,dora,head", "--regimes",
                     "full", "--n-folds", "3", "--folds", "3", "--n-trials", "1", "--epochs", "200", "--checkpoint",
                     str(tiny_checkpoint), "--storage", studies, "--output-dir", str(tmp_path / "out"), "--workers", "2",
                     "--no-promote")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the helper holds a cell of the matrix
        assert process.poll() is None, process.communicate()
        helpers = psutil.Process(process.pid).children()
        if any(Path(f.path).name.startswith("cell_") for h in helpers for f in _open_files(h)):
            break  # it holds the file lock of a cell
        time.sleep(0.3)
    else:
        raise AssertionError("the helper worker never claimed a cell")
    process.send_signal(signal.SIGINT)  # to the command only, as a scheduler would
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "scadapt: interrupted" in err
    assert not any(h.is_running() and h.status() != psutil.STATUS_ZOMBIE for h in helpers)
    left = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="attributes.status = 'RUNNING'")
    assert not left, [r.info.run_name for r in left]

"""Workers that share nothing but a PostgreSQL study storage and an MLflow tracking server (with
proxied artifacts), all real and started here: one study, one benchmark matrix, a dead worker's
trial failed by the heartbeat, and a champion promoted and used on a machine that trained nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from optuna.trial import TrialState
from servers import create_database, mlflow_server, postgres_bin, postgres_cluster
from studies import load_study

# CI installs PostgreSQL (.ci/run): there a missing server fails instead of skipping
pytestmark = [pytest.mark.integration, pytest.mark.skipif(postgres_bin() is None and not os.environ.get("CI"),
                                reason="PostgreSQL is not installed (apt-get install postgresql)")]

SCADAPT = [sys.executable, "-m", "scadapt.cli"]


@pytest.fixture(scope="module")
def postgres():
    with postgres_cluster() as server:
        yield server


@pytest.fixture
def servers(postgres, tmp_path, monkeypatch):
    """A tracking server on a database of its own and an empty study database; the test process
    talks to the tracking server too."""
    name = tmp_path.name.lower().replace("-", "_")[:40]
    tracking_db = create_database(postgres, f"mlflow_{name}")
    studies = create_database(postgres, f"optuna_{name}")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with mlflow_server(tracking_db, artifacts) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url, studies


def worker_env(tmp_path: Path, tracking_uri: str, name: str, **extra: str) -> tuple[dict[str, str], Path]:
    """A worker's environment and working directory: its own cache, told only the tracking URI."""
    home = tmp_path / name
    (home / "cache").mkdir(parents=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "SCADAPT_CACHE": str(home / "cache"), **extra}
    env.pop("MLFLOW_RUN_ID", None)
    return env, home


def start(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(workers: list[subprocess.Popen], timeout: float = 900) -> list[str]:
    outputs = [w.communicate(timeout=timeout)[0] for w in workers]
    failed = "\n\n".join(f"worker {w.pid} (exit {w.returncode}):\n{o[-4000:]}" for w, o in zip(workers, outputs, strict=True)
                         if w.returncode != 0)
    assert not failed, failed
    return outputs


def published_tiny_checkpoint(checkpoint: Path) -> str:
    """Log the test's checkpoint to the tracking server and remove the folder: workers only get the URI."""
    published = subprocess.run([*SCADAPT, "publish-backbone", str(checkpoint)], capture_output=True, text=True,
                               check=True)
    uri = published.stdout.strip().splitlines()[-1]
    assert uri.startswith("runs:/") and uri.endswith("/backbone")
    shutil.rmtree(checkpoint)
    return uri


def tune_command(checkpoint: str, storage: str, n_trials: int, epochs: int = 3) -> list[str]:
    return [*SCADAPT, "tune", "--data", "pancreas_small", "--strategy", "head", "--checkpoint", checkpoint,
            "--max-seq-len", "64", "--min-genes", "50", "--no-umap", "--hparams",
            f"epochs={epochs},batch_size=32,patience={epochs}", "--n-trials", str(n_trials), "--storage", storage,
            "--pruning", "none"]


def test_three_workers_make_one_study_and_a_machine_that_trained_nothing_promotes_and_predicts(
        servers, tiny_checkpoint, tmp_path, pancreas):
    tracking, studies = servers
    checkpoint = published_tiny_checkpoint(tiny_checkpoint)
    command = tune_command(checkpoint, studies, n_trials=5)
    homes = [worker_env(tmp_path, tracking, f"worker{i}") for i in range(3)]
    finish([start(command, env, home) for env, home in homes])  # started together

    study = load_study(studies)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5  # exactly n_trials, none surplus
    settings = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(settings)) == 5  # no worker repeated another's suggestions
    parents = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                 filter_string="tags.`scadapt.study_run` = 'true'")
    candidates = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                    filter_string="tags.`scadapt.candidate` = 'true'")
    assert len(parents) == 1 and len(candidates) == 1
    assert candidates[0].info.run_id == study.best_trial.user_attrs["mlflow_run_id"]
    backbones = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   filter_string="tags.`scadapt.backbone_hash` != ''")
    assert len(backbones) == 1  # logged once; every worker downloaded it into its own cache
    for _, home in homes:
        assert len(list((home / "cache" / "backbones" / "by-hash").iterdir())) == 1

    for _, home in homes:  # the workers' machines are gone: their folders with them
        shutil.rmtree(home)
    env, home = worker_env(tmp_path, tracking, "laptop")
    subprocess.run([*SCADAPT, "promote", "--data", "pancreas_small"], env=env, cwd=home, check=True,
                   capture_output=True, text=True)
    pancreas[:40].write_h5ad(home / "cells.h5ad")
    predicted = subprocess.run([*SCADAPT, "predict", "--model", "models:/scadapt-pancreas_small@champion",
                                "--data", "cells.h5ad", "--output", "annotated.h5ad"], env=env, cwd=home,
                               capture_output=True, text=True)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    import anndata

    annotated = anndata.read_h5ad(home / "annotated.h5ad")
    assert annotated.obs["scadapt_label"].notna().all() and annotated.obsm["X_scadapt"].shape == (40, 32)


def test_a_killed_workers_trial_is_failed_by_the_heartbeat_of_another(servers, tiny_checkpoint, tmp_path):
    tracking, studies = servers
    checkpoint = published_tiny_checkpoint(tiny_checkpoint)
    # the doomed worker names another host, so only the heartbeat can tell that it died
    env, home = worker_env(tmp_path, tracking, "doomed", SCADAPT_WORKER_NAME="gpu-node-7", SCADAPT_HEARTBEAT_SEC="1")
    doomed = start(tune_command(checkpoint, studies, n_trials=2, epochs=60), env, home)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            running = load_study(studies).get_trials(
                states=(TrialState.RUNNING,))
        except KeyError:
            running = []
        if running and "mlflow_run_id" in running[0].user_attrs:
            break
        assert doomed.poll() is None, doomed.communicate()[0][-3000:]
        time.sleep(0.2)
    assert running, "the worker never started a trial"
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()

    env, home = worker_env(tmp_path, tracking, "survivor", SCADAPT_HEARTBEAT_SEC="1")
    # the same setup as the doomed worker's (another would start a study of its own)
    finish([start(tune_command(checkpoint, studies, n_trials=2, epochs=60), env, home)])
    trials = load_study(studies).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["scadapt_worker"].startswith("gpu-node-7:")
    closed = mlflow.get_run(trials[0].user_attrs["mlflow_run_id"])
    assert closed.info.status == "FAILED" and "heartbeat" in closed.data.tags["scadapt.closed_by"]


# lora trains through the backbone: cells long enough that every worker is up before the matrix is done
BENCHMARK = ["--datasets", "pancreas_small", "--strategies", "lora,pca_logreg,logreg", "--regimes", "full",
             "--n-folds", "3", "--folds", "2", "--n-trials", "1", "--epochs", "3", "--no-promote"]


def test_benchmark_workers_split_the_matrix_and_agree_with_one_worker(servers, tiny_checkpoint, tmp_path):
    tracking, studies = servers
    local_copy = tmp_path / "local_ckpt"
    shutil.copytree(tiny_checkpoint, local_copy)
    checkpoint = published_tiny_checkpoint(tiny_checkpoint)
    homes = [worker_env(tmp_path, tracking, f"bench{i}") for i in range(3)]
    command = [*SCADAPT, "benchmark", *BENCHMARK, "--checkpoint", checkpoint, "--storage", studies,
               "--output-dir", "report"]
    finish([start(command, env, home) for env, home in homes])

    cells = mlflow.search_runs(search_all_experiments=True, output_format="list",
                               filter_string="tags.`scadapt.cell` != '' and attributes.status = 'FINISHED'")
    keys = [r.data.tags["scadapt.cell"] for r in cells]
    assert len(keys) == 6 and len(set(keys)) == 6  # every cell exactly once
    assert len({r.data.tags["scadapt.worker"].split(":")[1] for r in cells if "scadapt.worker" in r.data.tags}) >= 2

    # the same matrix by one worker, on a store of its own
    env, home = worker_env(tmp_path, f"sqlite:///{tmp_path / 'alone.db'}", "alone")
    finish([start([*SCADAPT, "benchmark", *BENCHMARK, "--checkpoint", str(local_copy), "--storage",
                   f"sqlite:///{tmp_path / 'alone-optuna.db'}", "--output-dir", "report"], env, home)])
    columns = ["dataset", "strategy", "setting", "replicate", "test_macro_f1", "val_macro_f1", "test_accuracy"]
    alone = pd.read_csv(home / "report" / "tables" / "runs.csv")[columns].sort_values(columns[:4]).reset_index(drop=True)
    for _, worker_home in homes:  # any worker wrote the whole report
        shared = pd.read_csv(worker_home / "report" / "tables" / "runs.csv")[columns]
        shared = shared.sort_values(columns[:4]).reset_index(drop=True)
        pd.testing.assert_frame_equal(shared, alone, atol=1e-6, rtol=0)


def _open_new_storage(url: str, start: float) -> str:
    """Open the study storage at ``url`` at the wall-clock time ``start`` (in a pool process)."""
    from scadapt.jobs.study_storage import open_storage

    time.sleep(max(0.0, start - time.time()))
    try:
        return f"{len(open_storage(url).get_all_studies())} studies"
    except Exception as error:  # noqa: BLE001 - the test shows what each worker met
        return f"{type(error).__name__}: {error}"


def test_workers_opening_a_new_study_database_at_once_all_get_it(postgres):
    """Workers started together race to create Optuna's tables in an empty database. PostgreSQL
    answers the losers with a unique violation, "relation already exists" or "type already exists"
    depending on the moment; each must retry and get the database the winner made. Starts are
    staggered by a few milliseconds, as real workers' are, since that is what meets every case."""
    import importlib
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(6, initializer=importlib.import_module,
                                                   initargs=("scadapt.jobs.study_storage",)) as pool:
        for round_ in range(15):
            url = create_database(postgres, f"optuna_race_{round_}")
            start, stagger = time.time() + (3.0 if round_ == 0 else 0.2), 0.015 * (round_ % 5)
            opened = pool.starmap(_open_new_storage, [(url, start + i * stagger) for i in range(6)])
            assert opened == ["0 studies"] * 6, opened


def _log_same_dataset(tracking_uri: str, experiment_id: str, name: str, start: float) -> str:
    """Log the dataset ``name`` as an input of a new run at the wall-clock time ``start`` (in a pool process)."""
    import warnings

    from scadapt.tracking.runs import retry_racing_writers

    mlflow.set_tracking_uri(tracking_uri)
    table = pd.DataFrame({"cell": ["a", "b"], "cell_type": ["x", "y"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(table, source="cells.h5ad", name=name, targets="cell_type")
    run_id = mlflow.MlflowClient().create_run(experiment_id).info.run_id
    time.sleep(max(0.0, start - time.time()))
    try:
        with mlflow.start_run(run_id=run_id):
            retry_racing_writers(mlflow.log_input, dataset, context="training")
        return "logged"
    except Exception as error:  # noqa: BLE001 - the test shows what each worker met
        return f"{type(error).__name__}: {str(error)[:300]}"


def test_workers_logging_the_same_new_dataset_at_once_all_log_it(servers):
    """Every matrix cell logs its dataset as a run input; the tracking server inserts a dataset
    the first time it sees it, so workers starting cells together race on that insert and
    PostgreSQL answers the losers with a unique violation. Each must retry and link its run to the
    dataset the winner made (this failed a CI run of the benchmark workers' test)."""
    import importlib
    import multiprocessing

    tracking, _ = servers
    experiment_id = mlflow.create_experiment("dataset_race")
    with multiprocessing.get_context("spawn").Pool(6, initializer=importlib.import_module,
                                                   initargs=("scadapt.tracking.runs",)) as pool:
        for round_ in range(8):
            start, stagger = time.time() + (3.0 if round_ == 0 else 0.3), 0.01 * (round_ % 4)
            logged = pool.starmap(_log_same_dataset, [(tracking, experiment_id, f"cells_{round_}", start + i * stagger)
                                                      for i in range(6)])
            assert logged == ["logged"] * 6, logged
    runs = mlflow.search_runs([experiment_id], output_format="list")
    assert sorted(len(run.inputs.dataset_inputs) for run in runs) == [1] * 48
    assert {run.inputs.dataset_inputs[0].dataset.name for run in runs} == {f"cells_{r}" for r in range(8)}

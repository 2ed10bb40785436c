"""``tune``: the study as a parent run with a child run per trial, pruning, joining and resuming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from conftest import REPO
from optuna.trial import TrialState
from studies import load_study

from scadapt.infra.errors import ScadaptError
from scadapt.jobs import TuneJob, tune

FAST = {"epochs": 3, "batch_size": 32}


def _job(checkpoint, **overrides) -> TuneJob:
    settings = dict(data="pancreas_small", strategy="head", checkpoint=str(checkpoint), hparams=FAST, n_trials=3,
                    storage="sqlite:///optuna.db", max_seq_len=64, min_genes=50, progress=False, umap=False)
    settings.update(overrides)
    return TuneJob(**settings)


def _children(parent_run_id: str):
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def test_study_is_a_parent_run_with_a_child_per_trial_and_resumes_its_budget(tiny_checkpoint):
    result = tune(_job(tiny_checkpoint, pruning="none"))
    parent = mlflow.get_run(result.parent_run_id)
    children = _children(result.parent_run_id)
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert parent.data.tags["scadapt.best_run_id"] == result.best_run_id
    assert {f"best.{k}" for k in result.best_params} <= set(parent.data.tags)
    assert parent.data.params["epochs"] == "3" and "lr" not in parent.data.params  # fixed vs searched
    best = mlflow.get_run(result.best_run_id)
    assert best.data.tags["scadapt.candidate"] == "true"
    assert parent.data.metrics["test_macro_f1"] == best.data.metrics["test_macro_f1"]
    assert parent.data.metrics["val_macro_f1"] == max(c.data.metrics["val_macro_f1"] for c in children)
    # test cells are scored for the best trial only
    assert [("test_macro_f1" in c.data.metrics) for c in children].count(True) == 1
    for child in children:
        assert {"lr", "weight_decay", "head_dropout", "data.name", "split.name"} <= set(child.data.params)

    again = tune(_job(tiny_checkpoint, pruning="none"))  # the budget is already spent: no new trial
    assert len(_children(again.parent_run_id)) == 3 and again.parent_run_id == result.parent_run_id
    more = tune(_job(tiny_checkpoint, n_trials=5, pruning="none"))
    assert more.parent_run_id == result.parent_run_id and len(_children(result.parent_run_id)) == 5
    assert more.trial_states == {"complete": 5}


def test_pruned_trials_end_killed_and_a_study_without_a_finished_trial_says_so(tiny_checkpoint):
    job = _job(tiny_checkpoint, n_trials=2, pruning="threshold", prune_below=1.01, pruning_warmup_epochs=0)
    with pytest.raises(ScadaptError, match="No trial of study .* completed \\(2 pruned\\)"):
        tune(job)
    children = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="tags.`scadapt.trial` != ''")
    assert len(children) == 2 and all(c.info.status == "KILLED" for c in children)
    assert all(c.data.tags["scadapt.pruned_after_epoch"] == "0" for c in children)


def test_bad_tuning_settings_are_refused():
    with pytest.raises(ScadaptError, match="pruning must be one of"):
        TuneJob(pruning="hyperband")
    with pytest.raises(ScadaptError, match="Unknown study storage"):
        from scadapt.jobs.study_storage import open_storage

        open_storage("optuna.db")


def _tune_command(checkpoint, storage: str, n_trials: int, epochs: int = 3) -> list[str]:
    return [sys.executable, "-m", "scadapt.cli", "tune", "--data", "pancreas_small", "--strategy", "head",
            "--checkpoint", str(checkpoint), "--max-seq-len", "64", "--min-genes", "50", "--no-umap",
            "--hparams", f"epochs={epochs},batch_size=32,patience={epochs}", "--n-trials", str(n_trials),
            "--storage", storage, "--pruning", "none"]


@pytest.mark.integration
def test_two_workers_on_one_journal_finish_one_study(tiny_checkpoint, tmp_path):
    command = _tune_command(tiny_checkpoint, f"journal:{tmp_path / 'study.journal'}", n_trials=6)
    mlflow.search_experiments()  # create the tracking store's tables first: two new processes would race
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    failed = "\n\n".join(f"worker {w.pid} (exit {w.returncode}):\n{o[-4000:]}" for w, o in zip(workers, outputs, strict=True)
                         if w.returncode != 0)
    assert not failed, failed  # a string: pytest prints it whole
    study = load_study(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(6))  # exactly n_trials: no worker starts a trial the budget has no room for
    assert all(t.state == TrialState.COMPLETE for t in trials)
    run_ids = [t.user_attrs["mlflow_run_id"] for t in trials]
    assert len(set(run_ids)) == len(trials)
    parents = {mlflow.get_run(r).data.tags["mlflow.parentRunId"] for r in run_ids}
    assert len(parents) == 1  # one study, one parent run, one experiment
    experiments = {mlflow.get_run(r).info.experiment_id for r in [*run_ids, *parents]}
    assert experiments == {mlflow.get_experiment_by_name("scadapt-pancreas_small").experiment_id}
    assert {w.split(":")[1] for w in (t.user_attrs["scadapt_worker"] for t in trials)} == {str(w.pid) for w in workers}


@pytest.mark.integration
def test_a_killed_study_resumes_with_the_interrupted_trial_failed(tiny_checkpoint, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.storages.RDBStorage(storage)  # both stores exist before this process polls them while the worker runs
    mlflow.search_experiments()
    worker = subprocess.Popen(_tune_command(tiny_checkpoint, storage, n_trials=2, epochs=60),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.3)
        try:
            running = [t for t in load_study(storage).get_trials()
                       if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
        except KeyError:  # the study does not exist yet
            continue
    assert running, "the worker never started a trial"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    interrupted_run = running[0].user_attrs["mlflow_run_id"]
    assert mlflow.get_run(interrupted_run).info.status == "RUNNING"

    # the same setup as the killed worker's (another one would start a study of its own)
    result = tune(_job(tiny_checkpoint, storage=storage, n_trials=2,
                       hparams={"epochs": 60, "batch_size": 32, "patience": 60}, pruning="none"))
    trials = load_study(storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    closed = mlflow.get_run(interrupted_run)
    assert closed.info.status == "FAILED" and closed.data.tags["scadapt.interrupted"] == "true"
    assert result.trial_states == {"fail": 1, "complete": 2}


@pytest.mark.integration
def test_mlflow_project_tune_entry_point_makes_the_launcher_run_the_study(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    submitted = mlflow.projects.run(
        str(REPO), entry_point="tune", env_manager="local", synchronous=True,
        parameters={"strategy": "pca_logreg", "n_trials": 2, "storage": f"sqlite:///{tmp_path / 'optuna.db'}"},
    )
    parent = mlflow.get_run(submitted.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["scadapt.study_run"] == "true"
    assert parent.data.params["n_trials"] == "2" and "test_macro_f1" in parent.data.metrics
    children = _children(submitted.run_id)
    assert len(children) == 2 and {c.info.experiment_id for c in children} == {parent.info.experiment_id}
    assert "best.n_components" in parent.data.tags


def test_a_study_starts_from_the_defaults_and_keeps_the_first_of_equal_trials(tmp_path):
    """Where validation cannot tell trials apart (held out by technology, every trial scores near 1.0
    on the training technologies' cells), the search must not swap a strategy's defaults for a
    random draw: trial 0 is the defaults, and of trials with the same validation score the first is
    the best, whatever order the database returns them in."""
    from optuna.distributions import FloatDistribution

    from scadapt.jobs.study import _best_trial
    from scadapt.strategies.hyperparameters import default_trial
    from scadapt.strategies.logreg import LogRegConfig

    result = tune(_job(None, strategy="logreg", hparams={}, n_trials=2))
    study = optuna.load_study(study_name=result.study_name, storage="sqlite:///optuna.db")
    assert study.trials[0].params == {"C": LogRegConfig().C}
    assert default_trial(LogRegConfig, {**LogRegConfig().to_params(), "C": 0.5}, fixed={"C": 0.5}) == {}

    tied = optuna.create_study(direction="maximize")
    for value, c in ((0.9, 1.0), (1.0, 2.0), (1.0, 3.0)):
        tied.add_trial(optuna.trial.create_trial(value=value, params={"C": c},
                                                 distributions={"C": FloatDistribution(0.1, 10)}))
    trials = tied.get_trials()
    assert _best_trial(trials[::-1]).number == 1

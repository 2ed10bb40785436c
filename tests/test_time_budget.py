"""An answer within minutes: the time budget (fits end at the next epoch, studies and pretraining
stop, what is cut short is named), cheapest strategies first with a first answer and a provisional
champion before any backbone work, and no work repeated on wide data."""

from __future__ import annotations

import logging
import time

import mlflow
import pytest
from mlflow import MlflowClient
from synthetic import synthetic_counts  # tools/synthetic.py

from scadapt.benchmark import cells as benchmark_cells
from scadapt.benchmark.budget import MIN_STUDY_SEC, TimeBudget
from scadapt.data.options import DataOptions
from scadapt.infra.errors import BudgetSpent, ScadaptError
from scadapt.jobs import demo_backbone, tune
from scadapt.jobs import pretrain as pretrain_module
from scadapt.jobs.config import PretrainConfig, TrainJob, TuneJob
from scadapt.jobs.context import prepare
from scadapt.jobs.fit import fit_strategy
from scadapt.pipeline import pipeline_config, run_pipeline
from scadapt.strategies import get_strategy, run_order
from scadapt.tracking.contract import FIRST_ANSWER_ARTIFACT, STRATEGY_TAG

TINY_PRETRAINING = dict(data=("pancreas_small",), d_model=32, nlayers=2, nhead=4, d_hid=48, max_seq_len=128,
                        batch_size=32, lr=3e-3, warmup_steps=5, min_genes=50)


def test_a_fit_past_the_deadline_ends_at_its_next_epoch_with_its_best_epoch():
    ctx = prepare(TrainJob(data="pancreas_small", strategy="mlp"))
    config = get_strategy("mlp").config_class.from_params({"epochs": 6, "patience": 6})
    ctx.deadline = time.time()  # already passed: one epoch, then stop
    outcome = fit_strategy(ctx, ctx.method.with_config(config), progress=False)
    assert len(outcome.fit.history) == 1 and outcome.fit.stopped_early
    ctx.deadline = None
    assert len(fit_strategy(ctx, ctx.method.with_config(config), progress=False).fit.history) > 1


def test_a_study_stops_at_the_deadline_and_says_what_ended_it(tmp_path):
    job = dict(data="pancreas_small", strategy="pca_logreg", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
               progress=False, umap=False)
    with pytest.raises(BudgetSpent, match="before any of its trials completed"):
        tune(TuneJob(**job, n_trials=3, deadline=time.time() - 1))
    assert tune(TuneJob(**job, n_trials=2, deadline=time.time() + 3600)).ended_by == "n_trials"


def test_pretraining_stops_at_its_deadline_and_the_next_run_continues_it(tmp_path, monkeypatch):
    config = PretrainConfig(**TINY_PRETRAINING, epochs=3, output_dir=str(tmp_path / "demo"))
    deadline = time.time() + 1.0
    real_evaluate = pretrain_module._evaluate

    def slow_first_epoch(*args, **kwargs):  # the deadline passes during epoch 1, whatever the machine
        scores = real_evaluate(*args, **kwargs)
        time.sleep(max(0.0, deadline - time.time()))
        return scores

    monkeypatch.setattr(pretrain_module, "_evaluate", slow_first_epoch)
    with pytest.raises(BudgetSpent, match="after 1 of 3 epochs"):
        pretrain_module.pretrain(config, deadline=deadline)
    assert (tmp_path / "demo" / pretrain_module.STATE_FILE).is_file()
    monkeypatch.setattr(pretrain_module, "_evaluate", real_evaluate)
    resumed = pretrain_module.pretrain(config)
    assert mlflow.get_run(resumed.run_id).data.params["resumed_from_epoch"] == "1"
    assert (tmp_path / "demo" / pretrain_module.PRETRAINED_BY_FILE).read_text().strip() == config.fingerprint()
    # a benchmark knows the folder by its pretraining job, before and after it exists
    assert demo_backbone.demo_backbone_identity(config) == f"pretrained:{config.fingerprint()}"


def test_cheap_strategies_answer_first_and_a_cut_pretraining_cuts_the_backbone_ones(tmp_path, monkeypatch):
    deadlines = []

    def pretraining_cut_short(cfg, lock=None, deadline=None):
        deadlines.append(deadline)
        raise BudgetSpent("The time budget stopped the demo backbone's pretraining after 1 of 10 epochs.")

    monkeypatch.setattr(benchmark_cells, "ensure_demo_backbone", pretraining_cut_short)
    started = time.time()
    result = run_pipeline(pipeline_config(
        data="pancreas_small", strategies=("head", "pca_logreg"), n_trials=1, epochs=1, time_budget=30,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False, workers=1))
    assert list(result.summary["strategy"]) == ["pca_logreg"]  # ranked and promoted though head was cut short
    assert list(result.summary["trials_ended_by"]) == ["n_trials"]
    assert result.promotion.strategy == "pca_logreg"
    assert result.cut_short == {"head": "The time budget stopped the demo backbone's pretraining after 1 of 10 epochs."}
    assert "Cut short by the time budget" in result.closing_text() and "head:" in result.closing_text()
    # pretraining got a deadline within the job's budget, leaving time for what follows
    assert len(deadlines) == 1 and started < deadlines[0] < started + 30 * 60
    first = mlflow.artifacts.load_text(f"runs:/{result.benchmark.parent_run_id}/{FIRST_ANSWER_ARTIFACT}")
    assert "pca_logreg" in first and "head" not in first


def test_a_provisional_champion_is_promoted_before_any_backbone_work(tiny_checkpoint, tmp_path):
    result = run_pipeline(pipeline_config(
        data="pancreas_small", strategies=("head", "logreg"), n_trials=1, epochs=1, checkpoint=str(tiny_checkpoint),
        min_genes=50, max_seq_len=64, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False, workers=1))
    client = MlflowClient()
    first = client.get_model_version(result.promotion.model_name, "1")
    assert first.tags[STRATEGY_TAG] == "logreg"  # the first answer, promoted before head ran
    head = result.summary.set_index("strategy").loc["head", "run_id"]
    assert client.get_run(head).info.start_time > first.creation_timestamp
    assert set(result.summary["strategy"]) == {"head", "logreg"}
    assert "trials_ended_by" not in result.summary  # no budget: nothing to say


def test_a_budget_must_be_a_positive_number_of_minutes():
    for bad in (0, -5):
        with pytest.raises(ScadaptError, match="time_budget is a number of minutes above 0"):
            pipeline_config(time_budget=bad)


def test_the_strategies_without_a_backbone_run_first_whatever_the_order_given():
    given = ("full", "lora", "head", "logreg", "pca_logreg")
    # with a budget, cheapest first throughout: as many strategies as can finish within it do
    assert run_order(given, budgeted=True) == ("pca_logreg", "logreg", "head", "lora", "full")
    # without one, the costliest backbone strategies start first, so that workers end together
    assert run_order(given) == ("pca_logreg", "logreg", "full", "lora", "head")


def test_wide_data_fits_fast_and_each_cell_keeps_one_gene_subset(tmp_path, caplog):
    genes = [f"GENE{i}" for i in range(11_000)]
    synthetic_counts(genes, n_cells=400, seed=1).write_h5ad(tmp_path / "wide.h5ad")
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        result = tune(TuneJob(data=str(tmp_path / "wide.h5ad"), reading=DataOptions(label_key="cell_type"), strategy="logreg", n_trials=3,
                              storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False, umap=False))
    assert time.perf_counter() - started < 120  # (seconds per trial; L1 with SAGA took minutes on such data)
    assert result.best_params.get("penalty", "l2") == "l2" and result.metrics["val_macro_f1"] > 0.5
    assert not [r for r in caplog.records if "before converging" in r.getMessage()]
    for strategy in ("head", "lora", "full"):  # a long cell keeps one subset, so frozen layers run once
        assert get_strategy(strategy).config_class().resample_genes is False


def test_a_study_gets_its_cost_share_of_the_time_left_and_at_least_the_floor():
    budget = TimeBudget(time.time() + 600)
    assert budget.share(0.5, 1.0) == pytest.approx(300, abs=2)
    assert budget.share(0.05, 5.0) == pytest.approx(MIN_STUDY_SEC)  # not 6 s: a trial costs seconds of logging
    assert TimeBudget(time.time() + 10).share(0.05, 5.0) == pytest.approx(10, abs=1)  # never more than is left
    assert TimeBudget(None).share(1.0, 1.0) is None and not TimeBudget(None).spent()
    assert TimeBudget(time.time() - 1).spent() and TimeBudget(time.time() - 1).left() == 0


def test_an_interrupted_helper_worker_says_one_line_and_no_traceback(tmp_path):
    """Ctrl-C reaches the helper processes too; one in the middle of loading its modules printed
    Python's KeyboardInterrupt traceback into the terminal."""
    import signal
    import subprocess
    import sys

    from scadapt.benchmark.local_workers import HELPER_BOOT

    helper = subprocess.Popen([sys.executable, "-c", HELPER_BOOT, str(tmp_path / "spec.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # it is importing torch, MLflow and Optuna for seconds
    helper.send_signal(signal.SIGINT)
    _, err = helper.communicate(timeout=60)
    assert helper.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines() == [f"helper {helper.pid}: interrupted; its unfinished cell runs again when the "
                                        "benchmark is started again."]

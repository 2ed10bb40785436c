"""The job's plan: said before any heavy work with an estimate from a timed step on the user's
cells, refreshed as cells finish, logged on the parent run; a time budget below the smallest that
fits is refused before any cell runs; a data warning is said once per job however it is worded."""

from __future__ import annotations

import io
import logging
import re

import mlflow
import pandas as pd
import pytest
import torch

from scadapt.backbone.config import BackboneConfig
from scadapt.backbone.speed import time_cell_passes
from scadapt.benchmark.plan import FINISH_SEC, JobPlan, refuse_small_budget
from scadapt.infra.errors import ScadaptError
from scadapt.infra.notices import one_job, warn_once
from scadapt.jobs.preflight import GeneCoverage
from scadapt.pipeline import pipeline_config, run_pipeline
from scadapt.strategies import get_strategy
from scadapt.strategies.costs import EPOCHS_RUN, Rates, StudyWork
from scadapt.tracking.contract import CELL_TAG, PLAN_ARTIFACT

RATES = Rates(train_cell_sec=0.01, embed_cell_sec=0.003, expression_cell_sec=0.001, trial_overhead_sec=2.0)


def test_the_job_says_its_plan_first_and_refreshes_the_time_left(tiny_checkpoint, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="scadapt")
    result = run_pipeline(pipeline_config(
        data="pancreas_small", strategies=("head", "logreg"), n_trials=2, epochs=1, checkpoint=str(tiny_checkpoint),
        min_genes=50, max_seq_len=64, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False, workers=1))
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("scadapt")]
    plan_at = next(i for i, m in enumerate(messages) if m.startswith("Plan (estimated"))
    first_cell = next(i for i, m in enumerate(messages) if "A new study" in m or "has started its" in m)
    assert plan_at < first_cell  # said before any work
    progress = [m for m in messages if m.startswith("Progress:")]
    assert [m.split(" cells done")[0] for m in progress] == ["Progress: 1 of 2", "Progress: 2 of 2"]
    assert all(re.search(r"about [\d a-z]+ left\.$", m) for m in progress)

    table = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(
        f"runs:/{result.benchmark.parent_run_id}/{PLAN_ARTIFACT}"))).set_index("strategy")
    assert list(table.index) == ["logreg", "head"]  # the order they run in
    assert (table["estimated s"] > 0).all() and (table["trials"] == 2).all()
    assert table.loc["logreg", "tokens/cell"] == "-"  # no backbone, no tokens
    assert 1 < float(table.loc["head", "tokens/cell"]) <= 64  # the cells' genes in the vocabulary, capped


def test_a_budget_too_small_is_refused_before_any_work_with_the_smallest_that_fits(tmp_path):
    options = dict(data="pancreas_small", strategies=("pca_logreg", "logreg"), n_trials=1,
                   storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False, workers=1)
    with pytest.raises(ScadaptError, match="too small for this job") as refused:
        run_pipeline(pipeline_config(time_budget=0.01, **options))
    smallest = float(re.search(r"smallest budget that fits: --time-budget ([\d.]+)", str(refused.value)).group(1))
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert runs and not [r for r in runs if CELL_TAG in r.data.tags]  # the job's parent run only: no cell ran
    result = run_pipeline(pipeline_config(time_budget=smallest, **options))  # the budget it names is enough
    assert set(result.summary["strategy"]) == {"pca_logreg", "logreg"} and not result.cut_short


def _plan(seconds: dict[str, float], backbone: dict[str, bool], trials: int = 1, workers: int = 1,
          pretrain_sec: float = 0.0) -> JobPlan:
    table = pd.DataFrame([{"strategy": key, "trials": trials, "seconds": sec}
                          for key, sec in seconds.items()])
    one_trial = {key: sec / trials for key, sec in seconds.items()}
    return JobPlan(table, seconds, backbone, one_trial, pretrain_sec, workers)


def test_the_time_left_follows_how_long_the_finished_cells_took_against_their_estimates():
    plan = _plan({"a": 10.0, "b": 10.0, "c": 40.0}, {"a": False, "b": False, "c": True}, workers=2)
    assert plan.progress(set(), pretrained=True).endswith("about 45 s left.")  # (10 + 10 + 40) / 2 + 15
    plan.finished("a", 20.0)  # twice its estimate: the other cell without a backbone will be too, not "c"
    assert plan.progress({"a"}, pretrained=True).endswith("about 45 s left.")  # (20 + 40) / 2 + 15
    plan.finished("b", 20.0)
    plan.finished("c", 20.0)  # half its estimate
    assert plan.progress({"a", "b", "c"}, pretrained=True).endswith("about 15 s left.")
    assert "3 of 3 cells done" in plan.progress({"a", "b", "c"}, pretrained=True)


def test_the_smallest_budget_that_fits_passes_and_a_smaller_one_is_refused():
    plan = _plan({"quick": 30.0, "slow": 500.0}, {"quick": False, "slow": True}, trials=3)
    assert plan.minimum_seconds() == pytest.approx(10.0 + FINISH_SEC)  # one trial of the strategy without a backbone
    with pytest.raises(ScadaptError, match=r"smallest budget that fits: --time-budget 1.5 ") as refused:
        refuse_small_budget(plan, 0.5, elapsed=40.0)  # 40 s so far + 25 s: 65 s, rounded up to half a minute
    assert "0.5 min is too small" in str(refused.value)
    refuse_small_budget(plan, 1.5, elapsed=40.0)
    with pytest.raises(ScadaptError, match="--time-budget 1.5 "):
        refuse_small_budget(plan, 1.0, elapsed=40.0)


def test_the_smallest_budget_counts_only_the_work_still_to_do_and_the_time_left_stays_within_the_budget():
    """A rerun whose strategies without a backbone are done was refused: "even the strategies without
    a backbone need about 297 min" (the pending pretraining's estimate); the progress line said
    "about 199 min left" with 10 minutes of budget left."""
    backbone_only = _plan({"slow": 500.0}, {"slow": True}, pretrain_sec=17_000.0)
    assert backbone_only.minimum_seconds() == pytest.approx(FINISH_SEC)
    refuse_small_budget(backbone_only, 4.0, elapsed=5.0)  # pretraining continues where it stopped
    assert backbone_only.progress(set(), pretrained=False, budget_left=600.0).endswith("about 10 min 00 s left.")


def test_a_strategy_estimates_its_study_from_the_rates_its_family_uses():
    work = StudyWork(trials=3, epochs=10, n_train=400, n_eval=200, n_cells=700)
    full, lora = get_strategy("full").estimate_seconds(work, RATES), get_strategy("lora").estimate_seconds(work, RATES)
    per_epoch = 400 * 0.01 + 200 * 0.003
    assert full == pytest.approx(3 * (EPOCHS_RUN * 10 * per_epoch + 2.0))
    assert lora == pytest.approx(3 * (0.5 * EPOCHS_RUN * 10 * per_epoch + 2.0))  # its relative cost of the training
    more_epochs = StudyWork(trials=3, epochs=20, n_train=400, n_eval=200, n_cells=700)
    assert get_strategy("full").estimate_seconds(more_epochs, RATES) > 1.9 * full
    # a frozen backbone embeds every cell once, whatever the trials and epochs
    head = get_strategy("head").estimate_seconds(work, RATES)
    assert head == pytest.approx(700 * 0.003 + 3 * 2.0)
    assert get_strategy("head").estimate_seconds(more_epochs, RATES) == head
    assert get_strategy("logreg").estimate_seconds(work, RATES) == pytest.approx(3 * (400 * 0.001 + 2.0))


def test_timing_a_backbone_step_leaves_the_random_stream_as_it_was():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    passes = time_cell_passes(BackboneConfig(vocab_size=50, d_model=16, nhead=2, d_hid=16, nlayers=1, max_seq_len=32),
                              tokens=100, batch=2)
    assert torch.equal(torch.rand(3), expected)
    assert passes.tokens == 32 and passes.train > 0 and passes.forward > 0  # capped at the backbone's length


def test_a_data_warning_is_said_once_per_job_however_it_is_worded(caplog):
    before = GeneCoverage("cells", 11000, 2701, "the demo backbone in X (to be pretrained on pbmc68k_reduced)")
    after = GeneCoverage("cells", 11000, 2701, "checkpoint X")
    assert before.warning() != after.warning() and before.warning_key == after.warning_key
    log = logging.getLogger("scadapt.test")
    with caplog.at_level(logging.DEBUG, logger="scadapt.test"), one_job():
        for coverage in (before, after, before):
            warn_once(log, coverage.warning(), key=coverage.warning_key)
        warn_once(log, GeneCoverage("other", 100, 10, "X").warning(), key="low gene coverage: other")
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.WARNING]

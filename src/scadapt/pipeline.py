"""The whole job behind ``mlflow run .``: a preset of the benchmark, plus a summary.

The main job is the benchmark (:func:`~scadapt.benchmark.runner.run_benchmark`) on one dataset,
the full-label regime's fold 0 and one study per strategy, whose best trial is that strategy's
result: the same checks before any work, demo backbone (pretrained on first use and reused),
studies, promotion to ``@champion`` and report. On top it prints and logs a summary table.
Running it again finds the finished cells and studies, so an interrupted pipeline continues where
it stopped.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from scadapt.benchmark.budget import TimeBudget
from scadapt.benchmark.config import PIPELINE_DATA, BenchmarkConfig
from scadapt.benchmark.runner import CUT_SHORT_WARNING, BenchmarkResult, run_benchmark
from scadapt.data import resolve_spec
from scadapt.infra.errors import ScadaptError
from scadapt.infra.notices import one_job
from scadapt.infra.options import check_keys, grouped
from scadapt.jobs.demo_backbone import demo_pretraining
from scadapt.jobs.preflight import GeneCoverage
from scadapt.registry import PromotionResult
from scadapt.serving.server import SERVE_NOTE, serve_command
from scadapt.tracking import ENTRY_POINT_TAG, experiment_name, log_params
from scadapt.tracking.contract import REPORT_ARTIFACT, RESULTS_RUN_TAG, TRIALS_ENDED_BY_TAG, WARNINGS_TAG
from scadapt.tracking.runs import mark_model_development, resumed_run

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["strategy", "test_macro_f1", "test_balanced_accuracy", "test_accuracy", "val_macro_f1",
                   "trainable_parameters", "runtime_sec", "peak_rss_mb", "peak_cuda_mb", "gene_coverage"]


@dataclass
class PipelineResult:
    summary: pd.DataFrame  # one row per strategy, best validation macro-F1 first; ``run_id`` of its result
    promotion: PromotionResult | None  # None when no runner could be promoted (see ``warnings``)
    benchmark: BenchmarkResult
    coverage: GeneCoverage | None = None  # None when no strategy uses the backbone
    warnings: list[str] = field(default_factory=list)  # shown under the summary and logged with it
    cut_short: dict[str, str] = field(default_factory=dict)  # strategy -> why the time budget left it unfinished

    @property
    def champion_uri(self) -> str | None:
        """``models:/<name>@champion`` of the dataset's champion (None when nothing was promoted)."""
        return f"models:/{self.promotion.model_name}@champion" if self.promotion is not None else None

    def closing_text(self) -> str:
        """What the main job prints at the end: the summary, warnings, the champion, the report."""
        lines = [self.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
        if self.cut_short:
            lines.append("\nCut short by the time budget (run again with the same settings to finish them):")
            lines += [f"  {strategy}: {why}" for strategy, why in self.cut_short.items()]
        lines += [f"\nWARNING: {warning}" for warning in self.warnings if not warning.startswith(CUT_SHORT_WARNING)]
        if (promotion := self.promotion) is not None:
            lines.append(f"\nChampion: {promotion.model_name} version {promotion.version} ({promotion.strategy}). "
                         f"{promotion.note}")
            lines.append(f"Serve it: {serve_command(f'models:/{promotion.model_name}@champion')}  ({SERVE_NOTE})")
        run = self.benchmark.parent_run_id
        lines.append(f"Report: {REPORT_ARTIFACT}/report.md on MLflow run {run} "
                     f"(mlflow artifacts download -r {run} -a {REPORT_ARTIFACT} -d .)")
        lines.append("Compare the runs: mlflow ui")
        return "\n".join(lines)


def pipeline_config(data: str = PIPELINE_DATA, **settings: Any) -> BenchmarkConfig:
    """The main job as benchmark settings: ``data`` alone, the full-label regime's fold 0, one
    study per strategy, in the dataset's experiment. ``settings``: the other fields of
    :class:`~scadapt.benchmark.config.BenchmarkConfig` (the data, study and memory options)."""
    settings = grouped(BenchmarkConfig, settings)  # label_key=... may be given as it is on the command line
    check_keys(BenchmarkConfig, settings, "pipeline settings")
    if fixed := sorted(set(settings) & {"datasets", "regimes", "folds", "tuning", "name"}):
        raise ScadaptError(f"The main job sets {', '.join(fixed)} itself; run `scadapt benchmark` to choose them.")
    return BenchmarkConfig(**{"experiment": experiment_name(resolve_spec(data).name), **settings},
                           datasets=(data,), regimes=("full",), folds=1, tuning="reuse", name="pipeline")


def run_pipeline(cfg: BenchmarkConfig) -> PipelineResult:
    """Check everything, pretrain the demo backbone if needed, tune every strategy, promote, summarise."""
    with one_job():  # each data warning said once, in this process and its helpers alike
        return _run_pipeline(cfg)


def _run_pipeline(cfg: BenchmarkConfig) -> PipelineResult:
    started = time.perf_counter()
    if cfg.time_budget is not None and cfg.deadline is None:  # the budget counts from here
        cfg = replace(cfg, deadline=TimeBudget.starting_now(cfg.time_budget).deadline)
    data = cfg.datasets[0]
    # under `mlflow run` the launcher's run gets the summary, and the benchmark a parent run of its
    # own in the dataset's experiment (the launcher's may be "Default")
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    if not cfg.needs_backbone:
        log.info("No strategy of %s uses the backbone: none is loaded or pretrained.", ", ".join(cfg.strategies))
    with tempfile.TemporaryDirectory() as report:  # the report is logged on the run
        result = run_benchmark(replace(cfg, output_dir=report))
    dataset = next(iter(dict.fromkeys(result.tables.runs["dataset"])))
    promotion = result.promotions.get(dataset)
    coverage = result.coverage.get(dataset)
    summary = _summary(result.tables.runs, promotion, budgeted=cfg.time_budget is not None)
    cut_short = {key.rsplit("/", 1)[-1]: why for key, why in result.cut_short.items()}
    checkpoint = mlflow.get_run(result.parent_run_id).data.params.get("checkpoint") or None
    if launcher:
        mark_model_development(mlflow.set_experiment(
            experiment_id=mlflow.MlflowClient().get_run(launcher).info.experiment_id))
    with resumed_run(launcher or result.parent_run_id):
        log_params({"data": data, "strategies": ",".join(cfg.strategies), "n_trials": cfg.n_trials,
                    "epochs": cfg.epochs, "checkpoint": checkpoint, "seed": cfg.seed,
                    **{f"data.{k}": v for k, v in cfg.reading.given().items()},
                    **_backbone_params(cfg, data, checkpoint)})
        champion = {"champion_model": promotion.model_name, "champion_version": promotion.version,
                    "champion_run_id": promotion.run_id} if promotion else {}
        mlflow.set_tags({**champion, ENTRY_POINT_TAG: "main", RESULTS_RUN_TAG: result.parent_run_id,
                         **({WARNINGS_TAG: " | ".join(result.warnings)[:5000]} if result.warnings else {})})
        metrics = {"pipeline_sec": time.perf_counter() - started, "strategies_cut_short": len(cut_short)}
        if coverage is not None:
            metrics["gene_coverage"] = coverage.fraction
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            summary.to_csv(Path(tmp) / "summary.csv", index=False)
            if promotion is not None:
                promotion.ranking.to_csv(Path(tmp) / "ranking.csv", index=False)
            if result.warnings:
                (Path(tmp) / "warnings.txt").write_text("\n\n".join(result.warnings) + "\n")
            mlflow.log_artifacts(tmp, "summary")
    return PipelineResult(summary, promotion, result, coverage, result.warnings, cut_short)


def _backbone_params(cfg: BenchmarkConfig, data: str, checkpoint: str | None) -> dict[str, object]:
    """Which cells the demo backbone saw (they matter for evaluation: see the README)."""
    if checkpoint is None or cfg.checkpoint:
        return {}
    pretraining = demo_pretraining(cfg.pretrain_epochs, cfg.seed, cfg.device, cfg.pretrain_data, cfg.reading.layer,
                                   cfg.reading.gene_column)
    return {"backbone.pretrained_on": ",".join(pretraining.data),
            "backbone.pretrained_on_labelled_data": any(_same_data(d, data) for d in pretraining.data)}


def _same_data(a: str, b: str) -> bool:
    return a == b or (Path(a).suffix == ".h5ad" and Path(a).resolve() == Path(b).resolve())


def _summary(runs: pd.DataFrame, promotion: PromotionResult | None, budgeted: bool = False) -> pd.DataFrame:
    """One row per strategy (its result on ``full_fold0``), best validation macro-F1 first; with a
    time budget, what ended each study's trials (``n_trials`` or ``the time budget``)."""
    champion = promotion.run_id if promotion else None
    table = runs[SUMMARY_COLUMNS + ["run_id"]].copy()
    table.insert(len(SUMMARY_COLUMNS), "champion", ["*" if r == champion else "" for r in table["run_id"]])
    if budgeted:
        client = mlflow.MlflowClient()
        table.insert(len(SUMMARY_COLUMNS), "trials_ended_by",
                     [client.get_run(r).data.tags.get(TRIALS_ENDED_BY_TAG, "") for r in table["run_id"]])
    table = table.sort_values("val_macro_f1", ascending=False, kind="stable").reset_index(drop=True)
    table[SUMMARY_COLUMNS[1:]] = table[SUMMARY_COLUMNS[1:]].apply(pd.to_numeric)  # not measured -> NaN
    table["trainable_parameters"] = table["trainable_parameters"].astype("Int64")
    return table.drop(columns=["peak_cuda_mb"]) if table["peak_cuda_mb"].isna().all() else table

"""The whole job behind ``mlflow run .``: demo backbone, a study per strategy, promotion, summary.

On the bundled PBMC data by default: the demo backbone is pretrained on first use and reused,
every strategy is tuned with a small budget (``tune``), the best runner is promoted to
``@champion`` (``promote``) and a summary table is printed and logged. Running it again reuses the
finished studies, so an interrupted pipeline continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from scadapt.backbone.checkpoint import read_vocabulary
from scadapt.data import DatasetInfo, load_and_split
from scadapt.errors import ScadaptError
from scadapt.options import SplitOptions
from scadapt.registry import DowngradeRefused, PromotionResult, promote
from scadapt.strategies import epoch_budget, get_strategy
from scadapt.tracking import ENTRY_POINT_TAG, experiment_name, log_params, tracked_run
from scadapt.tracking.contract import WARNINGS_TAG
from scadapt.tracking.runs import mark_model_development
from scadapt.training.config import PipelineConfig, PretrainConfig, TuneJob
from scadapt.training.preflight import GeneCoverage, backbone_vocabulary, check_coverage
from scadapt.training.pretrain import demo_pretraining, ensure_demo_backbone
from scadapt.tuning.study import TuneResult, tune

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["strategy", "test_macro_f1", "test_balanced_accuracy", "test_accuracy", "val_macro_f1",
                   "trainable_parameters", "runtime_sec", "peak_rss_mb", "gene_coverage"]


@dataclass
class PipelineResult:
    summary: pd.DataFrame
    promotion: PromotionResult | None  # None when no runner could be promoted (see ``warnings``)
    studies: dict[str, TuneResult]
    coverage: GeneCoverage | None = None  # None when no strategy uses the backbone
    warnings: list[str] = field(default_factory=list)  # shown under the summary and logged with it


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Check everything, pretrain the demo backbone if needed, tune every strategy, promote."""
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)  # the summary goes there; studies get runs of their own
    started = time.perf_counter()
    dataset, coverage, pretraining = _preflight(cfg)
    warnings = [coverage.warning()] if coverage is not None and coverage.low else []
    checkpoint = cfg.checkpoint or (str(ensure_demo_backbone(pretraining)) if cfg.needs_backbone else None)
    studies: dict[str, TuneResult] = {}
    for name in cfg.strategies:
        log.info("Tuning %s on %s (%d trials).", name, dataset, cfg.n_trials)
        studies[name] = tune(TuneJob(data=cfg.data, **asdict(cfg.data_options()), strategy=name,
                                     checkpoint=checkpoint if get_strategy(name).needs_backbone else None,
                                     hparams=epoch_budget(name, cfg.epochs), n_trials=cfg.n_trials,
                                     min_genes=cfg.min_genes, storage=cfg.storage, seed=cfg.seed, device=cfg.device,
                                     progress=cfg.progress, **cfg.tune_overrides))
    promotion: PromotionResult | None = None
    try:
        promotion = promote(dataset, cfg.policy, force=cfg.force)
    except DowngradeRefused as refused:
        warnings.append(str(refused))
        promotion = refused.kept
    except ScadaptError as error:  # e.g. no runner passes the quality gates: the studies' results stay
        warnings.append(f"No champion for {dataset}: {error}")
        log.warning(warnings[-1])
    summary = _summary(studies, promotion)
    if launcher:
        mark_model_development(mlflow.set_experiment(
            experiment_id=mlflow.MlflowClient().get_run(launcher).info.experiment_id))
        run = mlflow.start_run(run_id=launcher)
    else:
        run = tracked_run(experiment_name(dataset), "pipeline", {ENTRY_POINT_TAG: "main"})
    with run:
        log_params({"data": cfg.data, "strategies": ",".join(cfg.strategies), "n_trials": cfg.n_trials,
                    "epochs": cfg.epochs, "checkpoint": checkpoint, "seed": cfg.seed,
                    **{f"data.{k}": v for k, v in cfg.data_options().given().items()},
                    **_backbone_params(cfg, pretraining, checkpoint)})
        champion = {"champion_model": promotion.model_name, "champion_version": promotion.version,
                    "champion_run_id": promotion.run_id} if promotion else {}
        mlflow.set_tags({**champion, ENTRY_POINT_TAG: "main",
                         **({WARNINGS_TAG: " | ".join(warnings)[:5000]} if warnings else {})})
        metrics = {"pipeline_sec": time.perf_counter() - started}
        if coverage is not None:
            metrics["gene_coverage"] = coverage.fraction
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            summary.to_csv(Path(tmp) / "summary.csv", index=False)
            if promotion is not None:
                promotion.ranking.to_csv(Path(tmp) / "ranking.csv", index=False)
            if warnings:
                (Path(tmp) / "warnings.txt").write_text("\n\n".join(warnings) + "\n")
            mlflow.log_artifacts(tmp, "summary")
    return PipelineResult(summary, promotion, studies, coverage, warnings)


def _preflight(cfg: PipelineConfig) -> tuple[str, GeneCoverage | None, PretrainConfig]:
    """Load and split the data as the studies will, and check its genes against the backbone's
    vocabulary, before any pretraining or tuning. Returns the dataset's name, its coverage and
    the demo backbone's pretraining job."""
    pretraining = demo_pretraining(cfg.pretrain_epochs, cfg.seed, cfg.device, cfg.pretrain_data, cfg.layer,
                                   cfg.gene_column)
    if cfg.needs_backbone and cfg.checkpoint:
        read_vocabulary(cfg.checkpoint)  # local files, quick: checked before a dataset that may need a download
    adata, _ = load_and_split(cfg.data, cfg.data_options(), SplitOptions(seed=cfg.seed))  # as each study will
    name = DatasetInfo.of(adata).name
    if not cfg.needs_backbone:
        log.info("No strategy of %s uses the backbone: none is loaded or pretrained.", ", ".join(cfg.strategies))
        return name, None, pretraining
    vocabulary = backbone_vocabulary(cfg.checkpoint, pretraining)
    return name, check_coverage(adata, name, vocabulary, cfg.min_genes), pretraining


def _backbone_params(cfg: PipelineConfig, pretraining: PretrainConfig, checkpoint: str | None) -> dict[str, object]:
    """Which cells the demo backbone saw (they matter for evaluation: see the README)."""
    if checkpoint is None or cfg.checkpoint:
        return {}
    return {"backbone.pretrained_on": ",".join(pretraining.data),
            "backbone.pretrained_on_labelled_data": any(_same_data(d, cfg.data) for d in pretraining.data)}


def _same_data(a: str, b: str) -> bool:
    return a == b or (Path(a).suffix == ".h5ad" and Path(a).resolve() == Path(b).resolve())


def _summary(studies: dict[str, TuneResult], promotion: PromotionResult | None) -> pd.DataFrame:
    champion = promotion.run_id if promotion else None
    rows = [{"strategy": name, **{k: result.metrics.get(k) for k in SUMMARY_COLUMNS[1:]},
             "champion": "*" if result.best_run_id == champion else ""} for name, result in studies.items()]
    table = pd.DataFrame(rows).sort_values("val_macro_f1", ascending=False).reset_index(drop=True)
    table[SUMMARY_COLUMNS[1:]] = table[SUMMARY_COLUMNS[1:]].apply(pd.to_numeric)  # None (not measured) -> NaN
    table["trainable_parameters"] = table["trainable_parameters"].astype("Int64")
    return table

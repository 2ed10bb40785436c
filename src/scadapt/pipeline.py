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
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from scadapt.registry import PromotionResult, promote
from scadapt.strategies import STRATEGY_NAMES, epoch_budget
from scadapt.tracking import log_params, tracked_run
from scadapt.training.pretrain import ensure_demo_backbone
from scadapt.tuning import TuneJob, TuneResult, tune

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["strategy", "test_macro_f1", "test_balanced_accuracy", "test_accuracy", "val_macro_f1",
                   "trainable_parameters", "runtime_sec"]


@dataclass
class PipelineConfig:
    data: str = "pbmc68k_reduced"
    strategies: tuple[str, ...] = tuple(STRATEGY_NAMES)
    n_trials: int = 3  # per strategy
    epochs: int = 10  # per trial, for the strategies trained by gradient descent
    checkpoint: str | None = None  # default: the demo backbone (pretrained here on first use)
    pretrain_epochs: int = 10
    storage: str | None = None  # Optuna storage of the studies (default: sqlite:///optuna.db)
    policy: str | None = None  # promotion policy (default: registry/policy.yaml)
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    tune_overrides: dict[str, object] = field(default_factory=dict)  # more TuneJob fields (label_key, ...)


@dataclass
class PipelineResult:
    summary: pd.DataFrame
    promotion: PromotionResult
    studies: dict[str, TuneResult]


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)  # the summary goes there; studies get runs of their own
    started = time.perf_counter()
    checkpoint = cfg.checkpoint or str(ensure_demo_backbone(cfg.pretrain_epochs, cfg.seed, cfg.device))
    studies: dict[str, TuneResult] = {}
    for name in cfg.strategies:
        log.info("Tuning %s on %s (%d trials).", name, cfg.data, cfg.n_trials)
        studies[name] = tune(TuneJob(data=cfg.data, strategy=name, checkpoint=checkpoint,
                                     hparams=epoch_budget(name, cfg.epochs), n_trials=cfg.n_trials,
                                     storage=cfg.storage, seed=cfg.seed, device=cfg.device, progress=cfg.progress,
                                     **cfg.tune_overrides))
    promotion = promote(_dataset_name(cfg.data), cfg.policy)
    summary = _summary(studies, promotion)
    if launcher:
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(launcher).info.experiment_id)
        run = mlflow.start_run(run_id=launcher)
    else:
        run = tracked_run(f"scadapt-{_dataset_name(cfg.data)}", "pipeline", {"scadapt.entry_point": "main"})
    with run:
        log_params({"data": cfg.data, "strategies": ",".join(cfg.strategies), "n_trials": cfg.n_trials,
                    "epochs": cfg.epochs, "checkpoint": checkpoint, "seed": cfg.seed})
        mlflow.set_tags({"champion_model": promotion.model_name, "champion_version": promotion.version,
                         "champion_run_id": promotion.run_id, "scadapt.entry_point": "main"})
        mlflow.log_metric("pipeline_sec", time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as tmp:
            summary.to_csv(Path(tmp) / "summary.csv", index=False)
            promotion.ranking.to_csv(Path(tmp) / "ranking.csv", index=False)
            mlflow.log_artifacts(tmp, "summary")
    return PipelineResult(summary, promotion, studies)


def _dataset_name(data: str) -> str:
    return Path(data).stem if data.endswith(".h5ad") else data


def _summary(studies: dict[str, TuneResult], promotion: PromotionResult) -> pd.DataFrame:
    rows = [{"strategy": name, **{k: result.metrics.get(k) for k in SUMMARY_COLUMNS[1:]},
             "champion": "*" if result.best_run_id == promotion.run_id else ""} for name, result in studies.items()]
    table = pd.DataFrame(rows).sort_values("val_macro_f1", ascending=False).reset_index(drop=True)
    table["trainable_parameters"] = table["trainable_parameters"].astype("Int64")
    return table

"""What a benchmark answers: the first answer (the strategies without a backbone, ranked and
promoted before any backbone work), each dataset's champion, the champion's per-class scores, and
the settings, totals and report on the benchmark's parent run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from scadapt.benchmark.cells import CellRunner, finished_runs
from scadapt.benchmark.config import BenchmarkConfig
from scadapt.benchmark.matrix import MatrixCell
from scadapt.benchmark.results import BenchmarkTables, results_table, summarise
from scadapt.infra.coordination import Coordinator
from scadapt.infra.errors import ScadaptError
from scadapt.registry import DowngradeRefused, PromotionPolicy, PromotionResult, has_champion, promote
from scadapt.tracking import log_params
from scadapt.tracking.contract import FIRST_ANSWER_ARTIFACT, PER_CLASS_TEST_TABLE, REPORT_ARTIFACT
from scadapt.tracking.runs import quiet_artifact_downloads, resumed_run

log = logging.getLogger(__name__)


def first_answer(runner: CellRunner, cells: list[MatrixCell], experiment_id: str) -> None:
    """Before the first backbone cell: rank the strategies without a backbone that finished, say it
    and log it on the parent run, and promote the best to ``@champion`` where a dataset has none yet
    (a later, better runner replaces it at the end)."""
    cfg = runner.cfg
    done = finished_runs(experiment_id, runner.fingerprint)
    quick = [c for c in cells if c.identity in done and not c.method.needs_backbone]
    if not quick:
        return
    tables = summarise(results_table((c, done[c.identity]) for c in quick), PromotionPolicy.load(cfg.policy))
    shown = tables.ranking.drop(columns=["regime", "label_fraction"], errors="ignore")
    log.info("First answer, from the strategies without a backbone (those with one run next):\n%s",
             shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    with resumed_run(runner.parent_id):
        mlflow.log_text(tables.ranking.to_csv(index=False), FIRST_ANSWER_ARTIFACT)
    if not cfg.promote:
        return
    for dataset in dict.fromkeys(c.dataset for c in quick):
        if has_champion(dataset, cfg.policy):
            continue
        try:
            promotion = promote(dataset, cfg.policy, lock=runner.board.hold)
            log.info("Provisional champion of %s: %s (%s version %s); a better runner replaces it at the end.",
                     dataset, promotion.strategy, promotion.model_name, promotion.version)
        except ScadaptError as error:
            log.info("No provisional champion for %s: %s", dataset, error)


def promote_all(cfg: BenchmarkConfig, datasets, board: Coordinator, warnings: list[str],
                no_champion: dict[str, str]) -> dict[str, PromotionResult]:
    """Promote each dataset's champion among all its candidates (this benchmark's and any other
    experiment's). One whose candidates all fail the quality gates gets none (said in ``warnings``,
    ``no_champion`` and the report), and the others still get theirs; a champion better than every
    cell stays."""
    promotions = {}
    for dataset in datasets:
        try:
            promotions[dataset] = promote(dataset, cfg.policy, force=cfg.force, lock=board.hold)
        except DowngradeRefused as refused:
            warnings.append(str(refused))
            log.warning("%s", refused)
            promotions[dataset] = refused.kept
        except ScadaptError as error:  # e.g. no runner passes the quality gates: the results stay
            warnings.append(f"No champion for {dataset}: {error}")
            log.warning(warnings[-1])
            no_champion[dataset] = str(error)
    return promotions


def champions(tables: BenchmarkTables, promotions: dict[str, PromotionResult]) -> dict[str, dict[str, str]]:
    """Each dataset's champion: the promoted run, or without promotion the top full-label strategy."""
    found = {}
    for dataset in dict.fromkeys(tables.runs["dataset"]):
        if dataset in promotions:
            promotion = promotions[dataset]
            found[dataset] = {"strategy": promotion.strategy, "run_id": promotion.run_id,
                              "model": f"{promotion.model_name}/{promotion.version}"}
        else:
            ranking = tables.ranking[tables.ranking["dataset"] == dataset]
            top = ranking[ranking["regime"] == "full"] if (ranking["regime"] == "full").any() else ranking
            found[dataset] = {"strategy": str(top.iloc[0]["strategy"]), "run_id": "", "model": ""}
    return found


def champion_per_class(tables: BenchmarkTables) -> pd.DataFrame:
    """Per-class test F1 (from each run's ``tables/per_class_test.csv``) of every cell of each
    dataset's champion strategy."""
    frames = []
    with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
        for dataset, champion in tables.champions.items():
            runs = tables.runs[(tables.runs["dataset"] == dataset) & (tables.runs["strategy"] == champion["strategy"])]
            for row in runs.itertuples():
                path = mlflow.artifacts.download_artifacts(run_id=row.run_id, artifact_path=PER_CLASS_TEST_TABLE,
                                                           dst_path=str(Path(tmp) / row.run_id))
                per_class = pd.read_csv(path)
                if "trained" not in per_class:  # runs logged before the column existed
                    per_class["trained"] = True
                frames.append(per_class[["class", "f1", "support", "trained"]].assign(
                    dataset=dataset, strategy=row.strategy, setting=row.setting, replicate=row.replicate))
    columns = ["dataset", "strategy", "setting", "replicate", "class", "f1", "support", "trained"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def log_outputs(runner: CellRunner, output_dir: Path, tables: BenchmarkTables, timing: pd.DataFrame,
                seconds: float) -> None:
    """Settings, totals and the report folder on the benchmark's parent run."""
    cfg = runner.cfg
    with resumed_run(runner.parent_id):
        # the settings behind the fingerprint are fixed for this run; the matrix may grow on a rerun (tags)
        log_params({"n_folds": cfg.n_folds, "tuning": cfg.tuning, "n_trials": cfg.n_trials, "epochs": cfg.epochs,
                    "checkpoint": runner.checkpoint, "seed": cfg.seed, "fingerprint": runner.fingerprint,
                    **{f"data.{k}": v for k, v in cfg.reading.given().items()}})
        mlflow.set_tags({"matrix.datasets": ",".join(cfg.datasets), "matrix.strategies": ",".join(cfg.strategies),
                         "matrix.regimes": ",".join(cfg.regimes), "matrix.folds": str(cfg.folds_run),
                         "matrix.label_fractions": ",".join(map(str, cfg.label_fractions)),
                         **{f"champion.{d}": c["model"] for d, c in tables.champions.items() if c["model"]}})
        by_strategy = timing.groupby("strategy")["wall_sec"].sum()
        mlflow.log_metrics({"benchmark_sec": seconds, "cells": len(tables.runs), "cells_run": timing["cells_run"].sum(),
                            "fit_sec_total": float(tables.runs["runtime_sec"].sum()),
                            **{f"wall_sec_{strategy}": float(sec) for strategy, sec in by_strategy.items()}})
        mlflow.log_artifacts(str(output_dir), REPORT_ARTIFACT)

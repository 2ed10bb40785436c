"""What a training run logs to MLflow: parameters, the dataset input, metrics, figures, tables,
the split and the annotator. The same names for every strategy, so runs line up in the UI."""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scadapt.artifacts.annotators import log_annotator
from scadapt.data import save_splits
from scadapt.evaluation.figures import confusion_figure, curves_figure, umap_figure
from scadapt.evaluation.metrics import ClassificationReport
from scadapt.infra.devices import compute_dtype
from scadapt.jobs.config import TrainJob
from scadapt.jobs.context import TrainingContext
from scadapt.jobs.fit import FitOutcome, calibrate_novelty, evaluate, validation_report
from scadapt.models.annotator import Annotator
from scadapt.strategies import StrategyConfig
from scadapt.tracking.contract import (
    DATASET_TAG,
    FOLD_TAG,
    GENES_FILE,
    INPUT_EXAMPLE_FILE,
    PER_CLASS_TEST_TABLE,
    REGIME_TAG,
    SERVING_ARTIFACT,
    SPLIT_TAG,
    STRATEGY_TAG,
)
from scadapt.tracking.runs import retry_racing_writers

log = logging.getLogger(__name__)


def run_tags(job: TrainJob, ctx: TrainingContext) -> dict[str, str]:
    """Tags that identify what a run is about, the same for ``train`` and ``tune`` runs."""
    return {DATASET_TAG: ctx.info.name, STRATEGY_TAG: job.strategy, REGIME_TAG: job.regime, SPLIT_TAG: ctx.split.name,
            FOLD_TAG: "" if ctx.split.fold is None else str(ctx.split.fold)}


def job_run_tags(job: TrainJob) -> dict[str, str]:
    """Tags that only the job's own top-level run gets (a train run, a study's parent run), not
    its trials: the caller's ``run_tags`` and the parent it is nested under."""
    parent = {"mlflow.parentRunId": job.parent_run_id} if job.parent_run_id else {}
    return {**job.run_tags, **parent}


def run_params(job: TrainJob, ctx: TrainingContext, config: StrategyConfig) -> dict[str, object]:
    """The strategy's hyperparameters under their own names, plus the same ``data.*``,
    ``split.*`` and ``backbone.*`` columns for every run.

    The namespaces keep what was resolved (e.g. the label key a catalogued dataset uses) apart
    from the entry-point parameters that ``mlflow run`` logs as typed, which cannot be overwritten.
    """
    return {
        **config.to_params(), "strategy": job.strategy,
        "data.name": ctx.info.name, "data.label_key": ctx.info.label_key, "data.batch_key": ctx.info.batch_key,
        "data.layer": ctx.info.layer, "data.drop_rare_classes": job.reading.drop_rare_classes, "data.n_cells": ctx.adata.n_obs,
        "data.n_classes": len(ctx.classes),
        **ctx.split.params(), "split.n_folds": job.n_folds, "split.validation_fraction": job.validation_fraction,
        "backbone.checkpoint": str(ctx.checkpoint or ""), "backbone.weights_hash": ctx.weights_hash,
        "backbone.uri": ctx.checkpoint_uri,
        "backbone.max_seq_len": ctx.tokenizer.max_seq_len if ctx.tokenizer else None,
        "backbone.gene_overlap": ctx.gene_overlap, "compute_device": str(ctx.device),
        "compute_dtype": str(compute_dtype(ctx.device)).removeprefix("torch."),
    }


def fit_metrics(outcome: FitOutcome, val: ClassificationReport, embedding_sec: float) -> dict[str, float]:
    """Validation metrics, parameter counts and resources of one fit."""
    trainable = outcome.annotator.fitted_parameters
    metrics = {
        **val.prefixed("val"),
        "trainable_parameters": trainable, "total_parameters": outcome.total_parameters,
        "trainable_fraction": trainable / max(1, outcome.total_parameters), "runtime_sec": outcome.runtime_sec,
        "peak_rss_mb": outcome.peak_rss_bytes / 2**20, "fit_added_rss_mb": outcome.added_rss_bytes / 2**20,
    }
    if outcome.peak_cuda_bytes is not None:
        metrics["peak_cuda_mb"] = outcome.peak_cuda_bytes / 2**20
    if outcome.method.frozen_embeddings:
        metrics["embedding_sec"] = embedding_sec
    if outcome.fit is not None:
        metrics.update(best_epoch=outcome.fit.best_epoch, epochs_run=len(outcome.fit.history))
        if (plan := outcome.fit.plan).budget is not None:  # trained through the backbone within a budget
            metrics.update(memory_budget_mb=plan.budget.bytes / 2**20, planned_memory_mb=plan.estimate_bytes / 2**20,
                           micro_batch_tokens=plan.max_tokens or 0, activation_checkpointing=float(plan.checkpointing))
    return metrics


def coverage_metrics(ctx: TrainingContext) -> dict[str, float]:
    """The fraction of the dataset's genes in the backbone's vocabulary (runs with a backbone)."""
    return {"gene_coverage": ctx.cells.overlap.fraction} if ctx.cells is not None else {}


def log_fit(ctx: TrainingContext, outcome: FitOutcome) -> dict[str, float]:
    """Log what a fit alone tells (no test cells touched): validation metrics, resources, the
    annotator, curves, validation tables and the split."""
    annotator = outcome.annotator
    val = validation_report(ctx, outcome)
    metrics = {**fit_metrics(outcome, val, ctx.embedding_sec), **coverage_metrics(ctx)}
    if outcome.adjusted:  # the value used, beside the value asked for
        mlflow.log_params({f"used.{name}": value for name, value in outcome.adjusted.items()})
    metrics.update(calibrate_novelty(ctx, annotator))  # before the annotator is saved: it carries the scorer
    metrics["runner_size_bytes"] = log_annotator(annotator)
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for folder in ("figures", "tables"):
            (tmp / folder).mkdir()
        val.per_class.to_csv(tmp / "tables" / "per_class_validation.csv")
        if outcome.fit is not None:
            history = pd.DataFrame(outcome.fit.history)
            history.to_csv(tmp / "tables" / "history.csv", index=False)
            curves_figure(history, tmp / "figures" / "curves.png", f"{annotator.strategy} / {ctx.split.name}")
        for folder in ("figures", "tables"):
            mlflow.log_artifacts(str(tmp / folder), folder)
        save_splits([ctx.split], ctx.adata, tmp / "splits", regime=ctx.split.regime, seed=annotator.config.seed)
        mlflow.log_artifacts(str(tmp / "splits"), "splits")
        _log_serving_inputs(ctx, tmp / SERVING_ARTIFACT)
    return metrics


def _log_serving_inputs(ctx: TrainingContext, folder: Path) -> None:
    """What serving this runner needs from the data: the gene symbols it reads (``genes.json``)
    and two training cells as the input example (``input_example.csv``)."""
    folder.mkdir()
    genes = [str(g) for g in ctx.adata.var_names]
    (folder / GENES_FILE).write_text(json.dumps(genes))
    example = ctx.adata.X[ctx.split.train[:2]]
    example = example.toarray() if sp.issparse(example) else np.asarray(example)
    pd.DataFrame(example, columns=genes).to_csv(folder / INPUT_EXAMPLE_FILE, index=False)
    mlflow.log_artifacts(str(folder), SERVING_ARTIFACT)


def log_test(ctx: TrainingContext, annotator: Annotator, umap: bool = True) -> dict[str, float]:
    """Score the test cells and log ``test_*`` metrics, the confusion matrix, the UMAP and the
    per-class table on the active run."""
    test, embedding, predicted = evaluate(ctx, annotator, "test")
    metrics = test.prefixed("test")
    mlflow.log_metrics(metrics)
    title = f"{annotator.strategy} / {ctx.split.name}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for folder in ("figures", "tables"):
            (tmp / folder).mkdir()
        confusion_figure(test.confusion, tmp / "figures" / "confusion_test.png", f"{title} (test)")
        if umap and umap_figure(embedding, ctx.labels[ctx.split.test], predicted, tmp / "figures" / "umap_test.png",
                                title, seed=annotator.config.seed) is None:
            log.info("Too few test cells for a UMAP.")
        # a class absent from the training cells (cross-study) cannot be predicted: say so beside its 0
        test.per_class.assign(trained=test.per_class.index.isin(ctx.classes)).to_csv(tmp / PER_CLASS_TEST_TABLE)
        test.confusion.to_csv(tmp / "tables" / "confusion_test.csv")
        for folder in ("figures", "tables"):
            mlflow.log_artifacts(str(tmp / folder), folder)
    return metrics


def log_dataset_input(ctx: TrainingContext) -> None:
    """The dataset as an MLflow input: cell labels (and batches) with the split part, digest-keyed."""
    columns = [c for c in (ctx.info.label_key, ctx.info.batch_key) if c]
    table = ctx.adata.obs[columns].astype(str).reset_index(names="cell")
    table["part"] = ctx.split.part_labels(ctx.adata.n_obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(table, source=ctx.info.source, name=ctx.info.name, targets=ctx.info.label_key)
    # parallel workers register the same dataset at the same moment
    retry_racing_writers(mlflow.log_input, dataset, context="training",
                         tags={"split": ctx.split.name, "shape": f"{ctx.adata.n_obs} cells x {ctx.adata.n_vars} genes"})

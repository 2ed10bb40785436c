"""``train``: one strategy, one split, fixed hyperparameters, one MLflow run.

The work is split so tuning can reuse it: :func:`prepare` loads the data, the split, the
tokenized cells and (lazily, once) the frozen embeddings; :func:`fit_strategy` trains one
configuration; :func:`evaluate` scores it; :func:`train` does all three inside a tracked run.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scadapt.backbone import embed_cells, load_backbone
from scadapt.data import DatasetInfo, Split, load_dataset, make_splits, required_cells_per_class, save_splits
from scadapt.errors import CheckpointError, ScadaptError
from scadapt.evaluation.figures import confusion_figure, curves_figure, umap_figure
from scadapt.evaluation.metrics import ClassificationReport, classification_report
from scadapt.models.annotator import Annotator, BackboneAnnotator, ExpressionAnnotator
from scadapt.models.build import build_annotation_model
from scadapt.strategies import StrategyConfig, get_strategy
from scadapt.tokenization import GeneTokenizer, TokenCache, TokenizedCells
from scadapt.tracking import log_params, tracked_run
from scadapt.tracking.resources import PeakRSS, cuda_peak_bytes
from scadapt.training.classifier import EmbeddingSource, FitResult, TokenSource, fit_classifier, predict_logits
from scadapt.training.config import TrainJob
from scadapt.training.devices import resolve_device
from scadapt.training.linear import fit_logistic, fit_pca_logistic, load_into_head
from scadapt.training.pretrain import demo_backbone_dir

log = logging.getLogger(__name__)


@dataclass
class TrainingContext:
    """Everything about the data and backbone that does not depend on the strategy's settings."""

    adata: AnnData
    info: DatasetInfo
    split: Split
    classes: list[str]  # the classes of the training cells, in model output order
    codes: np.ndarray  # [n_cells] class index, -1 for a class absent from training
    device: torch.device
    checkpoint: Path | None
    weights_hash: str | None = None
    backbone: torch.nn.Module | None = field(default=None, repr=False)  # pristine, on ``device``; never trained
    tokenizer: GeneTokenizer | None = None
    cells: TokenizedCells | None = None
    gene_overlap: str = ""
    _embeddings: np.ndarray | None = field(default=None, repr=False)  # [n_cells, d]; valid where _embedded
    _embedded: np.ndarray | None = field(default=None, repr=False)  # [n_cells] bool
    embedding_sec: float = 0.0

    @property
    def labels(self) -> np.ndarray:
        return self.adata.obs[self.info.label_key].astype(str).to_numpy()

    def fresh_backbone(self) -> torch.nn.Module:
        """A copy of the pristine backbone for a strategy that changes it in place."""
        return copy.deepcopy(self.backbone)

    def embeddings(self, indices: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
        """Frozen CLS embeddings of cells ``indices`` ``[len(indices), d]`` (default: of every cell,
        ``[n_cells, d]``). Each cell passes through the backbone once per context."""
        n_cells = self.cells.n_cells
        if self._embeddings is None:
            self._embeddings = np.zeros((n_cells, self.backbone.config.d_model), dtype=np.float32)
            self._embedded = np.zeros(n_cells, dtype=bool)
        wanted = np.arange(n_cells) if indices is None else np.asarray(indices)
        missing = wanted[~self._embedded[wanted]]
        if len(missing):
            started = time.perf_counter()
            self._embeddings[missing] = embed_cells(self.backbone, self.tokenizer, self.cells, progress=progress,
                                                    indices=missing)
            self._embedded[missing] = True
            self.embedding_sec += time.perf_counter() - started
        return self._embeddings if indices is None else self._embeddings[wanted]


def prepare(job: TrainJob, needs_backbone: bool = True) -> TrainingContext:
    """Load and validate the data, make the job's split, tokenize for the backbone."""
    adata = load_dataset(
        job.data, label_key=job.label_key, batch_key=job.batch_key, layer=job.layer, gene_column=job.gene_column,
        study_groups=job.study_groups, min_cells_per_class=required_cells_per_class(job.regime, job.n_folds),
        drop_rare_classes=job.drop_rare_classes,
    )
    splits = make_splits(adata, job.regime, n_folds=job.n_folds, validation_fraction=job.validation_fraction,
                         label_fractions=job.label_fractions, seed=job.seed)
    by_name = {s.name: s for s in splits}
    if job.split is not None and job.split not in by_name:
        raise ScadaptError(f"No split {job.split!r} in regime {job.regime!r}; splits: {', '.join(by_name)}.")
    split = by_name[job.split] if job.split else splits[0]
    info = DatasetInfo.of(adata)
    labels = adata.obs[info.label_key].astype(str).to_numpy()
    classes = sorted(set(labels[split.train]))
    position = {name: i for i, name in enumerate(classes)}
    codes = np.array([position.get(label, -1) for label in labels], dtype=np.int64)
    ctx = TrainingContext(adata, info, split, classes, codes, resolve_device(job.device), None)
    if needs_backbone:
        ctx.checkpoint = Path(job.checkpoint) if job.checkpoint else demo_backbone_dir()
        if not (ctx.checkpoint / "args.json").is_file() and not job.checkpoint:
            raise CheckpointError(
                f"No backbone checkpoint at {ctx.checkpoint}. Create the demo backbone with `scadapt pretrain` "
                "(a few minutes on CPU) or pass the scGPT model folder with --checkpoint."
            )
        loaded = load_backbone(ctx.checkpoint, with_decoders=False, device=ctx.device)
        ctx.backbone = loaded.model
        cfg = loaded.config
        ctx.weights_hash = loaded.weights_hash
        ctx.tokenizer = GeneTokenizer(loaded.vocab, n_bins=cfg.n_bins, max_seq_len=job.max_seq_len or cfg.max_seq_len,
                                      pad_value=cfg.pad_value, min_genes=job.min_genes, seed=job.seed,
                                      cache=TokenCache())
        ctx.cells = ctx.tokenizer.tokenize(adata)
        ctx.gene_overlap = ctx.cells.overlap.describe()
    return ctx


@dataclass
class FitOutcome:
    annotator: Annotator
    fit: FitResult | None
    runtime_sec: float
    peak_rss_bytes: int  # of the process during the fit
    added_rss_bytes: int  # that peak above the level before the fit
    peak_cuda_bytes: int | None
    total_parameters: int


def fit_strategy(ctx: TrainingContext, strategy_name: str, config: StrategyConfig, progress: bool = True,
                 on_epoch=None) -> FitOutcome:
    """Train one configuration of one strategy on ``ctx.split``; the result predicts new cells."""
    strategy = get_strategy(strategy_name)
    split, n_classes = ctx.split, len(ctx.classes)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    started = time.perf_counter()
    fit = None
    with PeakRSS(interval=0.02) as peak:
        if strategy.kind == "expression":
            result = fit_pca_logistic(ctx.adata.X[split.train], ctx.adata.var_names, ctx.codes[split.train], n_classes,
                                      config.n_components, config.n_top_genes, config.C, config.class_weighted,
                                      config.max_iter, config.seed)
            annotator: Annotator = ExpressionAnnotator(strategy_name, config, ctx.classes, result.genes, result.arrays)
            total = annotator.fitted_parameters
        else:
            frozen = strategy.kind == "frozen"
            # frozen strategies only read the backbone, so they share the pristine one
            backbone = ctx.backbone if frozen else ctx.fresh_backbone()
            model = build_annotation_model(strategy_name, config, backbone, n_classes).to(ctx.device)
            # the one pass through the frozen backbone, counted in this runtime: every cell for the
            # frozen strategies, otherwise the training cells (for the head's input statistics)
            if frozen:
                ctx.embeddings(progress=progress)
            train_embeddings = ctx.embeddings(split.train, progress)
            if strategy_name == "frozen_probe":
                load_into_head(model.head, fit_logistic(train_embeddings, ctx.codes[split.train], n_classes, config.C,
                                                        config.class_weighted, config.max_iter, config.seed))
            else:
                model.head.set_standardization(torch.as_tensor(train_embeddings, device=ctx.device))
                source = EmbeddingSource(model, ctx.embeddings(progress=progress), ctx.device) if frozen else \
                    TokenSource(model, ctx.tokenizer, ctx.cells, ctx.device)
                fit = fit_classifier(source, ctx.codes, split.train, split.validation, n_classes, config, ctx.device,
                                     on_epoch=on_epoch, progress=progress)
            annotator = BackboneAnnotator(strategy_name, config, ctx.classes, model, ctx.tokenizer, ctx.weights_hash,
                                          str(ctx.checkpoint))
            total = sum(p.numel() for p in model.parameters())
    return FitOutcome(annotator, fit, time.perf_counter() - started, peak.peak_bytes, peak.added_bytes,
                      cuda_peak_bytes(ctx.device), total)


def annotator_outputs(ctx: TrainingContext, annotator: Annotator, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and probabilities for cells ``indices`` of the context's data."""
    if isinstance(annotator, ExpressionAnnotator):
        return annotator.outputs(ctx.adata[indices])
    if get_strategy(annotator.strategy).kind == "frozen":  # reuse the cached embeddings
        embedding = ctx.embeddings(indices)
        logits = predict_logits(EmbeddingSource(annotator.model, ctx.embeddings(), ctx.device), indices, 1024)
        return embedding, torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    return annotator.cell_outputs(ctx.cells, indices)


def evaluate(ctx: TrainingContext, annotator: Annotator, part: str) -> tuple[ClassificationReport, np.ndarray, np.ndarray]:
    """Report, embeddings and predicted labels for one part (``validation`` or ``test``) of the split."""
    indices = ctx.split.part(part)
    embedding, proba = annotator_outputs(ctx, annotator, indices)
    predicted = np.asarray(ctx.classes, dtype=object)[proba.argmax(axis=1)]
    return classification_report(ctx.labels[indices], predicted), embedding, predicted


@dataclass
class TrainResult:
    run_id: str
    annotator: Annotator
    metrics: dict[str, float]


def train(job: TrainJob) -> TrainResult:
    """Train one strategy on one split as one MLflow run in the dataset's experiment."""
    strategy = get_strategy(job.strategy)
    config = strategy.config_class.from_params({"seed": job.seed, **job.hparams})
    ctx = prepare(job, needs_backbone=strategy.kind != "expression")
    experiment = job.experiment or f"scadapt-{ctx.info.name}"
    tags = {"dataset": ctx.info.name, "strategy": job.strategy, "regime": job.regime, "split": ctx.split.name,
            "fold": "" if ctx.split.fold is None else str(ctx.split.fold), "scadapt.entry_point": "train"}
    with tracked_run(experiment, run_name=f"{job.strategy}/{ctx.split.name}", tags=tags) as run:
        log_params(run_params(job, ctx, config))
        _log_dataset_input(ctx)

        def on_epoch(record: dict[str, float]) -> None:
            mlflow.log_metrics({f"epoch_{k}": v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))

        outcome = fit_strategy(ctx, job.strategy, config, progress=job.progress, on_epoch=on_epoch)
        metrics = log_outcome(ctx, outcome, umap=job.umap)
        if job.output_dir:
            outcome.annotator.save(job.output_dir)
        log.info("%s on %s: validation macro-F1 %.3f, test macro-F1 %.3f (MLflow run %s).", job.strategy,
                 ctx.split.name, metrics["val_macro_f1"], metrics["test_macro_f1"], run.info.run_id)
        return TrainResult(run.info.run_id, outcome.annotator, metrics)


def run_params(job: TrainJob, ctx: TrainingContext, config: StrategyConfig) -> dict[str, object]:
    """The strategy's hyperparameters under their own names, plus the same ``data.*``,
    ``split.*`` and ``backbone.*`` columns for every run.

    The namespaces keep what was resolved (e.g. the label key a catalogued dataset uses) apart
    from the entry-point parameters that ``mlflow run`` logs as typed, which cannot be overwritten.
    """
    return {
        **config.to_params(), "strategy": job.strategy,
        "data.name": ctx.info.name, "data.label_key": ctx.info.label_key, "data.batch_key": ctx.info.batch_key,
        "data.layer": ctx.info.layer, "data.drop_rare_classes": job.drop_rare_classes, "data.n_cells": ctx.adata.n_obs,
        "data.n_classes": len(ctx.classes),
        **ctx.split.params(), "split.n_folds": job.n_folds, "split.validation_fraction": job.validation_fraction,
        "backbone.checkpoint": str(ctx.checkpoint or ""), "backbone.weights_hash": ctx.weights_hash,
        "backbone.max_seq_len": ctx.tokenizer.max_seq_len if ctx.tokenizer else None,
        "backbone.gene_overlap": ctx.gene_overlap, "compute_device": str(ctx.device),
    }


def log_outcome(ctx: TrainingContext, outcome: FitOutcome, umap: bool = True) -> dict[str, float]:
    """Evaluate on validation and test and log metrics, tables, figures, the annotator and the split."""
    annotator = outcome.annotator
    val, _, _ = evaluate(ctx, annotator, "validation")
    test, test_embedding, test_predicted = evaluate(ctx, annotator, "test")
    trainable = annotator.fitted_parameters
    metrics = {
        **val.prefixed("val"), **test.prefixed("test"),
        "trainable_parameters": trainable, "total_parameters": outcome.total_parameters,
        "trainable_fraction": trainable / max(1, outcome.total_parameters), "runtime_sec": outcome.runtime_sec,
        "peak_rss_mb": outcome.peak_rss_bytes / 2**20, "fit_added_rss_mb": outcome.added_rss_bytes / 2**20,
    }
    if outcome.peak_cuda_bytes is not None:
        metrics["peak_cuda_mb"] = outcome.peak_cuda_bytes / 2**20
    if get_strategy(annotator.strategy).kind == "frozen":
        metrics["embedding_sec"] = ctx.embedding_sec
    if outcome.fit is not None:
        metrics.update(best_epoch=outcome.fit.best_epoch, epochs_run=len(outcome.fit.history))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        annotator_dir = annotator.save(tmp / "annotator")
        metrics["runner_size_bytes"] = sum(f.stat().st_size for f in annotator_dir.iterdir())
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(annotator_dir), "annotator")
        title = f"{annotator.strategy} / {ctx.split.name}"
        figures = tmp / "figures"
        figures.mkdir()
        confusion_figure(test.confusion, figures / "confusion_test.png", f"{title} (test)")
        if umap and umap_figure(test_embedding, ctx.labels[ctx.split.test], test_predicted, figures / "umap_test.png",
                                title, seed=annotator.config.seed) is None:
            log.info("Too few test cells for a UMAP.")
        if outcome.fit is not None:
            curves_figure(pd.DataFrame(outcome.fit.history), figures / "curves.png", title)
        mlflow.log_artifacts(str(figures), "figures")
        tables = tmp / "tables"
        tables.mkdir()
        val.per_class.to_csv(tables / "per_class_validation.csv")
        test.per_class.to_csv(tables / "per_class_test.csv")
        test.confusion.to_csv(tables / "confusion_test.csv")
        if outcome.fit is not None:
            pd.DataFrame(outcome.fit.history).to_csv(tables / "history.csv", index=False)
        mlflow.log_artifacts(str(tables), "tables")
        save_splits([ctx.split], ctx.adata, tmp / "splits", regime=ctx.split.regime, seed=annotator.config.seed)
        mlflow.log_artifacts(str(tmp / "splits"), "splits")
    return metrics


def _log_dataset_input(ctx: TrainingContext) -> None:
    """The dataset as an MLflow input: cell labels (and batches) with the split part, digest-keyed."""
    columns = [c for c in (ctx.info.label_key, ctx.info.batch_key) if c]
    table = ctx.adata.obs[columns].astype(str).reset_index(names="cell")
    table["part"] = ctx.split.part_labels(ctx.adata.n_obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(table, source=ctx.info.source, name=ctx.info.name, targets=ctx.info.label_key)
    mlflow.log_input(dataset, context="training", tags={"split": ctx.split.name})

"""scGPT-style masked-value pretraining of a new small backbone or of a given checkpoint.

Per batch a mask ratio is drawn from ``mask_ratios``; that fraction of each cell's gene tokens
(never ``<cls>`` or padding) get ``mask_value`` as input, and the loss is the mean squared error
of the predicted bins at the masked positions: from the expression decoder on each token's
output, plus (MVC) from the cell embedding with the gene embedding as query, which is what
teaches the ``<cls>`` embedding to summarise the cell.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from scadapt.backbone import ScGPTBackbone, load_backbone, save_backbone
from scadapt.backbone.checkpoint import ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE
from scadapt.data import load_expression
from scadapt.fitting.optim import MAX_NONFINITE_STEPS, Updater
from scadapt.infra.devices import autocast, resolve_device
from scadapt.infra.errors import BudgetSpent, ScadaptError, TrainingDiverged
from scadapt.infra.notices import steps_shown
from scadapt.infra.storage import atomic_write, demo_backbone_dir, writable_dir
from scadapt.jobs.config import PretrainConfig
from scadapt.tokenization import GeneTokenizer, GeneVocab, TokenCache, TokenizedCells
from scadapt.tokenization.batching import length_grouped_batches
from scadapt.tracking import log_params, tracked_run
from scadapt.tracking.contract import (
    BACKBONE_ARTIFACT,
    BACKBONE_HASH_TAG,
    ENTRY_POINT_TAG,
    PRETRAIN_FINGERPRINT_TAG,
    WORKER_TAG,
)
from scadapt.tracking.runs import close_orphaned_runs
from scadapt.tracking.workers import worker_id

log = logging.getLogger(__name__)

STATE_FILE = "pretrain_state.pt"
PRETRAINED_BY_FILE = "pretrained_by.txt"  # the fingerprint of the pretraining job that made the folder's backbone
EVAL_MASK_RATIO = 0.5


@dataclass
class PretrainResult:
    checkpoint_dir: Path
    weights_hash: str
    run_id: str
    val_loss: float
    epoch_losses: list[float] = field(default_factory=list)


@dataclass
class _Corpus:
    """All cells of all datasets, tokenized once, with a fixed validation split."""

    cells: TokenizedCells
    train_idx: np.ndarray
    val_idx: np.ndarray
    gene_means: np.ndarray  # [vocab] mean bin of each gene over the training cells (baseline)


def mask_values(values: Tensor, padding_mask: Tensor, ratio: float, mask_value: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace a ``ratio`` of each cell's gene values with ``mask_value``; return (inputs, mask)."""
    candidates = ~padding_mask
    candidates[:, 0] = False  # <cls>
    mask = (torch.rand(values.shape, generator=generator) < ratio) & candidates
    return values.masked_fill(mask, mask_value), mask


def masked_losses(outputs: dict[str, Tensor], target: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """MSE at masked positions for each decoder: ``expr`` and, if present, ``mvc``."""
    losses = {"expr": torch.nn.functional.mse_loss(outputs["expr_pred"][mask].float(), target[mask])}
    if "mvc_pred" in outputs:
        losses["mvc"] = torch.nn.functional.mse_loss(outputs["mvc_pred"][mask].float(), target[mask])
    return losses


def _concat(parts: list[TokenizedCells]) -> TokenizedCells:
    """Stack tokenized datasets row-wise (their overlaps are logged separately, per dataset)."""
    offsets = np.cumsum([0] + [len(p.gene_ids) for p in parts[:-1]])
    indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=True)])
    return TokenizedCells(
        indptr=indptr,
        gene_ids=np.concatenate([p.gene_ids for p in parts]),
        bins=np.concatenate([p.bins for p in parts]),
        overlap=parts[0].overlap,
    )


def _prepare_corpus(parts: list[TokenizedCells], vocab_size: int, cfg: PretrainConfig) -> _Corpus:
    cells = _concat(parts)
    order = np.random.default_rng(cfg.seed).permutation(cells.n_cells)
    n_val = max(1, int(round(cfg.val_fraction * cells.n_cells)))
    train_idx = order[n_val:]
    rows = np.repeat(np.arange(cells.n_cells), cells.lengths)
    in_train = np.isin(rows, train_idx)
    sums = np.bincount(cells.gene_ids[in_train], weights=cells.bins[in_train], minlength=vocab_size)
    counts = np.bincount(cells.gene_ids[in_train], minlength=vocab_size)
    fallback = float(cells.bins[in_train].mean()) if in_train.any() else 0.0
    gene_means = np.where(counts > 0, sums / np.maximum(counts, 1), fallback).astype(np.float32)
    return _Corpus(cells, train_idx, order[:n_val], gene_means)


def _build_backbone(cfg: PretrainConfig, adatas: list, device: torch.device):
    """(model, vocab, initial hash) from the checkpoint, or a new model over the data's genes."""
    if cfg.checkpoint:
        loaded = load_backbone(cfg.checkpoint, with_decoders=True, device=device)
        return loaded.model, loaded.vocab, loaded.weights_hash
    vocab = GeneVocab.from_genes(g for adata in adatas for g in adata.var_names)
    torch.manual_seed(cfg.seed)
    return ScGPTBackbone(cfg.backbone_config(len(vocab)), pad_id=vocab.pad_id, with_decoders=True).to(device), vocab, None


def _evaluate(model: ScGPTBackbone, tokenizer: GeneTokenizer, corpus: _Corpus, cfg: PretrainConfig, device: torch.device) -> dict[str, float]:
    """Validation MSE per decoder at mask ratio 0.5 with a fixed mask (comparable across epochs),
    and the MSE of predicting each masked gene's mean training bin (a context-free baseline)."""
    model.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    totals: dict[str, float] = {}
    count = 0
    with torch.no_grad():
        for batch_idx in length_grouped_batches(corpus.cells.lengths[corpus.val_idx], cfg.batch_size, None):
            batch = tokenizer.batch(corpus.cells, corpus.val_idx[batch_idx])
            inputs, mask = mask_values(batch["values"], batch["padding_mask"], EVAL_MASK_RATIO, model.config.mask_value, generator)
            n = int(mask.sum())
            if n == 0:
                continue
            with autocast(device):
                out = model.pretraining_outputs(batch["gene_ids"].to(device), inputs.to(device), batch["padding_mask"].to(device))
            losses = masked_losses(out, batch["values"].to(device), mask.to(device))
            baseline = torch.from_numpy(corpus.gene_means[batch["gene_ids"][mask].numpy()])
            losses["gene_mean_baseline"] = torch.nn.functional.mse_loss(baseline, batch["values"][mask])
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value) * n
            count += n
    model.train()
    if count == 0:
        raise ScadaptError("No validation cell has a gene to mask: the pretraining data hold (almost) no expression "
                           "in the vocabulary. Check the matrix (--layer) and the gene names (--gene-column).")
    metrics = {f"val_loss_{name}": total / max(count, 1) for name, total in totals.items()}
    metrics["val_loss"] = metrics["val_loss_expr"] + metrics.get("val_loss_mvc", 0.0)
    return metrics


def _train_epoch(model, tokenizer, corpus: _Corpus, updater: Updater, cfg: PretrainConfig, epoch: int, device, step: int) -> tuple[float, int]:
    """One pass over the training cells; returns (mean loss, global step)."""
    epoch_rng = np.random.default_rng((cfg.seed, epoch))
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout: a resumed epoch replays exactly
    batches = length_grouped_batches(corpus.cells.lengths[corpus.train_idx], cfg.batch_size, epoch_rng)
    running, n_batches, nonfinite = 0.0, 0, 0
    bar = tqdm(batches, desc=f"pretrain epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not steps_shown())
    for batch_idx in bar:
        batch = tokenizer.batch(corpus.cells, corpus.train_idx[batch_idx], epoch=epoch)
        ratio = float(epoch_rng.choice(cfg.mask_ratios))
        inputs, mask = mask_values(batch["values"], batch["padding_mask"], ratio, model.config.mask_value, generator)
        if not mask.any():
            continue
        with autocast(device):
            out = model.pretraining_outputs(batch["gene_ids"].to(device), inputs.to(device), batch["padding_mask"].to(device))
        loss = sum(masked_losses(out, batch["values"].to(device), mask.to(device)).values())
        value = loss.item()
        if not math.isfinite(value):  # skipped once or twice (an fp16 overflow); diverged if it persists
            nonfinite += 1
            if nonfinite >= MAX_NONFINITE_STEPS:
                raise TrainingDiverged.at(value, epoch, n_batches, cfg.lr)
            continue
        nonfinite = 0
        updater.step(loss)
        running, n_batches, step = running + value, n_batches + 1, step + 1
        bar.set_postfix(loss=f"{value:.2f}")
        mlflow.log_metrics({"train_loss": value, "lr": updater.lr}, step=step)
    return running / max(n_batches, 1), step


def _resume(state_path: Path, fingerprint: str, model, updater: Updater, device) -> tuple[int, dict[str, list[float]]]:
    """Restore an interrupted job with the same settings; return (next epoch, history)."""
    if not state_path.is_file():
        return 0, {"train_loss": [], "val_loss": []}
    state = torch.load(state_path, map_location=device, weights_only=True)
    if state.get("fingerprint") != fingerprint:
        log.warning("Ignoring %s: it belongs to a pretraining job with other settings.", state_path)
        return 0, {"train_loss": [], "val_loss": []}
    model.load_state_dict(state["model"])
    updater.load_state_dict(state["updater"])
    log.warning("Resuming interrupted pretraining in %s at epoch %d.", state_path.parent, state["epoch"] + 1)
    return int(state["epoch"]), {k: list(v) for k, v in state["history"].items()}


def _save_resume_state(state_path: Path, fingerprint: str, model, updater: Updater, epoch: int, history) -> None:
    state = {"model": model.state_dict(), "updater": updater.state_dict(), "epoch": epoch,
             "fingerprint": fingerprint, "history": history}
    atomic_write(state_path, lambda handle: torch.save(state, handle))


def _loss_figure(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = range(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], marker="o", label="train")
    ax.plot(epochs, history["val_loss"], marker="s", label=f"validation (mask {EVAL_MASK_RATIO})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked-value MSE (expression + MVC)")
    ax.set_title("Pretraining loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pretrain(cfg: PretrainConfig, deadline: float | None = None) -> PretrainResult:
    """Run masked-value pretraining, log it to MLflow and write a release-format checkpoint.

    ``deadline`` (``time.time()``, from a job's time budget): past it, pretraining stops after the
    epoch it is in, keeps its state for the next run to continue, and raises :class:`BudgetSpent`."""
    if deadline is not None and time.time() >= deadline:
        raise BudgetSpent("The time budget was spent before the demo backbone's pretraining could start.")
    device = resolve_device(cfg.device)
    output_dir = writable_dir(cfg.output_dir or demo_backbone_dir(), "the pretrained backbone", "--output-dir")
    adatas = [load_expression(source, layer=cfg.layer, gene_column=cfg.gene_column) for source in cfg.data]
    model, vocab, init_hash = _build_backbone(cfg, adatas, device)
    tokenizer = GeneTokenizer(
        vocab, n_bins=model.config.n_bins, max_seq_len=model.config.max_seq_len,
        pad_value=model.config.pad_value, min_genes=cfg.min_genes, seed=cfg.seed, cache=TokenCache(),
    )
    parts = [tokenizer.tokenize(adata) for adata in adatas]
    corpus = _prepare_corpus(parts, len(vocab), cfg)
    steps_per_epoch = math.ceil(len(corpus.train_idx) / cfg.batch_size)
    updater = Updater(model.parameters(), cfg.lr, cfg.weight_decay, cfg.warmup_steps, steps_per_epoch * cfg.epochs, device)
    state_path = output_dir / STATE_FILE
    fingerprint = cfg.fingerprint()
    start_epoch, history = _resume(state_path, fingerprint, model, updater, device)

    tags = {ENTRY_POINT_TAG: "pretrain", WORKER_TAG: worker_id(), PRETRAIN_FINGERPRINT_TAG: fingerprint}
    with tracked_run(cfg.experiment, run_name="pretrain", tags=tags) as run:
        for orphan in close_orphaned_runs(run.info.experiment_id, f"tags.`{ENTRY_POINT_TAG}` = 'pretrain'"):
            log.warning("Closed pretraining run %s, whose process was killed (marked FAILED).", orphan.info.run_id)
        params = dict(asdict(model.config))
        params.update({
            "data": ",".join(cfg.data), "layer": cfg.layer, "checkpoint": cfg.checkpoint,
            "init_weights_hash": init_hash, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "warmup_steps": cfg.warmup_steps,
            "mask_ratios": ",".join(map(str, cfg.mask_ratios)), "seed": cfg.seed, "compute_device": str(device),
            "n_cells_train": len(corpus.train_idx), "n_cells_val": len(corpus.val_idx),
            "resumed_from_epoch": start_epoch,
        })
        for source, part in zip(cfg.data, parts, strict=True):
            params[f"gene_overlap.{Path(source).stem}"] = f"{part.overlap.n_matched}/{part.overlap.n_genes}"
        log_params(params)
        mlflow.log_metric("total_parameters", sum(p.numel() for p in model.parameters()))

        started = time.perf_counter()
        step = start_epoch * steps_per_epoch
        model.train()
        for epoch in range(start_epoch, cfg.epochs):
            train_loss, step = _train_epoch(model, tokenizer, corpus, updater, cfg, epoch, device, step)
            val = _evaluate(model, tokenizer, corpus, cfg, device)
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val["val_loss"])
            mlflow.log_metrics({"train_loss_epoch": train_loss, **val}, step=epoch + 1)
            log.info("epoch %d/%d: train loss %.2f, validation loss %.2f (expression decoder %.2f; "
                     "per-gene mean baseline %.2f)", epoch + 1, cfg.epochs, train_loss, val["val_loss"],
                     val["val_loss_expr"], val["val_loss_gene_mean_baseline"])
            _save_resume_state(state_path, fingerprint, model, updater, epoch + 1, history)
            if deadline is not None and time.time() >= deadline and epoch + 1 < cfg.epochs:
                raise BudgetSpent(f"The time budget stopped the demo backbone's pretraining after {epoch + 1} of "
                                  f"{cfg.epochs} epochs; the next run continues it from there.")

        runtime = time.perf_counter() - started
        model.eval()
        final_hash = save_backbone(model, vocab, output_dir)
        (output_dir / PRETRAINED_BY_FILE).write_text(fingerprint + "\n")
        state_path.unlink(missing_ok=True)
        figure = output_dir / "loss_curve.png"
        _loss_figure(history, figure)
        mlflow.log_metrics({"runtime_sec": runtime, "final_val_loss": history["val_loss"][-1]})
        for name in (ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE):
            mlflow.log_artifact(str(output_dir / name), artifact_path=BACKBONE_ARTIFACT)
        mlflow.set_tags({"weights_hash": final_hash, BACKBONE_HASH_TAG: final_hash})  # published: see artifacts.checkpoints
        mlflow.log_artifact(str(figure), artifact_path="figures")
        return PretrainResult(output_dir, final_hash, run.info.run_id, history["val_loss"][-1], history["train_loss"])

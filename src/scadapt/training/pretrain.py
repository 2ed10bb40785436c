"""scGPT-style masked-value pretraining of a new small backbone or a given checkpoint.

Per batch a mask ratio is drawn from ``mask_ratios``; that fraction of each cell's gene tokens
(never ``<cls>`` or padding) get ``mask_value`` as input, and the loss is the mean squared error
of the predicted bins at the masked positions, from the expression decoder on each token's
output and (MVC) from the cell embedding with the gene embedding as query.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from scadapt.backbone import BackboneConfig, ScGPTBackbone, load_backbone, save_backbone
from scadapt.data import load_expression
from scadapt.errors import ScadaptError
from scadapt.tokenization import GeneTokenizer, GeneVocab, TokenCache, TokenizedCells
from scadapt.tokenization.cache import default_cache_dir
from scadapt.tracking import log_params, tracked_run
from scadapt.training.batching import length_grouped_batches
from scadapt.training.devices import autocast, needs_grad_scaler, resolve_device

log = logging.getLogger(__name__)

STATE_FILE = "pretrain_state.pt"


def demo_backbone_dir() -> Path:
    """Where the demo backbone lives when no checkpoint is given (reused by later steps)."""
    return default_cache_dir() / "backbones" / "demo"


@dataclass
class PretrainConfig:
    """Settings of a pretraining job. Model-shape fields apply only to a new backbone."""

    data: tuple[str, ...] = ("pbmc68k_reduced", "pancreas_small")
    layer: str | None = None
    checkpoint: str | None = None
    output_dir: str | None = None
    d_model: int = 64
    nlayers: int = 4
    nhead: int = 4
    d_hid: int = 128
    dropout: float = 0.1
    n_bins: int = 51
    max_seq_len: int = 512
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 30
    mask_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    val_fraction: float = 0.05
    min_genes: int = 100
    seed: int = 0
    device: str = "auto"
    experiment: str = "scadapt-pretrain"

    def __post_init__(self) -> None:
        self.data = tuple(self.data)
        self.mask_ratios = tuple(float(r) for r in self.mask_ratios)
        if not self.data:
            raise ScadaptError("Pretraining needs at least one dataset (data=...).")
        if not all(0.0 < r < 1.0 for r in self.mask_ratios):
            raise ScadaptError(f"mask_ratios must lie strictly between 0 and 1, got {self.mask_ratios}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise ScadaptError("epochs and batch_size must be at least 1.")

    def fingerprint(self) -> str:
        """Identifies the job for resuming: everything but where it runs and logs."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("device", "experiment", "output_dir")}
        return hashlib.blake2b(json.dumps(keep, sort_keys=True).encode(), digest_size=12).hexdigest()


@dataclass
class PretrainResult:
    checkpoint_dir: Path
    weights_hash: str
    run_id: str
    val_loss: float
    epoch_losses: list[float] = field(default_factory=list)


def mask_values(values: Tensor, padding_mask: Tensor, ratio: float, mask_value: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace a ``ratio`` of each cell's gene values with ``mask_value``; return (inputs, mask)."""
    candidates = ~padding_mask
    candidates[:, 0] = False  # <cls>
    draw = torch.rand(values.shape, generator=generator) < ratio
    mask = draw & candidates
    return values.masked_fill(mask, mask_value), mask


def masked_loss(outputs: dict[str, Tensor], target: Tensor, mask: Tensor) -> Tensor:
    loss = torch.nn.functional.mse_loss(outputs["expr_pred"][mask].float(), target[mask])
    if "mvc_pred" in outputs:
        loss = loss + torch.nn.functional.mse_loss(outputs["mvc_pred"][mask].float(), target[mask])
    return loss


def _concat(parts: list[TokenizedCells]) -> TokenizedCells:
    offsets = np.cumsum([0] + [len(p.gene_ids) for p in parts[:-1]])
    indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + off for p, off in zip(parts, offsets)])
    return TokenizedCells(
        indptr=indptr,
        gene_ids=np.concatenate([p.gene_ids for p in parts]),
        bins=np.concatenate([p.bins for p in parts]),
        overlap=parts[0].overlap,
    )


def _build_backbone(cfg: PretrainConfig, adatas: list, device: torch.device):
    """(model, vocab, initial hash) from the checkpoint, or a new model over the data's genes."""
    if cfg.checkpoint:
        loaded = load_backbone(cfg.checkpoint, with_decoders=True, device=device)
        return loaded.model, loaded.vocab, loaded.weights_hash
    vocab = GeneVocab.from_genes(g for adata in adatas for g in adata.var_names)
    bcfg = BackboneConfig(
        vocab_size=len(vocab), d_model=cfg.d_model, nhead=cfg.nhead, d_hid=cfg.d_hid,
        nlayers=cfg.nlayers, dropout=cfg.dropout, n_bins=cfg.n_bins, max_seq_len=cfg.max_seq_len,
    )
    torch.manual_seed(cfg.seed)
    return ScGPTBackbone(bcfg, pad_id=vocab.pad_id, with_decoders=True).to(device), vocab, None


def _evaluate(model, tokenizer, cells, indices, cfg, device) -> float:
    """Masked-value loss at ratio 0.5 with a fixed mask, so epochs are comparable."""
    model.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch_idx in length_grouped_batches(cells.lengths[indices], cfg.batch_size, None):
            batch = tokenizer.batch(cells, indices[batch_idx])
            inputs, mask = mask_values(batch["values"], batch["padding_mask"], 0.5, model.config.mask_value, generator)
            with autocast(device):
                out = model.pretraining_outputs(batch["gene_ids"].to(device), inputs.to(device), batch["padding_mask"].to(device))
            if mask.any():
                total += float(masked_loss(out, batch["values"].to(device), mask.to(device))) * int(mask.sum())
                count += int(mask.sum())
    model.train()
    return total / max(count, 1)


def _save_state(path: Path, model, optimizer, scheduler, epoch: int, fingerprint: str, history: list[float]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": epoch, "fingerprint": fingerprint, "history": history,
    }, tmp)
    os.replace(tmp, path)


def _loss_figure(epoch_losses: list[float], val_losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = range(1, len(epoch_losses) + 1)
    ax.plot(epochs, epoch_losses, marker="o", label="train")
    ax.plot(epochs, val_losses, marker="s", label="validation (mask 0.5)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked-value MSE")
    ax.set_title("Pretraining loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Run masked-value pretraining, log it to MLflow and write a release-format checkpoint."""
    device = resolve_device(cfg.device)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else demo_backbone_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    adatas = [load_expression(source) for source in cfg.data]
    model, vocab, init_hash = _build_backbone(cfg, adatas, device)
    tokenizer = GeneTokenizer(
        vocab, n_bins=model.config.n_bins, max_seq_len=model.config.max_seq_len,
        pad_value=model.config.pad_value, min_genes=cfg.min_genes, seed=cfg.seed, cache=TokenCache(),
    )
    parts = [tokenizer.tokenize(adata, layer=cfg.layer) for adata in adatas]
    cells = _concat(parts)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(cells.n_cells)
    n_val = max(1, int(round(cfg.val_fraction * cells.n_cells)))
    val_idx, train_idx = order[:n_val], order[n_val:]

    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def schedule(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device) else None

    state_path = output_dir / STATE_FILE
    fingerprint = cfg.fingerprint()
    start_epoch, epoch_losses, val_losses = 0, [], []
    if state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch = int(state["epoch"])
            epoch_losses = list(state["history"][0])
            val_losses = list(state["history"][1])
            log.warning("Resuming interrupted pretraining in %s at epoch %d.", output_dir, start_epoch + 1)
        else:
            log.warning("Ignoring %s: it belongs to a pretraining job with other settings.", state_path)

    n_params = sum(p.numel() for p in model.parameters())
    with tracked_run(cfg.experiment, run_name="pretrain", tags={"scadapt.entry_point": "pretrain"}) as run:
        params = {k: v for k, v in asdict(model.config).items()}
        params.update({
            "data": ",".join(cfg.data), "layer": cfg.layer, "checkpoint": cfg.checkpoint,
            "init_weights_hash": init_hash, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "warmup_steps": cfg.warmup_steps,
            "mask_ratios": ",".join(map(str, cfg.mask_ratios)), "seed": cfg.seed, "compute_device": str(device),
            "n_cells_train": len(train_idx), "n_cells_val": len(val_idx),
            "resumed_from_epoch": start_epoch,
        })
        for source, part in zip(cfg.data, parts):
            params[f"gene_overlap.{Path(source).stem}"] = f"{part.overlap.n_matched}/{part.overlap.n_genes}"
        log_params(params)
        mlflow.log_metric("total_parameters", n_params)

        started = time.perf_counter()
        step = start_epoch * steps_per_epoch
        model.train()
        for epoch in range(start_epoch, cfg.epochs):
            epoch_rng = np.random.default_rng((cfg.seed, epoch))
            generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout: a resumed epoch replays exactly
            batches = length_grouped_batches(cells.lengths[train_idx], cfg.batch_size, epoch_rng)
            running, n_batches = 0.0, 0
            bar = tqdm(batches, desc=f"pretrain epoch {epoch + 1}/{cfg.epochs}", leave=False)
            for batch_idx in bar:
                batch = tokenizer.batch(cells, train_idx[batch_idx], epoch=epoch)
                ratio = float(epoch_rng.choice(cfg.mask_ratios))
                inputs, mask = mask_values(batch["values"], batch["padding_mask"], ratio, model.config.mask_value, generator)
                if not mask.any():
                    continue
                with autocast(device):
                    out = model.pretraining_outputs(batch["gene_ids"].to(device), inputs.to(device), batch["padding_mask"].to(device))
                loss = masked_loss(out, batch["values"].to(device), mask.to(device))
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                value = loss.item()
                running += value
                n_batches += 1
                step += 1
                bar.set_postfix(loss=f"{value:.3f}")
                mlflow.log_metrics({"train_loss": value, "lr": scheduler.get_last_lr()[0]}, step=step)
            epoch_losses.append(running / max(n_batches, 1))
            val_losses.append(_evaluate(model, tokenizer, cells, val_idx, cfg, device))
            mlflow.log_metrics({"train_loss_epoch": epoch_losses[-1], "val_loss": val_losses[-1]}, step=epoch + 1)
            log.info("epoch %d/%d: train loss %.4f, validation loss %.4f", epoch + 1, cfg.epochs, epoch_losses[-1], val_losses[-1])
            _save_state(state_path, model, optimizer, scheduler, epoch + 1, fingerprint, [epoch_losses, val_losses])

        runtime = time.perf_counter() - started
        model.eval()
        final_hash = save_backbone(model, vocab, output_dir)
        state_path.unlink(missing_ok=True)
        figure = output_dir / "loss_curve.png"
        _loss_figure(epoch_losses, val_losses, figure)
        mlflow.log_metrics({"runtime_sec": runtime, "final_val_loss": val_losses[-1]})
        mlflow.set_tag("weights_hash", final_hash)
        for name in ("args.json", "vocab.json", "best_model.pt"):
            mlflow.log_artifact(str(output_dir / name), artifact_path="backbone")
        mlflow.log_artifact(str(figure), artifact_path="figures")
        return PretrainResult(output_dir, final_hash, run.info.run_id, val_losses[-1], epoch_losses)

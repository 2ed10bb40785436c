"""Speed and memory of every strategy, with ``full`` fine-tuning as the reference.

Run:  python benchmarks/strategies.py  [--part pbmc human epochs budget] [--epochs 3] [--seq-len 512]

Each measurement runs in a fresh subprocess, so one strategy's memory never counts towards
another's peak.

1. ``pbmc``: the bundled PBMC data (``pbmc68k_reduced``, full regime, fold 0) with the demo
   backbone (``scadapt pretrain`` makes it), through ``fit_strategy`` exactly as ``train`` runs it,
   for ``--epochs`` epochs. Seconds per epoch include the validation pass; ``head`` and
   ``frozen_probe`` first embed every cell once (reported separately).
2. ``human``: the whole-human scGPT shapes (``args.json`` + ``vocab.json``; random weights), a
   batch of ``--batch-size`` cells x ``--seq-len`` tokens, ``--steps`` timed training steps after
   one warm-up step. The optimiser state is measured from AdamW itself after the steps. ``head``
   embeds the batch once and then trains the head only; a strategy's training hooks (``adalora``'s
   orthogonality term and rank reallocation) run in every step. (The expression baselines and
   ``frozen_probe`` do not train through the backbone and are left out here.)
3. ``epochs``: whole epochs of the shared training loop at the same shapes, ``--cells`` cells of
   ``--seq-len`` tokens, for ``full`` and every injected strategy with the top ``--layers`` layers
   adapted (the frozen layers below run once per cell).
4. ``budget``: one epoch of the shared training loop within a memory budget (``--budgets``, GB),
   whole-human shapes, ``--budget-cells`` training cells of ``--budget-seq-len`` tokens in one
   optimisation batch of as many cells (micro-batches and accumulated gradients as the budget
   asks), and a few validation cells: seconds per epoch and the memory the fit added (peak RSS
   above the level before it, frozen-layer outputs, gradients and optimiser state included),
   for ``full``, every injected strategy with its default top layers adapted, and ``lora`` on all
   layers; without a budget, within each budget with activation checkpointing as needed, and
   within the smallest budget with checkpointing always on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backbone import _full_length_cells, make_checkpoint  # noqa: E402  (benchmarks/backbone.py)

N_CLASSES = 10


def human_strategies() -> list[str]:
    """``head`` and every strategy trained through the backbone."""
    from scadapt.strategies import NAMES, get_strategy
    from scadapt.strategies.families import AdaptedStrategy, HeadStrategy

    return [name for name in NAMES if issubclass(get_strategy(name), (AdaptedStrategy, HeadStrategy))]


def pbmc_worker(strategy: str, epochs: int, device: str) -> dict:
    from scadapt.jobs.config import TrainJob
    from scadapt.jobs.context import prepare
    from scadapt.jobs.fit import fit_strategy
    from scadapt.strategies import get_strategy
    from scadapt.strategies.base import TorchConfig

    cls = get_strategy(strategy)
    ctx = prepare(TrainJob(data="pbmc68k_reduced", strategy=strategy, device=device, progress=False, umap=False))
    params = {"seed": 0}
    if issubclass(cls.config_class, TorchConfig):
        params.update(epochs=epochs, patience=epochs)
    outcome = fit_strategy(ctx, ctx.method.with_config(cls.config_class.from_params(params)), progress=False)
    epoch_sec = [row["epoch_sec"] for row in outcome.fit.history] if outcome.fit else []
    return {
        "runtime_sec": outcome.runtime_sec, "embedding_sec": ctx.embedding_sec,
        "sec_per_epoch": statistics.median(epoch_sec) if epoch_sec else None, "epochs": len(epoch_sec),
        "trainable": outcome.annotator.fitted_parameters, "total": outcome.total_parameters,
        "peak_rss_bytes": outcome.peak_rss_bytes, "added_rss_bytes": outcome.added_rss_bytes,
        "peak_cuda_bytes": outcome.peak_cuda_bytes, "n_train": len(ctx.split.train),
    }


def human_worker(strategy: str, ckpt: Path, batch_size: int, seq_len: int, steps: int, device: str) -> dict:
    import torch.nn.functional as F

    from scadapt.backbone import load_backbone
    from scadapt.fitting.classifier import TrainingHooks
    from scadapt.fitting.optim import Updater
    from scadapt.infra.devices import autocast, resolve_device
    from scadapt.strategies import get_strategy
    from scadapt.tokenization import GeneVocab
    from scadapt.tracking.resources import PeakRSS, cuda_peak_bytes

    dev = resolve_device(device)
    vocab = GeneVocab.from_file(ckpt / "vocab.json")
    ids, values = _full_length_cells(np.random.default_rng(0), vocab, batch_size, seq_len)
    ids, values = torch.from_numpy(ids).long().to(dev), torch.from_numpy(values).to(dev)
    labels = torch.from_numpy(np.arange(batch_size) % N_CLASSES).to(dev)
    backbone = load_backbone(ckpt, with_decoders=False, device=dev).model
    cls = get_strategy(strategy)
    config = cls.config_class.from_params({"seed": 0})
    model = cls(config).build_model(backbone, N_CLASSES).to(dev)
    hooks = cls.hooks(model, config, steps + 1) if hasattr(cls, "hooks") else TrainingHooks()
    trainable = [p for p in model.parameters() if p.requires_grad]
    updater = Updater(trainable, config.lr, config.weight_decay, 1, steps + 1, dev, clip_norm=config.max_grad_norm)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    result: dict = {}
    with PeakRSS() as peak:
        if strategy == "head":  # the one embedding pass, then head-only steps on the embeddings
            started = time.perf_counter()
            model.eval()
            with torch.inference_mode(), autocast(dev):
                embeddings = model.backbone(ids, values, None).float()
            result["embedding_sec"] = time.perf_counter() - started
            embeddings = embeddings.clone()

            def forward():
                return model.head(embeddings)
        else:
            model.train()

            def forward():
                with autocast(dev):
                    return model(ids, values, None)

        durations = []
        for step in range(steps + 1):
            started = time.perf_counter()
            loss = F.cross_entropy(forward().float(), labels)
            updater.step(loss + hooks.extra_loss() if hooks.extra_loss else loss)
            if hooks.after_update:
                hooks.after_update(updater.steps_done)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if step:  # the first step is a warm-up (allocations, kernel selection)
                durations.append(time.perf_counter() - started)
    optimizer_bytes = sum(t.nbytes for state in updater.optimizer.state.values() for t in state.values()
                          if torch.is_tensor(t) and t.dim() > 0)
    return {
        **result, "sec_per_step": statistics.median(durations), "trainable": sum(p.numel() for p in trainable),
        "total": sum(p.numel() for p in model.parameters()), "optimizer_bytes": optimizer_bytes,
        "grad_bytes": sum(p.grad.nbytes for p in trainable if p.grad is not None),
        "peak_rss_bytes": peak.peak_bytes, "added_rss_bytes": peak.added_bytes,
        "peak_cuda_bytes": cuda_peak_bytes(dev),
    }


def epochs_worker(strategy: str, layers: int, ckpt: Path, args: argparse.Namespace) -> dict:
    """``--epochs`` epochs of the shared training loop on ``--cells`` synthetic cells of ``--seq-len``
    tokens (a fifth of them for validation), as ``fit`` runs them: frozen layers below the adapted
    ones run once per cell (:mod:`scadapt.fitting.frozen_layers`)."""
    from scadapt.backbone import load_backbone
    from scadapt.fitting.classifier import fit_classifier
    from scadapt.fitting.frozen_layers import FrozenLayerCache
    from scadapt.fitting.sources import TokenSource
    from scadapt.infra.devices import resolve_device
    from scadapt.strategies import get_strategy
    from scadapt.tokenization import GeneTokenizer, GeneVocab, TokenizedCells
    from scadapt.tokenization.tokenizer import GeneOverlap
    from scadapt.tracking.resources import PeakRSS

    dev = resolve_device(args.device)
    vocab = GeneVocab.from_file(ckpt / "vocab.json")
    rng = np.random.default_rng(0)
    ids, _ = _full_length_cells(rng, vocab, args.cells, args.seq_len)
    n_genes = args.seq_len - 1
    cells = TokenizedCells(np.arange(args.cells + 1) * n_genes, ids[:, 1:].ravel().astype(np.int64),
                           rng.integers(1, 51, args.cells * n_genes).astype(np.float32),
                           GeneOverlap(n_genes, n_genes, []))
    tokenizer = GeneTokenizer(vocab, max_seq_len=args.seq_len)
    codes = np.arange(args.cells) % N_CLASSES
    train, validation = np.arange(args.cells - args.cells // 5), np.arange(args.cells - args.cells // 5, args.cells)
    cls = get_strategy(strategy)
    params = {"seed": 0, "epochs": args.epochs, "patience": args.epochs, "batch_size": args.batch_size}
    if layers >= 0:
        params["layers"] = layers
    config = cls.config_class.from_params(params)
    model = cls(config).build_model(load_backbone(ckpt, with_decoders=False, device=dev).model, N_CLASSES).to(dev)
    with PeakRSS() as peak:
        frozen = FrozenLayerCache.for_model(model.backbone, tokenizer, cells, dev)
        fit = fit_classifier(TokenSource(model, tokenizer, cells, dev, frozen), codes, train, validation, N_CLASSES,
                             config, dev, progress=False, hooks=cls.hooks(model, config, -(-len(train) // args.batch_size) * args.epochs))
    epoch_sec = [row["epoch_sec"] for row in fit.history]
    return {"epoch_sec": epoch_sec, "frozen_depth": frozen.depth if frozen else 0,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "added_rss_bytes": peak.added_bytes, "kept_bytes": frozen.kept_bytes if frozen else 0}


def budget_worker(strategy: str, layers: int, ckpt: Path, args: argparse.Namespace) -> dict:
    """One epoch of ``--budget-cells`` cells of ``--budget-seq-len`` tokens in one optimisation batch
    within the budget ``args.budget`` (GB; 0: none), checkpointing ``args.checkpointing``."""
    from scadapt.backbone import load_backbone
    from scadapt.fitting.classifier import fit_classifier
    from scadapt.fitting.frozen_layers import FrozenLayerCache
    from scadapt.fitting.memory import MemoryBudget
    from scadapt.fitting.sources import TokenSource
    from scadapt.infra.devices import resolve_device
    from scadapt.strategies import get_strategy
    from scadapt.tokenization import GeneTokenizer, GeneVocab, TokenizedCells
    from scadapt.tokenization.tokenizer import GeneOverlap
    from scadapt.tracking.resources import PeakRSS, cuda_peak_bytes

    dev = resolve_device(args.device)
    vocab = GeneVocab.from_file(ckpt / "vocab.json")
    rng = np.random.default_rng(0)
    n_train, n_val, length = args.budget_cells, 4, args.budget_seq_len
    ids, _ = _full_length_cells(rng, vocab, n_train + n_val, length)
    n_genes = length - 1
    cells = TokenizedCells(np.arange(n_train + n_val + 1) * n_genes, ids[:, 1:].ravel().astype(np.int64),
                           rng.integers(1, 51, (n_train + n_val) * n_genes).astype(np.float32),
                           GeneOverlap(n_genes, n_genes, []))
    tokenizer = GeneTokenizer(vocab, max_seq_len=length)
    codes = np.arange(n_train + n_val) % N_CLASSES
    train, validation = np.arange(n_train), np.arange(n_train, n_train + n_val)
    cls = get_strategy(strategy)
    params = {"seed": 0, "epochs": 1, "patience": 1, "batch_size": n_train}
    if layers >= 0:
        params["layers"] = layers
    config = cls.config_class.from_params(params)
    model = cls(config).build_model(load_backbone(ckpt, with_decoders=False, device=dev).model, N_CLASSES).to(dev)
    # no budget: one larger than the machine, so that the plan runs whole batches (as every fit plans)
    budget = MemoryBudget(int(args.budget * 2**30) if args.budget else 2**40, f"{args.budget:g} GB")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with PeakRSS() as peak:
        frozen = FrozenLayerCache.for_model(model.backbone, tokenizer, cells, dev,
                                            limit=budget.bytes // 2 if budget else None)
        source = TokenSource(model, tokenizer, cells, dev, frozen, budget=budget, checkpointing=args.checkpointing)
        fit = fit_classifier(source, codes, train, validation, N_CLASSES, config, dev, progress=False,
                             hooks=cls.hooks(model, config, 1))
    return {"epoch_sec": fit.history[0]["epoch_sec"], "added_rss_bytes": peak.added_bytes,
            "peak_cuda_bytes": cuda_peak_bytes(dev), "max_tokens": fit.plan.max_tokens,
            "checkpointing": fit.plan.checkpointing, "planned_bytes": fit.plan.estimate_bytes,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "layers": config.layers if hasattr(config, "layers") else None}


def run_worker(args: argparse.Namespace, part: str, strategy: str, tmp: Path, ckpt: Path | None,
               layers: int = -1, budget: float = 0.0, checkpointing: str = "auto") -> dict:
    out = (args.keep or tmp) / f"{part}-{strategy}-{layers}-{budget}-{checkpointing}.json"
    if args.keep and out.exists():  # measured by an earlier call
        return json.loads(out.read_text())
    cmd = [sys.executable, __file__, "--worker", part, strategy, str(out), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--steps", str(args.steps),
           "--device", args.device, "--checkpoint", str(ckpt or ""), "--cells", str(args.cells),
           "--layers", str(layers), "--budget", str(budget), "--checkpointing", checkpointing,
           "--budget-cells", str(args.budget_cells), "--budget-seq-len", str(args.budget_seq_len)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def _ratio(value, reference) -> str:
    return f"{value / reference:.3f}x" if value is not None and reference else "-"


def _mb(n) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def report_pbmc(rows: dict[str, dict]) -> None:
    ref = rows.get("full", {})
    print("\n### PBMC (pbmc68k_reduced, demo backbone)\n")
    print(f"{rows[next(iter(rows))]['n_train']} training cells. Ratios are against `full` in the same run.\n")
    print("| strategy | trainable params | one embedding pass (s) | s / epoch | epoch vs full | total fit (s) "
          "| peak RSS (MB) | added by the fit (MB) | added vs full |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        epoch = "-" if r["sec_per_epoch"] is None else f"{r['sec_per_epoch']:.3f}"
        embed = f"{r['embedding_sec']:.2f}" if r["embedding_sec"] else "-"
        print(f"| {name} | {r['trainable']:,} | {embed} | {epoch} | {_ratio(r['sec_per_epoch'], ref.get('sec_per_epoch'))} "
              f"| {r['runtime_sec']:.2f} | {_mb(r['peak_rss_bytes'])} | {_mb(r['added_rss_bytes'])} "
              f"| {_ratio(r['added_rss_bytes'], ref.get('added_rss_bytes'))} |")


def report_human(rows: dict[str, dict], args: argparse.Namespace) -> None:
    ref = rows.get("full", {})
    print(f"\n### Whole-human shapes (random weights; {args.batch_size} cells x {args.seq_len} tokens per step)\n")
    print("| strategy | trainable params | s / step | step vs full | AdamW state (MB) | gradients (MB) "
          "| optimiser + gradients vs full | added RSS in the steps (MB) | peak CUDA (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        both, ref_both = r["optimizer_bytes"] + r["grad_bytes"], ref.get("optimizer_bytes", 0) + ref.get("grad_bytes", 0)
        step = f"{r['sec_per_step']:.4f}" + (f" (+{r['embedding_sec']:.2f} s embedding)" if "embedding_sec" in r else "")
        print(f"| {name} | {r['trainable']:,} | {step} | {_ratio(r['sec_per_step'], ref.get('sec_per_step'))} "
              f"| {_mb(r['optimizer_bytes'])} | {_mb(r['grad_bytes'])} | {_ratio(both, ref_both)} "
              f"| {_mb(r['added_rss_bytes'])} | {_mb(r['peak_cuda_bytes'])} |")


def report_epochs(rows: dict[tuple[str, int], dict], args: argparse.Namespace) -> None:
    ref = statistics.mean(rows["full", -1]["epoch_sec"])
    n_val = args.cells // 5
    print(f"\n### Epochs at whole-human shapes ({args.cells - n_val} training + {n_val} validation cells x "
          f"{args.seq_len} tokens, batch {args.batch_size}, {args.epochs} epochs)\n")
    print("Ratios are mean seconds per epoch against `full` in the same run. The first epoch runs the frozen "
          "layers and keeps their outputs; later epochs start from them.\n")
    print("| strategy | adapted layers | trainable params | first epoch (s) | later epochs, median (s) "
          "| mean epoch (s) | mean epoch vs full | later epochs vs full | kept outputs (MB) | added RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ref_later = statistics.median(rows["full", -1]["epoch_sec"][1:])
    for (name, layers), r in rows.items():
        sec = r["epoch_sec"]
        later, mean = statistics.median(sec[1:]), statistics.mean(sec)
        adapted = "all" if layers <= 0 else f"top {layers}"
        print(f"| {name} | {adapted} | {r['trainable']:,} | {sec[0]:.2f} | {later:.2f} | {mean:.2f} "
              f"| {_ratio(mean, ref)} | {_ratio(later, ref_later)} | {_mb(r['kept_bytes'])} "
              f"| {_mb(r['added_rss_bytes'])} |")


def report_budget(rows: dict[tuple, dict], args: argparse.Namespace) -> None:
    print(f"\n### Within a memory budget (whole-human shapes, {args.budget_cells} cells x {args.budget_seq_len} "
          f"tokens in one optimisation batch, one epoch)\n")
    print("Added: the fit's peak resident memory above the level before it (frozen-layer outputs, gradients and "
          "optimiser state included). Ratios are seconds per epoch against the same strategy without a budget.\n")
    print("| strategy | adapted layers | budget | checkpointing | micro-batch tokens | planned (MB) | added (MB) "
          "| within budget | s / epoch | vs no budget |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, layers, budget, mode), r in rows.items():
        ref = rows[name, layers, 0.0, "off"]["epoch_sec"]
        adapted = "all" if r["layers"] in (None, 0) else f"top {r['layers']}"
        within = "-" if not budget else ("yes" if r["added_rss_bytes"] <= budget * 2**30 else "NO")
        print(f"| {name} | {adapted} | {f'{budget:g} GB' if budget else 'none'} | "
              f"{'on' if r['checkpointing'] else 'off'}{' (forced)' if mode == 'on' else ''} "
              f"| {r['max_tokens'] or 'whole batch'} | {_mb(r['planned_bytes']) if budget else '-'} "
              f"| {_mb(r['added_rss_bytes'])} | {within} | {r['epoch_sec']:.1f} | {_ratio(r['epoch_sec'], ref)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=["pbmc", "human", "epochs", "budget"],
                        default=["pbmc", "human", "epochs"])
    parser.add_argument("--epochs", type=int, default=3, help="pbmc: epochs per strategy")
    parser.add_argument("--reference-dir", type=Path, default=HERE.parent / "tests/data/scgpt_human")
    parser.add_argument("--batch-size", type=int, default=4, help="human: cells per step")
    parser.add_argument("--seq-len", type=int, default=512, help="human: tokens per cell (scGPT's cap is 1200)")
    parser.add_argument("--steps", type=int, default=3, help="human: timed steps after one warm-up step")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--cells", type=int, default=40, help="epochs: cells (a fifth for validation)")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4],
                        help="epochs: top layers adapted by the injected strategies (0: all)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[4, 8, 16], help="budget: GB")
    parser.add_argument("--budget-cells", type=int, default=32, help="budget: cells per optimisation batch")
    parser.add_argument("--budget-seq-len", type=int, default=1200, help="budget: tokens per cell")
    parser.add_argument("--budget-strategies", nargs="+", default=None, help="budget: these only")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each measurement in this folder and reuse it on the next call (resumable)")
    parser.add_argument("--budget", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("PART", "STRATEGY", "OUT"))
    args = parser.parse_args()
    if args.worker:
        part, strategy, out = args.worker
        if part == "pbmc":
            result = pbmc_worker(strategy, args.epochs, args.device)
        elif part == "epochs":
            result = epochs_worker(strategy, args.layers[0], Path(args.checkpoint), args)
        elif part == "budget":
            result = budget_worker(strategy, args.layers[0], Path(args.checkpoint), args)
        else:
            result = human_worker(strategy, Path(args.checkpoint), args.batch_size, args.seq_len, args.steps, args.device)
        Path(out).write_text(json.dumps(result))
        return

    from scadapt.strategies import NAMES

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")  # never the repo's store
        results: dict[str, dict[str, dict]] = {}
        if "pbmc" in args.part:
            results["pbmc"] = {}
            for strategy in ["full", *[s for s in NAMES if s != "full"]]:
                print(f"pbmc / {strategy} ...", flush=True)
                results["pbmc"][strategy] = run_worker(args, "pbmc", strategy, tmp, None)
        ckpt = tmp / "ckpt"
        if {"human", "epochs", "budget"} & set(args.part):
            make_checkpoint(args.reference_dir, ckpt)
        if "epochs" in args.part:
            results["epochs"] = {("full", -1): run_worker(args, "epochs", "full", tmp, ckpt)}
            for strategy in human_strategies():
                if strategy in ("full", "head"):
                    continue
                for layers in args.layers:
                    print(f"epochs / {strategy} / layers {layers} ...", flush=True)
                    results["epochs"][strategy, layers] = run_worker(args, "epochs", strategy, tmp, ckpt, layers)
        if "budget" in args.part:
            results["budget"] = {}
            chosen = [("full", -1), *[(s, -1) for s in human_strategies() if s not in ("full", "head")], ("lora", 0)]
            for strategy, layers in chosen:
                if args.budget_strategies and strategy not in args.budget_strategies:
                    continue
                for budget, mode in [(0.0, "off"), *[(b, "auto") for b in args.budgets], (min(args.budgets), "on")]:
                    print(f"budget / {strategy} / layers {layers} / {budget:g} GB / checkpointing {mode} ...", flush=True)
                    results["budget"][strategy, layers, budget, mode] = run_worker(
                        args, "budget", strategy, tmp, ckpt, layers, budget, mode)
        if "human" in args.part:
            results["human"] = {}
            for strategy in ["full", *[s for s in human_strategies() if s != "full"]]:
                print(f"human / {strategy} ...", flush=True)
                results["human"][strategy] = run_worker(args, "human", strategy, tmp, ckpt)

    device = "cuda: " + torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else \
        f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"\n{device}, torch {torch.__version__}, {date.today()}")
    if "pbmc" in results:
        report_pbmc(results["pbmc"])
    if "human" in results:
        report_human(results["human"], args)
    if "epochs" in results:
        report_epochs(results["epochs"], args)
    if "budget" in results:
        report_budget(results["budget"], args)


if __name__ == "__main__":
    main()

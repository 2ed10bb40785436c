"""Backbone speed and memory against the reference scGPT implementation, at whole-human shapes.

Run:  python benchmarks/backbone.py  [--reference-dir tests/data/scgpt_human]

Needs ``pip install --no-deps scgpt==0.2.4`` (the reference) and the whole-human ``args.json`` and
``vocab.json``. Weights are random (saved in the release format and loaded by both
implementations), so outputs can be compared exactly. Each measurement runs in a fresh
subprocess, so one's memory never counts towards another's peak.

1. Embedding, two inputs: ``embed`` = 64 real pancreas cells (bundled data, whole-human
   vocabulary; its 2,000 variable genes give 30-600 tokens per cell), and ``embed_full`` = 64
   cells x 1200 tokens (a full-transcriptome cell at scGPT's length cap).
   Reference: scGPT's own path (``_encode`` on one padded batch of 64, as ``embed_data`` does).
   Ours: the ``embed_cells`` path (length-grouped batches, CLS-only last layer).
2. One full fine-tuning step (forward, backward, AdamW) on 8 cells x 1200 tokens, dropout 0.2,
   with a 3-layer classifier head on the CLS embedding.

Every side gets one warm-up call, then the median of ``--repeats`` timed calls (fine-tuning: of
steps on the same batch). The physical limit: this machine's matrix-multiply peak (GFLOP/s of a
large ``torch.mm``, float32 and bfloat16), and each embedding's achieved GFLOP/s (the floating-point
work of the forward each implementation actually runs, counted from the shapes) as a fraction of
it. ``ours_bf16`` is our path under ``SCADAPT_PRECISION=bf16``, against the bfloat16 peak.
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
sys.path.insert(0, str(HERE.parent / "tests"))

from results_table import print_table  # noqa: E402  (benchmarks/results_table.py)

N_CLASSES = 10


def make_checkpoint(reference_dir: Path, out: Path) -> None:
    from scadapt.backbone import BackboneConfig, ScGPTBackbone, save_backbone
    from scadapt.tokenization import GeneVocab

    args = json.loads((reference_dir / "args.json").read_text())
    vocab = GeneVocab.from_file(reference_dir / "vocab.json")
    config = BackboneConfig.from_args(args, vocab_size=len(vocab))
    torch.manual_seed(0)
    model = ScGPTBackbone(config, pad_id=vocab[config.pad_token], with_decoders=True)
    save_backbone(model, vocab, out)
    print(f"whole-human checkpoint: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")


def make_inputs(ckpt: Path, out: Path, n_embed: int, n_train: int, train_len: int) -> dict:
    from scadapt.data import load_expression
    from scadapt.tokenization import GeneTokenizer, GeneVocab

    vocab = GeneVocab.from_file(ckpt / "vocab.json")
    tokenizer = GeneTokenizer(vocab, max_seq_len=1200, min_genes=100, seed=0)
    adata = load_expression("pancreas_small")
    cells = tokenizer.tokenize(adata)
    chosen = np.random.default_rng(0).permutation(cells.n_cells)[:n_embed]
    embed = tokenizer.batch(cells, chosen)
    rng = np.random.default_rng(1)
    train_ids, train_values = _full_length_cells(rng, vocab, n_train, train_len)
    full_ids, full_values = _full_length_cells(rng, vocab, n_embed, 1200)
    np.savez(
        out, embed_ids=embed["gene_ids"].numpy(), embed_values=embed["values"].numpy(),
        embed_mask=embed["padding_mask"].numpy(),
        embed_full_ids=full_ids, embed_full_values=full_values, embed_full_mask=np.zeros(full_ids.shape, bool),
        train_ids=train_ids, train_values=train_values, train_labels=rng.integers(0, N_CLASSES, n_train),
    )
    lengths = (~embed["padding_mask"]).sum(1).numpy()
    return {"tokens_mean": float(lengths.mean()), "tokens_min": int(lengths.min()), "tokens_max": int(lengths.max())}


def _full_length_cells(rng, vocab, n_cells: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``<cls>`` + ``length - 1`` distinct random genes with random bins per cell."""
    genes = np.stack([rng.choice(len(vocab) - 3, length - 1, replace=False) for _ in range(n_cells)])
    ids = np.concatenate([np.full((n_cells, 1), vocab.cls_id), genes], axis=1)
    values = np.concatenate([np.zeros((n_cells, 1)), rng.integers(1, 51, genes.shape)], axis=1)
    return ids, values.astype(np.float32)


def _head(d: int) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for _ in range(2):
        layers += [torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.LayerNorm(d)]
    return torch.nn.Sequential(*layers, torch.nn.Linear(d, N_CLASSES))


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` matrix product in ``dtype`` (median of ``repeats`` after a warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        durations.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(durations) / 1e9


def forward_flops(d: int, d_hid: int, n_layers: int, lengths: list[int], cls_only_last: bool) -> float:
    """Floating-point operations (2 per multiply-add) of the encoder forward over cells padded to
    ``lengths`` tokens: value encoder, projections, attention products and FFN; with
    ``cls_only_last`` the last layer computes keys and values for every token, the rest for CLS only."""
    total = 0.0
    for length in lengths:
        value_encoder = 2 * d * d * length
        layer = length * (8 * d * d + 4 * d * d_hid) + 4 * length * length * d
        last = layer if not cls_only_last else length * 4 * d * d + 4 * d * d + 4 * length * d + 4 * d * d_hid
        total += value_encoder + (n_layers - 1) * layer + last
    return total


def _median_time(call, repeats: int) -> float:
    call()  # warm-up: allocations, kernel selection
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def worker(task: str, impl: str, ckpt: Path, inputs: Path, out: Path, batch_size: int, repeats: int) -> None:
    from scadapt.tracking.resources import PeakRSS

    data = np.load(inputs)
    torch.manual_seed(0)
    if impl == "reference":
        from reference_scgpt import reference_model

        model = reference_model(ckpt)
    else:
        from scadapt.backbone import load_backbone

        model = load_backbone(ckpt).model
        if impl == "ours_attn_dropout":
            for layer in model.transformer_encoder.layers:
                layer.self_attn.dropout = 0.2
    result: dict = {}
    if task.startswith("embed"):
        ids, values, mask = (torch.from_numpy(data[f"{task}_{k}"]) for k in ("ids", "values", "mask"))
        model.eval()
        cfg = model.config if impl != "reference" else load_config(ckpt)
        lengths = (~mask).sum(1).numpy()
        if impl == "reference":  # one padded batch, every row of every layer

            def embed():
                with torch.no_grad():
                    return model._encode(ids, values, mask)[:, 0].numpy()

            padded = [ids.shape[1]] * len(ids)
        else:

            def embed():
                return _ours_embed(model, ids, values, mask, batch_size)

            padded = [int(lengths[idx].max()) for idx in _our_batches(lengths, batch_size) for _ in idx]
        with PeakRSS() as peak:
            seconds = _median_time(embed, repeats)
        flops = forward_flops(cfg.d_model, cfg.d_hid, cfg.nlayers, padded, cls_only_last=impl != "reference")
        result = {"seconds": seconds, "peak_bytes": peak.added_bytes, "gflops": flops / 1e9}
        np.save(out.with_suffix(".npy"), embed())
    else:
        ids = torch.from_numpy(data["train_ids"]).long()
        values = torch.from_numpy(data["train_values"])
        labels = torch.from_numpy(data["train_labels"]).long()
        mask = torch.zeros_like(ids, dtype=torch.bool)
        model.eval()
        with torch.no_grad():
            if impl == "reference":
                before = model._encode(ids, values, mask)[:, 0].numpy()
            else:
                before = model(ids, values, mask).numpy()
        np.save(out.with_suffix(".npy"), before)
        head = _head(before.shape[1])
        model.train()
        params = list(model.parameters()) + list(head.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        def step():
            optimizer.zero_grad()
            if impl == "reference":
                cls = model(ids, values, mask, CLS=False)["cell_emb"]
            else:
                cls = model(ids, values, mask)
            loss = torch.nn.functional.cross_entropy(head(cls), labels)
            loss.backward()
            optimizer.step()

        with PeakRSS() as peak:
            seconds = _median_time(step, repeats)
        result = {"seconds": seconds, "peak_bytes": peak.added_bytes}
    out.with_suffix(".json").write_text(json.dumps(result))


def load_config(ckpt: Path):
    from scadapt.backbone import BackboneConfig

    return BackboneConfig.from_args(json.loads((ckpt / "args.json").read_text()),
                                    vocab_size=len(json.loads((ckpt / "vocab.json").read_text())))


def _our_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    from scadapt.tokenization.batching import length_grouped_batches

    return length_grouped_batches(lengths, batch_size, rng=None)


def _ours_embed(model, ids, values, mask, batch_size):
    """Our embedding path on the same padded inputs: regroup by length, CLS-only last layer
    (in the precision ``SCADAPT_PRECISION`` asks for)."""
    from scadapt.infra.devices import autocast

    lengths = (~mask).sum(1).numpy()
    emb = np.empty((len(ids), model.config.d_model), dtype=np.float32)
    with torch.inference_mode(), autocast(torch.device("cpu")):
        for idx in _our_batches(lengths, batch_size):
            width = int(lengths[idx].max())
            emb[idx] = model(ids[idx, :width], values[idx, :width], mask[idx, :width]).float().numpy()
    return emb


def run_worker(task, impl, ckpt, inputs, tmp, batch_size, repeats) -> dict:
    out = tmp / f"{task}-{impl}"
    cmd = [sys.executable, __file__, "--worker", task, impl, str(ckpt), str(inputs), str(out), "--batch-size",
           str(batch_size), "--repeats", str(repeats)]
    env = {**os.environ, "SCADAPT_PRECISION": "bf16" if impl.endswith("bf16") else "fp32"}
    subprocess.run(cmd, check=True, env=env)
    result = json.loads(out.with_suffix(".json").read_text())
    result["output"] = np.load(out.with_suffix(".npy"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", type=Path, default=HERE.parent / "tests/data/scgpt_human")
    parser.add_argument("--cells", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="our embedding batch size")
    parser.add_argument("--train-cells", type=int, default=8)
    parser.add_argument("--train-len", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side, after one warm-up call")
    parser.add_argument("--skip", nargs="*", default=[], help="e.g. finetune-reference")
    parser.add_argument("--worker", nargs=5, metavar=("TASK", "IMPL", "CKPT", "INPUTS", "OUT"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.worker:
        task, impl, ckpt, inputs, out = args.worker
        worker(task, impl, Path(ckpt), Path(inputs), Path(out), args.batch_size, args.repeats)
        return

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt = tmp / "ckpt"
        make_checkpoint(args.reference_dir, ckpt)
        stats = make_inputs(ckpt, tmp / "inputs.npz", args.cells, args.train_cells, args.train_len)
        print(f"embedding input: {args.cells} pancreas cells, tokens per cell mean {stats['tokens_mean']:.0f} "
              f"(min {stats['tokens_min']}, max {stats['tokens_max']})")
        rows = []
        peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
        print(f"matmul peak: {peak['fp32']:.0f} GFLOP/s fp32, {peak['bf16']:.0f} GFLOP/s bf16", flush=True)
        for task, impls in (("embed", ("reference", "ours")), ("embed_full", ("reference", "ours", "ours_bf16")),
                            ("finetune", ("reference", "ours", "ours_attn_dropout"))):
            results = {}
            for impl in impls:
                if f"{task}-{impl}" in args.skip:
                    continue
                print(f"running {task} / {impl} ...", flush=True)
                results[impl] = run_worker(task, impl, ckpt, tmp / "inputs.npz", tmp, args.batch_size, args.repeats)
            ref = results.get("reference")
            for impl, res in results.items():
                diff = float(np.abs(res["output"] - ref["output"]).max()) if ref else float("nan")
                speed = ref["seconds"] / res["seconds"] if ref else float("nan")
                mem = res["peak_bytes"] / ref["peak_bytes"] if ref else float("nan")
                achieved = res["gflops"] / res["seconds"] if "gflops" in res else None
                limit = peak["bf16" if impl.endswith("bf16") else "fp32"]
                rows.append([task, impl, f"{res['seconds']:.2f}",
                             f"{(args.train_cells if task == 'finetune' else args.cells) / res['seconds']:.2f}",
                             f"{res['peak_bytes'] / 2**30:.2f}", f"{speed:.2f}x", f"{mem:.2f}x", f"{diff:.1e}",
                             "-" if achieved is None else f"{achieved:.0f}",
                             "-" if achieved is None else f"{achieved / limit:.0%}"])

    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{date.today()}; median of {args.repeats} after a warm-up; matmul peak {peak['fp32']:.0f} GFLOP/s fp32, "
          f"{peak['bf16']:.0f} GFLOP/s bf16")
    print_table(["task", "implementation", "seconds", "cells/s", "peak memory (GiB)", "speed vs reference",
                 "memory vs reference", "max abs diff of embeddings", "achieved GFLOP/s", "of matmul peak"], rows)


if __name__ == "__main__":
    main()

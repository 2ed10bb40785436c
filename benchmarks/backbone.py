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
"""

from __future__ import annotations

import argparse
import json
import platform
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


def worker(task: str, impl: str, ckpt: Path, inputs: Path, out: Path, batch_size: int) -> None:
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
        with PeakRSS() as peak:
            start = time.perf_counter()
            if impl == "reference":
                with torch.no_grad():
                    emb = model._encode(ids, values, mask)[:, 0].numpy()
            else:

                emb = _ours_embed(model, ids, values, mask, batch_size)
            seconds = time.perf_counter() - start
        result = {"seconds": seconds, "peak_bytes": peak.added_bytes}
        np.save(out.with_suffix(".npy"), emb)
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
        with PeakRSS() as peak:
            start = time.perf_counter()
            if impl == "reference":
                cls = model(ids, values, mask, CLS=False)["cell_emb"]
            else:
                cls = model(ids, values, mask)
            loss = torch.nn.functional.cross_entropy(head(cls), labels)
            loss.backward()
            optimizer.step()
            seconds = time.perf_counter() - start
        result = {"seconds": seconds, "peak_bytes": peak.added_bytes}
    out.with_suffix(".json").write_text(json.dumps(result))


def _ours_embed(model, ids, values, mask, batch_size):
    """Our embedding path on the same padded inputs: regroup by length, CLS-only last layer."""
    from scadapt.tokenization.batching import length_grouped_batches

    lengths = (~mask).sum(1).numpy()
    emb = np.empty((len(ids), model.config.d_model), dtype=np.float32)
    with torch.inference_mode():
        for idx in length_grouped_batches(lengths, batch_size, rng=None):
            width = int(lengths[idx].max())
            emb[idx] = model(ids[idx, :width], values[idx, :width], mask[idx, :width]).numpy()
    return emb


def run_worker(task, impl, ckpt, inputs, tmp, batch_size) -> dict:
    out = tmp / f"{task}-{impl}"
    cmd = [sys.executable, __file__, "--worker", task, impl, str(ckpt), str(inputs), str(out), "--batch-size", str(batch_size)]
    subprocess.run(cmd, check=True)
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
    parser.add_argument("--skip", nargs="*", default=[], help="e.g. finetune-reference")
    parser.add_argument("--worker", nargs=5, metavar=("TASK", "IMPL", "CKPT", "INPUTS", "OUT"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.worker:
        task, impl, ckpt, inputs, out = args.worker
        worker(task, impl, Path(ckpt), Path(inputs), Path(out), args.batch_size)
        return

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt = tmp / "ckpt"
        make_checkpoint(args.reference_dir, ckpt)
        stats = make_inputs(ckpt, tmp / "inputs.npz", args.cells, args.train_cells, args.train_len)
        print(f"embedding input: {args.cells} pancreas cells, tokens per cell mean {stats['tokens_mean']:.0f} "
              f"(min {stats['tokens_min']}, max {stats['tokens_max']})")
        rows = []
        for task, impls in (("embed", ("reference", "ours")), ("embed_full", ("reference", "ours")), ("finetune", ("reference", "ours", "ours_attn_dropout"))):
            results = {}
            for impl in impls:
                if f"{task}-{impl}" in args.skip:
                    continue
                print(f"running {task} / {impl} ...", flush=True)
                results[impl] = run_worker(task, impl, ckpt, tmp / "inputs.npz", tmp, args.batch_size)
            ref = results.get("reference")
            for impl, res in results.items():
                diff = float(np.abs(res["output"] - ref["output"]).max()) if ref else float("nan")
                speed = ref["seconds"] / res["seconds"] if ref else float("nan")
                mem = res["peak_bytes"] / ref["peak_bytes"] if ref else float("nan")
                rows.append((task, impl, res["seconds"], res["peak_bytes"] / 2**30, speed, mem, diff))

    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {date.today()}")
    print("| task | implementation | seconds | cells/s | peak memory (GiB) | speed vs reference | memory vs reference | max abs diff of embeddings |")
    print("|---|---|---|---|---|---|---|---|")
    for task, impl, sec, gib, speed, mem, diff in rows:
        n = args.train_cells if task == "finetune" else args.cells
        print(f"| {task} | {impl} | {sec:.2f} | {n / sec:.2f} | {gib:.2f} | {speed:.2f}x | {mem:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()

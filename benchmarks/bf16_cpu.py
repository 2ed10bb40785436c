"""bf16 autocast on the CPU (``SCADAPT_PRECISION=bf16``) against float32, in speed and in results.

Run:  python benchmarks/bf16_cpu.py  [--part speed quality] [--epochs 5]

Each measurement runs in a fresh subprocess with ``SCADAPT_PRECISION`` set.

1. ``speed``: the whole-human shapes (``args.json`` + ``vocab.json`` of the released model, random
   weights). Embedding 32 cells x 1200 tokens (the served/embedding path's forward), and one
   training step (forward, backward, AdamW) on 4 cells x 1200 tokens for ``full`` and for ``lora``
   with its default settings (the whole forward; backward through its adapted top layers): one
   warm-up call, then the median of 3. The bf16 embeddings are compared with
   the float32 ones (cosine similarity per cell, largest difference relative to the norm).
2. ``quality``: the bundled data with the demo backbone, as ``scadapt train`` fits it
   (``frozen_probe``, ``head`` and ``lora`` for ``--epochs`` epochs), test macro-F1 per precision.
"""

from __future__ import annotations

import argparse
import json
import os
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

from backbone import _full_length_cells, _median_time, make_checkpoint  # noqa: E402  (benchmarks/backbone.py)
from results_table import print_table  # noqa: E402

PRECISIONS = ("fp32", "bf16")
QUALITY = ("frozen_probe", "head", "lora")
DATASETS = ("pancreas_small", "pbmc68k_reduced")


def speed_worker(ckpt: Path, out: Path) -> dict:
    import torch.nn.functional as F

    from scadapt.backbone import load_backbone
    from scadapt.fitting.optim import Updater
    from scadapt.infra.devices import autocast
    from scadapt.strategies import get_strategy
    from scadapt.tokenization import GeneVocab

    dev = torch.device("cpu")
    vocab = GeneVocab.from_file(ckpt / "vocab.json")
    rng = np.random.default_rng(0)
    ids, values = (torch.from_numpy(a) for a in _full_length_cells(rng, vocab, 32, 1200))
    ids = ids.long()
    backbone = load_backbone(ckpt, with_decoders=False, device=dev).model.eval()

    def embed():
        with torch.inference_mode(), autocast(dev):
            return backbone(ids, values, None).float()

    result = {"embed_sec": _median_time(embed, 3)}
    np.save(out.with_suffix(".npy"), embed().numpy())
    for strategy in ("full", "lora"):
        cls = get_strategy(strategy)
        config = cls.config_class.from_params({"seed": 0})
        model = cls(config).build_model(load_backbone(ckpt, with_decoders=False, device=dev).model, 10).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        updater = Updater(trainable, config.lr, config.weight_decay, 1, 10, dev, clip_norm=config.max_grad_norm)
        labels = torch.arange(4) % 10

        def step(model=model, updater=updater, labels=labels):
            with autocast(dev):
                logits = model(ids[:4], values[:4], None)
            updater.step(F.cross_entropy(logits.float(), labels))

        result[f"{strategy}_step_sec"] = _median_time(step, 3)
    return result


def quality_worker(data: str, checkpoint: str, epochs: int) -> dict:
    from scadapt.jobs.config import TrainJob
    from scadapt.jobs.context import prepare
    from scadapt.jobs.fit import evaluate, fit_strategy
    from scadapt.strategies import get_strategy

    ctx = prepare(TrainJob(data=data, checkpoint=checkpoint, progress=False, umap=False))
    result = {}
    for strategy in QUALITY:
        kind = get_strategy(strategy)
        ctx.method = kind(kind.config_class.from_params({"seed": 0, **kind().epoch_budget(epochs)}))
        started = time.perf_counter()
        outcome = fit_strategy(ctx, ctx.method, progress=False)
        report, _, _ = evaluate(ctx, outcome.annotator, "test")
        result[strategy] = {"macro_f1": report.summary["macro_f1"], "fit_sec": time.perf_counter() - started}
    return result


def run(precision: str, *worker: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        # fresh caches (each precision computes its own embeddings, timed) and tracking store
        env = {**os.environ, "SCADAPT_PRECISION": precision, "SCADAPT_CACHE": tmp,
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        subprocess.run([sys.executable, __file__, "--worker", str(out), *worker], check=True, env=env)
        result = json.loads(out.read_text())
        if out.with_suffix(".npy").exists():
            result["embedding"] = np.load(out.with_suffix(".npy"))
        return result


def report_speed(rows: dict[str, dict]) -> None:
    ref = rows["fp32"]
    reference = ref["embedding"]
    print("\n### Speed at whole-human shapes (random weights)\n")
    table = []
    for precision, r in rows.items():
        emb = r["embedding"]
        cosine = (emb * reference).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
        relative = np.abs(emb - reference).max(1) / np.linalg.norm(reference, axis=1)
        table.append([precision, f"{r['embed_sec']:.2f}", f"{ref['embed_sec'] / r['embed_sec']:.2f}x",
                      f"{r['full_step_sec']:.2f}", f"{ref['full_step_sec'] / r['full_step_sec']:.2f}x",
                      f"{r['lora_step_sec']:.2f}", f"{ref['lora_step_sec'] / r['lora_step_sec']:.2f}x",
                      f"{cosine.min():.5f} / {cosine.mean():.5f}", f"{relative.max():.2e}"])
    print_table(["precision", "embed 32 x 1200 (s)", "speed-up", "full step 4 x 1200 (s)", "speed-up",
                 "lora step (s)", "speed-up", "cosine to fp32 (min / mean)", "max |diff| / norm"], table)


def report_quality(rows: dict[tuple[str, str], dict]) -> None:
    print("\n### Test macro-F1 on the bundled data (demo backbone)\n")
    table = []
    for data in DATASETS:
        for strategy in QUALITY:
            fp32, bf16 = rows["fp32", data][strategy], rows["bf16", data][strategy]
            table.append([data, strategy, f"{fp32['macro_f1']:.4f}", f"{bf16['macro_f1']:.4f}",
                          f"{bf16['macro_f1'] - fp32['macro_f1']:+.4f}", f"{fp32['fit_sec']:.1f}",
                          f"{bf16['fit_sec']:.1f}"])
    print_table(["data", "strategy", "macro-F1 fp32", "macro-F1 bf16", "difference", "fit fp32 (s)",
                 "fit bf16 (s)"], table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=["speed", "quality"], default=["speed", "quality"])
    parser.add_argument("--epochs", type=int, default=5, help="quality: epochs of head and lora")
    parser.add_argument("--reference-dir", type=Path, default=HERE.parent / "tests/data/scgpt_human")
    parser.add_argument("--worker", nargs="+")
    args = parser.parse_args()
    if args.worker:
        out, kind, *rest = args.worker
        result = speed_worker(Path(rest[0]), Path(out)) if kind == "speed" else \
            quality_worker(rest[0], rest[1], args.epochs)
        Path(out).write_text(json.dumps(result))
        return

    cpu = f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as tmp:
        if "speed" in args.part:
            ckpt = Path(tmp) / "ckpt"
            make_checkpoint(args.reference_dir, ckpt)
            speed = {p: run(p, "speed", str(ckpt)) for p in PRECISIONS}
        if "quality" in args.part:
            from scadapt.infra.storage import demo_backbone_dir

            demo = str(demo_backbone_dir())
            quality = {(p, data): run(p, "quality", data, demo) for p in PRECISIONS for data in DATASETS}
    print(f"\n{cpu}, torch {torch.__version__}, {date.today()}")
    if "speed" in args.part:
        report_speed(speed)
    if "quality" in args.part:
        report_quality(quality)


if __name__ == "__main__":
    main()

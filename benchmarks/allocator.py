"""What glibc's heap costs a training step, and what handing large freed blocks back saves.

Run:  python benchmarks/allocator.py  [--cells 4] [--seq-len 1200] [--repeats 3]

At whole-human shapes (random weights), each strategy (``full``; ``lora`` on every layer) runs
``--repeats`` training steps (forward, backward) on ``--cells`` cells of ``--seq-len`` tokens in a
fresh process, once with glibc's default allocator settings and once after
:func:`scadapt.fitting.memory.return_freed_memory` (what every fit on a CPU does). Reported: the
bytes autograd saves for the backward pass (counted with saved-tensor hooks), how much the
process grew in the first forward pass and at its peak over the steps, and the median seconds
per step.
"""

from __future__ import annotations

import argparse
import json
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


def worker(strategy: str, returning: bool, ckpt: Path, args: argparse.Namespace) -> dict:
    import torch.nn.functional as F

    from scadapt.backbone import load_backbone
    from scadapt.fitting.memory import return_freed_memory, saved_activation_bytes
    from scadapt.strategies import get_strategy
    from scadapt.tokenization import GeneVocab
    from scadapt.tracking.resources import PeakRSS

    if returning:
        return_freed_memory()
    vocab = GeneVocab.from_file(ckpt / "vocab.json")
    ids, values = _full_length_cells(np.random.default_rng(0), vocab, args.cells, args.seq_len)
    ids, values = torch.from_numpy(ids).long(), torch.from_numpy(values)
    padding = torch.zeros(args.cells, args.seq_len, dtype=torch.bool)
    padding[0, -5:] = True  # a padding mask, as real batches have
    cls = get_strategy(strategy)
    config = cls.config_class.from_params({"seed": 0, **({"layers": 0} if strategy != "full" else {})})
    model = cls(config).build_model(load_backbone(ckpt, with_decoders=False).model, 10)
    model.train()
    labels = torch.arange(args.cells) % 10
    saved = saved_activation_bytes(lambda: model(ids, values, padding), model, torch.device("cpu"))
    durations, first_forward = [], None
    with PeakRSS(0.002) as peak:
        for _ in range(args.repeats):
            started = time.perf_counter()
            loss = F.cross_entropy(model(ids, values, padding), labels)
            if first_forward is None:
                first_forward = peak.process.memory_info().rss - peak.start_bytes
            loss.backward()
            model.zero_grad(set_to_none=True)
            durations.append(time.perf_counter() - started)
    return {"saved": saved, "first_forward": first_forward, "peak_added": peak.added_bytes,
            "sec_per_step": statistics.median(durations)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-dir", type=Path, default=HERE.parent / "tests/data/scgpt_human")
    parser.add_argument("--worker", nargs=4, metavar=("STRATEGY", "RETURNING", "CKPT", "OUT"))
    args = parser.parse_args()
    if args.worker:
        strategy, returning, ckpt, out = args.worker
        Path(out).write_text(json.dumps(worker(strategy, returning == "1", Path(ckpt), args)))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_checkpoint(args.reference_dir, tmp / "ckpt")
        for strategy in ("full", "lora"):
            for returning in (False, True):
                out = tmp / f"{strategy}-{returning}.json"
                subprocess.run([sys.executable, __file__, "--worker", strategy, str(int(returning)), str(tmp / "ckpt"),
                                str(out), "--cells", str(args.cells), "--seq-len", str(args.seq_len),
                                "--repeats", str(args.repeats)], check=True)
                rows[strategy, returning] = json.loads(out.read_text())
    print(f"\ncpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {date.today()}")
    print(f"\n{args.cells} cells x {args.seq_len} tokens, whole-human shapes; `lora` on every layer. Growth is "
          "resident memory above the level before the steps.\n")
    print("| strategy | large freed blocks | saved for backward (MB) | grown after the first forward (MB) "
          "| peak grown over the steps (MB) | s / step | step vs default |")
    print("|---|---|---|---|---|---|---|")
    for (strategy, returning), r in rows.items():
        ref = rows[strategy, False]["sec_per_step"]
        print(f"| {strategy} | {'returned (scadapt)' if returning else 'kept (glibc default)'} "
              f"| {r['saved'] / 2**20:.0f} | {r['first_forward'] / 2**20:.0f} | {r['peak_added'] / 2**20:.0f} "
              f"| {r['sec_per_step']:.2f} | {r['sec_per_step'] / ref:.3f}x |")


if __name__ == "__main__":
    main()

"""Adapting only the top layers against every layer, on the bundled data: test macro-F1 and fit time.

Run:  python benchmarks/top_layers.py  [--layers 1 2 0] [--epochs 10] [--data pbmc68k_reduced pancreas_small]

Every injected strategy (lora, dora, adalora, adapter, prefix, ia3) is fitted with its default
settings on the first fold of the full-label regime with the demo backbone (``scadapt pretrain``
makes it), once per ``--layers`` value (the top k layers adapted; 0 = every layer), as ``scadapt
train`` fits it: the frozen layers below the adapted ones run once per cell. Reported: test
macro-F1 and the fit's seconds, each against adapting every layer in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_table import print_table  # noqa: E402  (benchmarks/results_table.py)

INJECTED = ("lora", "dora", "adalora", "adapter", "prefix", "ia3")


def measure(data: str, layers: list[int], epochs: int) -> dict[tuple[str, int], dict]:
    from scadapt.jobs.config import TrainJob
    from scadapt.jobs.context import prepare
    from scadapt.jobs.fit import evaluate, fit_strategy
    from scadapt.strategies import get_strategy

    ctx = prepare(TrainJob(data=data, progress=False, umap=False))
    ctx.embeddings(ctx.split.train, progress=False)  # the head's input statistics: computed once, not timed
    results = {}
    for strategy in INJECTED:
        for k in layers:
            kind = get_strategy(strategy)
            ctx.method = kind(kind.config_class.from_params({"seed": 0, "layers": k, **kind().epoch_budget(epochs)}))
            started = time.perf_counter()
            outcome = fit_strategy(ctx, ctx.method, progress=False)
            seconds = time.perf_counter() - started
            report, _, _ = evaluate(ctx, outcome.annotator, "test")
            results[strategy, k] = {"macro_f1": report.summary["macro_f1"], "fit_sec": seconds,
                                    "epochs": len(outcome.fit.history),
                                    "trainable": outcome.annotator.fitted_parameters}
            print(f"{data} / {strategy} / layers {k}: macro-F1 {report.summary['macro_f1']:.4f}, {seconds:.1f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", nargs="+", default=["pbmc68k_reduced", "pancreas_small"])
    args = parser.parse_args()
    layers = sorted(set(args.layers), key=lambda k: (k == 0, k))  # every layer (0) last: the reference
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")  # never the repo's store
        results = {data: measure(data, layers, args.epochs) for data in args.data}
    print(f"\ncpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {date.today()}; demo backbone, full_fold0, at most {args.epochs} epochs\n")
    rows = []
    for data, by in results.items():
        for strategy in INJECTED:
            ref = by[strategy, 0] if 0 in layers else None
            for k in layers:
                r = by[strategy, k]
                rows.append([data, strategy, "all" if k == 0 else f"top {k}", f"{r['trainable']:,}", r["epochs"],
                             f"{r['macro_f1']:.4f}",
                             f"{r['macro_f1'] - ref['macro_f1']:+.4f}" if ref else "-", f"{r['fit_sec']:.1f}",
                             f"{r['fit_sec'] / ref['fit_sec']:.2f}x" if ref else "-"])
    print_table(["data", "strategy", "adapted layers", "trainable params", "epochs run", "test macro-F1",
                 "vs all layers", "fit (s)", "fit vs all layers"], rows)


if __name__ == "__main__":
    main()

"""What the on-disk embedding cache saves: ``frozen_probe`` and ``head`` jobs on the same data and
backbone, the first computing the frozen embeddings, the later ones reading them.

Run:  python benchmarks/embedding_reuse.py  [--data pbmc68k_reduced] [--repeats 2]

Each job is a ``train`` call with a new training context, as a benchmark cell, a study trial or
a pipeline step gets, in a new MLflow store and scadapt cache (the demo backbone is copied in,
``scadapt pretrain`` makes it). The reference is the first job, which embeds every cell.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

from results_table import print_table  # benchmarks/results_table.py (scripts here run with their folder on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="pbmc68k_reduced")
    parser.add_argument("--repeats", type=int, default=2, help="jobs per strategy after the first")
    args = parser.parse_args()

    from scadapt.infra.storage import demo_backbone_dir

    demo = demo_backbone_dir()
    if not (demo / "args.json").is_file():
        raise SystemExit("No demo backbone: run `scadapt pretrain` first.")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        os.environ["SCADAPT_CACHE"] = str(tmp / "cache")
        os.chdir(tmp)
        checkpoint = tmp / "backbone"
        shutil.copytree(demo, checkpoint)

        from scadapt.jobs.config import TrainJob
        from scadapt.jobs.train import train

        jobs = [("frozen_probe", {})] + [(s, {"epochs": 10} if s == "head" else {})
                                         for s in ("frozen_probe", "head") for _ in range(args.repeats)]
        for i, (strategy, hparams) in enumerate(jobs):
            started = time.perf_counter()
            result = train(TrainJob(data=args.data, strategy=strategy, checkpoint=str(checkpoint), hparams=hparams,
                                    progress=False, umap=False))
            wall = time.perf_counter() - started
            rows.append({"job": i + 1, "strategy": strategy, "wall_s": wall,
                         "embedding_s": result.metrics.get("embedding_sec", float("nan")),
                         "fit_s": result.metrics["runtime_sec"], "test_macro_f1": result.metrics["test_macro_f1"]})
            print(f"job {i + 1} {strategy}: {wall:.2f} s (embedding {rows[-1]['embedding_s']:.2f} s)", flush=True)

    import torch

    print(f"\ncpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {date.today()}; data {args.data}, the demo backbone")
    print_table(["job", "strategy", "wall of train() (s)", "embedding (s)", "fit (s)", "test macro-F1",
                 "wall vs first job"],
                [[r["job"], r["strategy"], f"{r['wall_s']:.2f}", f"{r['embedding_s']:.2f}", f"{r['fit_s']:.2f}",
                  f"{r['test_macro_f1']:.3f}", f"{r['wall_s'] / rows[0]['wall_s']:.2f}x"] for r in rows])


if __name__ == "__main__":
    main()

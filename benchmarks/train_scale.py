"""Training on a large reference: wall time and peak memory of one ``train`` per strategy on the
bundled pancreas cells drawn with replacement to 200,000 cells (an AnnData in memory, as a
notebook user passes it), each strategy in its own process.

Run:  python benchmarks/train_scale.py  [--cells 200000] [--strategies pca_logreg,logreg,frozen_probe]

Default settings; the demo backbone is pretrained first if the cache has none (not timed). Peak
memory is the process's ``VmHWM``, the cells themselves (about 0.5 GB at 200,000 cells) included.
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

from results_table import print_table  # benchmarks/results_table.py (scripts here run with their folder on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--strategies", default="pca_logreg,logreg,frozen_probe")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.cells)
    from scadapt.jobs.demo_backbone import ensure_demo_backbone

    ensure_demo_backbone()
    rows = []
    for strategy in args.strategies.split(","):
        output = subprocess.run([sys.executable, __file__, "--child", strategy, "--cells", str(args.cells)],
                                check=True, capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        rows.append([strategy, f"{args.cells:,}", f"{result['seconds']:.1f}", f"{result['peak_mb']:.0f}",
                     f"{result['val_macro_f1']:.3f}"])
        print(rows[-1], flush=True)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {date.today()}.")
    print_table(["strategy", "training cells (all splits)", "train (s)", "peak RSS (MB)", "validation macro-F1"], rows)


def child(strategy: str, n_cells: int) -> None:
    import numpy as np

    import scadapt

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)  # a SQLite store's artifacts go under ./mlruns
        cells = scadapt.load_dataset("pancreas_small")
        label_key = scadapt.DatasetInfo.of(cells).label_key
        big = cells[np.random.default_rng(0).integers(0, cells.n_obs, n_cells)].copy()
        big.obs_names = [f"cell{i}" for i in range(n_cells)]
        big.uns.clear()
        started = time.perf_counter()
        result = scadapt.train(big, strategy, name="resampled", label_key=label_key, progress=False, umap=False)
        seconds = time.perf_counter() - started
    peak_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "val_macro_f1": result.metrics["val_macro_f1"]}))


if __name__ == "__main__":
    main()

"""Wall time of the benchmark matrix, split by strategy, with ``full`` fine-tuning as the reference.

Run:  python benchmarks/matrix_wall_time.py [--keep DIR]         (runs the default matrix in a fresh store)
      python benchmarks/matrix_wall_time.py --tables DIR/tables  (analyses a finished run's tables)

The default matrix is ``scadapt benchmark`` with its defaults: both bundled datasets, every
strategy, full / low (1, 5, 10 %) / cross-study splits, 3 of 5 folds, 3 Optuna trials per study
(``reuse`` tuning), 10 epochs per fit, on the demo backbone (pretrained first if the cache has none;
that time is not counted). It uses new MLflow and Optuna stores and a new cache holding only the
demo backbone (in a temporary folder, or in ``--keep DIR`` with the report and figures), so nothing
is reused: tokenizing and embedding are counted.

The matrix runs as ``scadapt benchmark`` runs it by default: on a CPU one worker process per core
(up to 4), each with its share of the torch threads. For each strategy it prints the time its cells
took (studies plus the other cells; seconds summed over the worker processes), its share and its
ratio to ``full``, and where the time goes: the Optuna study, the training of the cells' own fits,
and the rest of each cell (loading and tokenizing, embedding, scoring the test cells, logging).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd


def run_default_matrix(folder: Path) -> tuple[Path, float]:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    from scadapt.benchmark import BenchmarkConfig, run_benchmark
    from scadapt.infra.storage import demo_backbone_dir
    from scadapt.jobs.demo_backbone import ensure_demo_backbone

    ensure_demo_backbone()
    # a fresh cache holding only the demo backbone: tokenizing and embedding are counted too
    demo = demo_backbone_dir()
    os.environ["SCADAPT_CACHE"] = str(folder / "cache")
    shutil.copytree(demo, demo_backbone_dir())
    started = time.perf_counter()
    result = run_benchmark(BenchmarkConfig(storage=f"sqlite:///{folder / 'optuna.db'}",
                                           output_dir=str(folder / "out"), progress=False))
    return result.output_dir / "tables", time.perf_counter() - started


def breakdown(tables: Path) -> pd.DataFrame:
    timing = pd.read_csv(tables / "timing.csv")
    by = timing.groupby("strategy", sort=False)[["cells_run", "wall_sec", "tuning_sec", "cell_fit_sec"]].sum()
    by["other_cells_sec"] = by["wall_sec"] - by["tuning_sec"]
    by["cell_rest_sec"] = by["other_cells_sec"] - by["cell_fit_sec"]
    by["share"] = by["wall_sec"] / by["wall_sec"].sum()
    if "full" in by.index:
        by["vs_full"] = by["wall_sec"] / by.loc["full", "wall_sec"]
    return by


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=Path, default=None, help="a finished benchmark's tables folder")
    parser.add_argument("--keep", type=Path, default=None, help="run in this (new) folder and keep everything")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seconds = None
    if args.tables is not None:
        table = breakdown(args.tables)
    elif args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
        tables, seconds = run_default_matrix(args.keep.resolve())
        table = breakdown(tables)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            tables, seconds = run_default_matrix(Path(tmp))
            table = breakdown(tables)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {date.today()}, "
          f"python {sys.version.split()[0]}")
    if seconds is not None:
        print(f"whole default matrix: {seconds / 60:.1f} min")
    print(f"the cells' time, summed over the worker processes: {table['wall_sec'].sum() / 60:.1f} min over "
          f"{int(table['cells_run'].sum())} cells")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()

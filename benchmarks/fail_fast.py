"""How soon a mistake is reported: seconds from the command's start to its error message.

Each case runs the `scadapt` command in a fresh process with an empty cache and store (median of
`--repeats`), and checks the message. The reference, measured in the same run, is what the main
job spent before its first check until issue 12: pretraining the demo backbone (a fresh cache).

    python benchmarks/fail_fast.py [--repeats 3] [--skip-reference]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    "unknown strategy (parsing)": (["pipeline", "--strategies", "pca_logreg,lorra"], "unknown strategies lorra"),
    "non-integer trials (parsing)": (["benchmark", "--n-trials", "three"], "expected an integer"),
    "user file without --label-key": (["pipeline", "--data", "{cells}"], "say which obs column holds the cell types"),
    "label key typo": (["pipeline", "--data", "{cells}", "--label-key", "celltyp"], "is not a column of adata.obs"),
    "too few genes for the backbone": (["pipeline", "--data", "{cells}", "--label-key", "cell_type", "--checkpoint",
                                        "{checkpoint}"], "are in the vocabulary"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true", help="do not time the demo pretraining")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = _inputs(Path(tmp))
        print(f"| case | seconds to the message (median of {args.repeats}) |\n|---|---|")
        for name, (argv, expected) in CASES.items():
            times = [_time_to_error([a.format(**files) for a in argv], expected, Path(tmp) / f"run{i}")
                     for i in range(args.repeats)]
            print(f"| {name} | {statistics.median(times):.2f} |")
        if not args.skip_reference:
            started = time.perf_counter()
            _run(["pretrain", "--epochs", "10"], Path(tmp) / "reference", check=True)
            print(f"\nReference: demo backbone pretraining (what the main job did before its first check): "
                  f"{time.perf_counter() - started:.1f} s")


def _inputs(folder: Path) -> dict[str, str]:
    import anndata as ad
    import scipy.sparse as sp

    from scadapt.backbone import BackboneConfig, ScGPTBackbone, save_backbone
    from scadapt.tokenization import GeneVocab

    rng = np.random.default_rng(0)
    cells = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (300, 500)).astype(np.float32)))
    cells.var_names = [f"GENE{i}" for i in range(500)]
    cells.obs["cell_type"] = np.repeat(["a", "b", "c"], 100)
    cells.write_h5ad(folder / "cells.h5ad")
    vocab = GeneVocab.from_genes([f"OTHER{i}" for i in range(1000)])
    save_backbone(ScGPTBackbone(BackboneConfig(vocab_size=len(vocab), d_model=32, nhead=4, d_hid=32, nlayers=2),
                                pad_id=vocab.pad_id), vocab, folder / "ckpt")
    return {"cells": str(folder / "cells.h5ad"), "checkpoint": str(folder / "ckpt")}


def _run(argv: list[str], folder: Path, check: bool = False) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SCADAPT_CACHE": str(folder / "cache"), "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/m.db"}
    return subprocess.run([sys.executable, "-m", "scadapt.cli", *argv], cwd=folder, env=env, capture_output=True,
                          text=True, check=check)


def _time_to_error(argv: list[str], expected: str, folder: Path) -> float:
    started = time.perf_counter()
    result = _run(argv, folder)
    seconds = time.perf_counter() - started
    if result.returncode != 2 or expected not in result.stderr:
        raise SystemExit(f"{argv}: expected exit 2 with {expected!r}, got {result.returncode}: {result.stderr[-500:]}")
    return seconds


if __name__ == "__main__":
    main()

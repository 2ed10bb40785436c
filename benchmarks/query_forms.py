"""A query in another form than the model was trained on: the same cells as log-normalised values
(the reference), as counts and as normalised values that are not logged, labelled by the same
model. Reports the share of cells with the same closest type and the same label, and the rejection
rate against the reference's.

Run:  python benchmarks/query_forms.py  [--strategies pca_logreg,logreg,mlp]

``pbmc68k_reduced`` holds log-normalised values of 765 of the ~20,000 genes they were normalised
over, so its counts (each cell's values over its smallest, rounded) cannot say how much of each
cell's library lay outside those genes; ``pancreas_small`` is log-normalised here (scanpy,
10,000 per cell) over the genes it holds, as a user's file usually is.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import date

from results_table import print_table  # benchmarks/results_table.py (scripts here run with their folder on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="pca_logreg,logreg,mlp")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["SCADAPT_CACHE"] = f"{tmp}/cache"
        os.chdir(tmp)
        rows = measure(args.strategies.split(","), tmp)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {date.today()}.")
    print_table(["data", "strategy", "query", "same closest type", "same label", "Unassigned",
                 "Unassigned, log-normalised query"], rows)


def measure(strategies: list[str], folder: str) -> list[list[object]]:
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    import scadapt
    from scadapt.data.options import DataOptions
    from scadapt.jobs.config import TrainJob
    from scadapt.jobs.train import train
    from scadapt.models.annotator import UNASSIGNED

    pbmc = scadapt.load_dataset("pbmc68k_reduced")
    unlogged = sp.csr_matrix(pbmc.X, dtype=np.float64)
    unlogged.data = np.expm1(unlogged.data)
    smallest = np.array([unlogged.data[a:b].min() for a, b in zip(unlogged.indptr[:-1], unlogged.indptr[1:], strict=True)])
    pbmc_counts = sp.diags(1.0 / smallest) @ unlogged
    pbmc_counts.data = np.round(pbmc_counts.data)
    pancreas = scadapt.load_dataset("pancreas_small")
    pancreas.X = sp.csr_matrix(np.round(pancreas.X.toarray()))
    logged = pancreas.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    rows = []
    for name, cells, counts in (("pbmc68k_reduced", pbmc, pbmc_counts), ("pancreas_small", logged, pancreas.X)):
        path = f"{folder}/{name}.h5ad"
        cells.write_h5ad(path)
        normalised = sp.csr_matrix(cells.X, dtype=np.float64)
        normalised.data = np.expm1(normalised.data)
        key = scadapt.DatasetInfo.of(cells).label_key
        for strategy in strategies:
            model = train(TrainJob(data=path, reading=DataOptions(label_key=key), strategy=strategy, progress=False, umap=False)).annotator
            reference = model.predict(cells)
            for form, matrix in (("counts", counts), ("normalised, not logged", normalised)):
                query = cells.copy()
                query.X = matrix
                got = model.predict(query)
                rows.append([name, strategy, form, f"{np.mean(got['predicted'] == reference['predicted']):.4f}",
                             f"{np.mean(got['label'] == reference['label']):.4f}",
                             f"{np.mean(got['label'] == UNASSIGNED):.3f}",
                             f"{np.mean(reference['label'] == UNASSIGNED):.3f}"])
                print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()

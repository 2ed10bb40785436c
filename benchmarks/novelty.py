"""Cells of a type the model never saw: how well the novelty score separates them from known
cells (AUROC), against the maximum class probability, and what ``unknown="auto"`` does with them.

Run:  python benchmarks/novelty.py  [--strategies pca_logreg,logreg,mlp] [--types 5]

For each bundled dataset and each of its most frequent cell types, that type is left out of the
reference; each strategy (default settings) is trained on the rest (``full_fold0``), and the query
is every reference cell (known: the training, validation and test cells of the split, each part's
rejection reported) plus every cell of the left-out type (novel; the AUROC is against the test cells).
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
    parser.add_argument("--types", type=int, default=5, help="the most frequent types, each left out in turn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["SCADAPT_CACHE"] = f"{tmp}/cache"
        os.chdir(tmp)  # a SQLite store's artifacts go under ./mlruns
        rows = measure(args.strategies.split(","), args.types, tmp)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {date.today()}.")
    print_table(["data", "left out", "strategy", "novel cells", "known test cells", "AUROC novelty score",
                 "AUROC max. probability", "novel cells Unassigned", "known Unassigned: training",
                 "validation", "test", "known test cells correct"], rows)


def measure(strategies: list[str], n_types: int, folder: str) -> list[list[object]]:
    import anndata
    import numpy as np
    from sklearn.metrics import roc_auc_score

    import scadapt
    from scadapt.data.options import DataOptions
    from scadapt.jobs.config import TrainJob
    from scadapt.jobs.train import train
    from scadapt.models.annotator import UNASSIGNED

    rows = []
    for data in ("pancreas_small", "pbmc68k_reduced"):
        cells = scadapt.load_dataset(data)
        key = scadapt.DatasetInfo.of(cells).label_key
        for left_out in cells.obs[key].value_counts().index[:n_types]:
            path = f"{folder}/reference.h5ad"
            cells[cells.obs[key] != left_out].copy().write_h5ad(path)
            reference = scadapt.load_dataset(path, label_key=key)
            split = scadapt.make_splits(reference, "full", folds=[0])[0]
            # every cell of the reference (its split's three parts) and every cell of the left-out type
            query = anndata.concat([reference, cells[cells.obs[key] == left_out]])
            novel = (query.obs[key] == left_out).to_numpy()
            scored = novel | np.isin(np.arange(query.n_obs), split.test)  # AUROC: test cells against novel ones
            truth = query.obs[key].astype(str).to_numpy()
            for strategy in strategies:
                model = train(TrainJob(data=path, reading=DataOptions(label_key=key), strategy=strategy, progress=False, umap=False)).annotator
                annotated = scadapt.annotate(query.copy(), model, progress=False)
                labels = annotated.obs["scadapt_label"].astype(str).to_numpy()
                rejected = labels == UNASSIGNED
                _, proba = model.outputs(query)
                rows.append([data, left_out, strategy, int(novel.sum()), int(len(split.test)),
                             f"{roc_auc_score(novel[scored], annotated.obs['scadapt_novelty'][scored]):.3f}",
                             f"{roc_auc_score(novel[scored], -proba.max(axis=1)[scored]):.3f}",
                             f"{np.mean(rejected[novel]):.2f}",
                             *(f"{np.mean(rejected[split.part(part)]):.2f}" for part in ("train", "validation", "test")),
                             f"{np.mean(labels[split.test] == truth[split.test]):.2f}"])
                print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()

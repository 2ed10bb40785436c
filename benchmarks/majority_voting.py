"""Majority voting: what it does to accuracy on held-out cells, voting in clusters of the model's
own embedding (scadapt's default) against clusters of a PCA of the query (CellTypist's choice).

Run:  python benchmarks/majority_voting.py  [--strategies pca_logreg,logreg,mlp]

For each bundled dataset and split (``full_fold0`` of both; the held-out technologies of the
pancreas subset), each expression strategy is trained with its default settings on the split's
training cells and annotates the split's test cells (the query). Reported: the accuracy of the
single-cell calls and of the majority vote in each kind of cluster; "noisy" repeats the vote after
a third of the calls were replaced by random labels (a noisy model). Same clusters, resolution and
neighbours for both kinds (``scadapt.annotation.voting``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import date

from results_table import print_table  # benchmarks/results_table.py (scripts here run with their folder on sys.path)

SPLITS = {"pbmc68k_reduced": ("full",), "pancreas_small": ("full", "cross_study")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="pca_logreg,logreg,mlp")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["SCADAPT_CACHE"] = f"{tmp}/cache"
        os.chdir(tmp)  # a SQLite store's artifacts go under ./mlruns
        rows = measure(args.strategies.split(","))
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {date.today()}.")
    print_table(["data", "split", "strategy", "query cells", "clusters", "single-cell accuracy",
                 "voted, own embedding", "voted, query PCA", "noisy calls", "noisy, voted (own embedding)"], rows)


def measure(strategies: list[str]) -> list[list[object]]:
    import numpy as np
    import scanpy as sc

    import scadapt
    from scadapt.annotation.voting import majority_vote, over_cluster
    from scadapt.data.preprocess import log_normalized
    from scadapt.jobs.config import TrainJob
    from scadapt.jobs.train import train

    rows = []
    for data, regimes in SPLITS.items():
        cells = scadapt.load_dataset(data)
        info = scadapt.DatasetInfo.of(cells)
        for regime in regimes:
            for split in scadapt.make_splits(cells, regime, folds=[0]):
                query = cells[split.test].copy()
                truth = query.obs[info.label_key].astype(str).to_numpy()
                pca = sc.pp.pca(log_normalized(query.X), n_comps=min(30, query.n_obs - 1), random_state=0)
                query_clusters = over_cluster(pca)
                for strategy in strategies:
                    model = train(TrainJob(data=data, regime=regime, split=split.name, strategy=strategy,
                                           progress=False, umap=False)).annotator
                    annotated = scadapt.annotate(query.copy(), model, majority_voting=True, progress=False)
                    calls = annotated.obs["scadapt_label"].astype(str).to_numpy()
                    own = annotated.obs["scadapt_over_clustering"].to_numpy()
                    rng = np.random.default_rng(0)
                    noisy = calls.copy()
                    flipped = rng.random(len(noisy)) < 1 / 3
                    noisy[flipped] = rng.choice(model.classes, int(flipped.sum()))
                    rows.append([data, split.name, strategy, query.n_obs, len(set(own)), _accuracy(calls, truth),
                                 _accuracy(majority_vote(calls, own), truth),
                                 _accuracy(majority_vote(calls, query_clusters), truth), _accuracy(noisy, truth),
                                 _accuracy(majority_vote(noisy, own), truth)])
                    print(rows[-1], flush=True)
    return rows


def _accuracy(labels, truth) -> str:
    import numpy as np

    return f"{np.mean(np.asarray(labels, dtype=str) == truth):.3f}"


if __name__ == "__main__":
    main()

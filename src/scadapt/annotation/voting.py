"""Majority voting as CellTypist defines it: over-cluster the query cells, then give every cell of
a cluster the cluster's most frequent label. Single-cell calls are noisy; a cluster of similar
cells is a steadier unit of identity.

The clusters are Leiden clusters of the model's own embedding of the cells (the backbone's CLS
embedding, an expression model's PCA scores, hidden layer or class scores), computed chunk by chunk
with the labels. CellTypist clusters a PCA of the query instead; on held-out cells of the bundled
datasets that cost the strong models more (test accuracy of `pca_logreg` on the pancreas subset
0.97 -> 0.88, own embedding 0.94) and helped a model that fails across technologies (`mlp` 0.61
-> 0.78, own embedding 0.61): ``benchmarks/majority_voting.py``. A user's own clusters of the query
(an ``obs`` column) are the third way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

N_NEIGHBORS = 10  # neighbours per cell in the graph that is over-clustered


def over_clustering_resolution(n_cells: int) -> float:
    """Leiden resolution for over-clustering ``n_cells`` cells: finer clusters for larger queries,
    CellTypist's steps (10 below 20,000 cells up to 30 from 200,000; CellTypist starts at 5 below
    5,000 cells, which merged the rare types of the bundled 500-700-cell sets into their neighbours)."""
    for limit, resolution in ((20_000, 10.0), (40_000, 15.0), (100_000, 20.0), (200_000, 25.0)):
        if n_cells < limit:
            return resolution
    return 30.0


def over_cluster(representation: np.ndarray, resolution: float | None = None, seed: int = 0) -> np.ndarray:
    """Leiden clusters (igraph flavour) of cells on the k-nearest-neighbour graph of their
    ``representation`` ``[n_cells, d]``; returns the cluster of each cell as strings ``[n_cells]``."""
    import scanpy as sc  # only majority voting needs scanpy's graph tools

    n_cells = len(representation)
    if n_cells < 3:
        return np.zeros(n_cells, dtype=int).astype(str)
    cells = AnnData(obsm={"representation": np.asarray(representation, dtype=np.float32)},
                    obs=pd.DataFrame(index=pd.RangeIndex(n_cells).astype(str)))
    sc.pp.neighbors(cells, n_neighbors=min(N_NEIGHBORS, n_cells - 1), use_rep="representation", random_state=seed)
    sc.tl.leiden(cells, resolution=resolution or over_clustering_resolution(n_cells), flavor="igraph",
                 n_iterations=2, directed=False, random_state=seed, key_added="over_clustering")
    return cells.obs["over_clustering"].to_numpy(dtype=str)


def majority_vote(labels, clusters) -> np.ndarray:
    """Each cell's label replaced by the most frequent label of its cluster (ties: the label that
    sorts first), ``[n_cells]``; a cell whose cluster is ``""`` (none) keeps its own."""
    clusters, labels = np.asarray(clusters, dtype=str), np.asarray(labels, dtype=str)
    table = pd.crosstab(pd.Series(clusters, name="cluster"), pd.Series(labels, name="label"))
    voted = table.idxmax(axis=1).reindex(clusters).to_numpy(dtype=object)
    voted[clusters == ""] = labels[clusters == ""]
    return voted

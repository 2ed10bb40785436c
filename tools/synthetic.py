"""Synthetic labelled counts of any shape, for trying scadapt on data as wide as a user's without
downloading one: cell types are shifts of gene programs over a shared baseline, counts negative
binomial around them (the usual model of UMI counts), library sizes log-normal.

Used by the time-to-answer benchmark and by the tests that need wide data (10,000+ genes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def synthetic_counts(genes: Sequence[str], n_cells: int = 1000, n_types: int = 8, program_genes: int = 150,
                     shift: float = 1.2, mean_library: float = 4000.0, dispersion: float = 0.5,
                     seed: int = 0) -> AnnData:
    """``n_cells`` x ``len(genes)`` raw counts (CSR, float32) with ``obs["cell_type"]``.

    Each gene has a baseline share of the library drawn log-normal (most genes rarely seen, as in
    real cells); each of ``n_types`` types multiplies the baseline of its own ``program_genes``
    random genes by ``exp(shift)``. Counts are negative binomial with mean ``library * share`` and
    variance ``mean + dispersion * mean**2``. Type sizes are uneven (a Dirichlet draw), each at
    least 2 % of the cells.
    """
    rng = np.random.default_rng(seed)
    n_genes = len(genes)
    baseline = rng.lognormal(mean=0.0, sigma=1.5, size=n_genes)
    programs = np.ones((n_types, n_genes))
    for kind in range(n_types):
        programs[kind, rng.choice(n_genes, size=min(program_genes, n_genes), replace=False)] = np.exp(shift)
    shares = np.maximum(rng.dirichlet(np.full(n_types, 2.0)), 0.02)
    types = rng.choice(n_types, size=n_cells, p=shares / shares.sum())
    library = rng.lognormal(np.log(mean_library), 0.4, size=n_cells)
    rows = []
    for start in range(0, n_cells, 256):  # a dense block of 256 cells at a time
        block = slice(start, min(start + 256, n_cells))
        profile = baseline * programs[types[block]]
        mean = library[block, None] * profile / profile.sum(axis=1, keepdims=True)
        gamma = rng.gamma(1.0 / dispersion, dispersion * mean)  # NB as a Poisson-gamma mixture
        rows.append(sp.csr_matrix(rng.poisson(gamma).astype(np.float32)))
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type_{t}" for t in types])},
                       index=[f"cell{i}" for i in range(n_cells)])
    return AnnData(sp.vstack(rows, format="csr"), obs=obs, var=pd.DataFrame(index=pd.Index(list(genes), dtype=str)))

"""Datasets and evaluation regimes.

``load_dataset`` reads a catalogued dataset or any ``.h5ad`` and validates it;
``make_splits`` divides its cells into named train/validation/test splits for a regime;
``load_and_split`` does both, as every job does.
"""

from scadapt.data.catalog import CATALOG, DatasetSpec, resolve_spec
from scadapt.data.dataset import DEFAULT_N_FOLDS, DatasetInfo, load_dataset, load_expression
from scadapt.data.loading import load_and_split
from scadapt.data.sources import read_h5ad
from scadapt.data.splits import (
    DEFAULT_LABEL_FRACTIONS,
    REGIMES,
    Split,
    load_splits,
    make_splits,
    required_cells_per_class,
    save_splits,
)

__all__ = [
    "CATALOG",
    "DEFAULT_LABEL_FRACTIONS",
    "DEFAULT_N_FOLDS",
    "REGIMES",
    "DatasetInfo",
    "DatasetSpec",
    "Split",
    "load_and_split",
    "load_dataset",
    "load_expression",
    "load_splits",
    "make_splits",
    "read_h5ad",
    "required_cells_per_class",
    "resolve_spec",
    "save_splits",
]

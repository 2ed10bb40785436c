"""The one way a job gets its cells: load the dataset as the split regime needs it, then split it.

``train``, ``tune``, ``splits``, the pipeline and the benchmark all call :func:`load_and_split`, so
classes too small for a regime are refused (or, with ``drop_rare_classes``, dropped and logged)
in one place.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import replace

from anndata import AnnData

from scadapt.data.dataset import load_dataset
from scadapt.data.options import DataOptions, SplitOptions, required_cells_per_class
from scadapt.data.splits import Split, make_splits


def load_and_split(data: str, options: DataOptions, split: SplitOptions,
                   folds: Sequence[int] | None = None) -> tuple[AnnData, list[Split]]:
    """The dataset ``data`` read with ``options`` and its splits for ``split.regime`` (``folds``:
    only these folds)."""
    adata = load_for_regime(data, options, split)
    return adata, split_for_regime(adata, options, split, folds)


def load_for_regime(data: str, options: DataOptions, split: SplitOptions,
                    loaded: MutableMapping[int, AnnData] | None = None) -> AnnData:
    """The dataset checked for the class sizes ``split.regime`` needs. ``loaded`` caches datasets by
    that size, for a caller that splits one dataset in several regimes."""
    needed = max(required_cells_per_class(split.regime, split.n_folds), options.min_cells_per_class)
    cache = {} if loaded is None else loaded
    if needed not in cache:
        cache[needed] = load_dataset(data, replace(options, min_cells_per_class=needed))
    return cache[needed]


def split_for_regime(adata: AnnData, options: DataOptions, split: SplitOptions,
                     folds: Sequence[int] | None = None) -> list[Split]:
    """The splits of ``split.regime`` of a dataset from :func:`load_for_regime`."""
    return make_splits(adata, split.regime, n_folds=split.n_folds, folds=folds,
                       validation_fraction=split.validation_fraction, label_fractions=split.label_fractions,
                       drop_rare_classes=options.drop_rare_classes, min_cells_per_class=options.min_cells_per_class,
                       seed=split.seed)

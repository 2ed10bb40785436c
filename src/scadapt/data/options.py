"""How a labelled dataset is read and split: the option groups that ``train``, ``tune``, ``splits``,
the pipeline and the benchmark share, and the regimes of the annotation benchmark.

Light on purpose (no anndata or torch): the console command parses these before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from scadapt.infra.errors import InputDataError
from scadapt.infra.options import internal, option
from scadapt.infra.parsers import number_list

REGIMES = ("full", "low", "cross_study")
DEFAULT_LABEL_FRACTIONS = (0.01, 0.05, 0.10)
DEFAULT_N_FOLDS = 5
BUNDLED_DATASETS = ("pbmc68k_reduced", "pancreas_small")  # what the demo backbone and the benchmark use by default


def required_cells_per_class(regime: str, n_folds: int = DEFAULT_N_FOLDS) -> int:
    """Cells a class needs so every part of every split of ``regime`` can hold it."""
    if regime not in REGIMES:
        raise InputDataError(f"Unknown regime {regime!r}; choose one of {', '.join(REGIMES)}.")
    return n_folds if regime in ("full", "low") else 2


def parse_study_groups(text: str) -> dict[str, tuple[str, ...]] | None:
    """``name:value,value;name:value`` -> ``{name: (value, ...)}``; empty -> None."""
    if not text:
        return None
    groups = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, sep, members = entry.partition(":")
        if not sep or not name.strip() or not members.strip():
            raise argparse.ArgumentTypeError(f"study groups are written name:value,value;name:value (got {entry!r})")
        groups[name.strip()] = tuple(m.strip() for m in members.split(",") if m.strip())
    return groups


@dataclass
class DataOptions:
    """How to read a labelled dataset: the same options for ``train``, ``tune``, ``splits``, the
    pipeline (``main``) and the benchmark. Unset keys fall back to the catalogue's for catalogued
    datasets; a user's ``.h5ad`` needs at least ``label_key``."""

    label_key: str | None = option(None, "obs column with the cell types (required for your own .h5ad)")
    batch_key: str | None = option(None, "obs column with the technology/batch (needed for cross_study)")
    layer: str | None = option(None, "matrix to use: a layer name, or 'raw' for adata.raw (default: X, "
                                     "or the catalogue's choice); counts or log-normalised values")
    gene_column: str | None = option(None, "var column with gene symbols, when var_names are not symbols")
    drop_rare_classes: bool = option(False, "drop classes too small for the regime instead of refusing "
                                            "(the drop is logged)")
    study_groups: dict[str, tuple[str, ...]] | None = option(
        None, "cross-study groups as name:value,value;name:value (default: the catalogue's groups, else leave "
              "one batch out)", parse=parse_study_groups)
    # the fewest cells a class needs whatever the regime: a benchmark sets the most any of its regimes
    # needs, so that dropping rare classes leaves the same classes in every regime of the run
    min_cells_per_class: int = internal(0)

    def given(self) -> dict[str, Any]:
        """The options set to something other than their default (what to pass on as overrides)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default and getattr(self, f.name) is not None}


@dataclass
class SplitOptions:
    """How to split a dataset into training, validation and test cells: the same options for
    ``train``, ``tune`` and ``splits`` (the pipeline uses the defaults; the benchmark runs several
    regimes). Splits are deterministic from ``seed``."""

    regime: str = option("full", "full (k-fold), low (1/5/10 %% of the training labels) or cross_study "
                                 "(held-out technologies)", choices=REGIMES)
    n_folds: int = option(DEFAULT_N_FOLDS, "folds of the full and low regimes")
    validation_fraction: float = option(0.2, "share of the training cells kept to choose the epoch and the settings")
    label_fractions: tuple[float, ...] = option(DEFAULT_LABEL_FRACTIONS,
                                                f"training-label fractions for the low regime (default: "
                                                f"{','.join(map(str, DEFAULT_LABEL_FRACTIONS))})", parse=number_list)
    seed: int = option(0, "seed of the splits, the models and the search")

"""The cells of a benchmark matrix: dataset x regime split x strategy, planned before any work."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from scadapt.benchmark.config import BenchmarkConfig
from scadapt.data import DatasetInfo, Split
from scadapt.data.digest import data_identity
from scadapt.data.loading import load_for_regime, split_for_regime
from scadapt.data.options import SplitOptions, required_cells_per_class
from scadapt.infra.errors import ScadaptError
from scadapt.strategies import run_order

if TYPE_CHECKING:
    from scadapt.strategies.base import Strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatrixCell:
    """One fit of the matrix. ``replicate`` is what varies within a setting: the fold for
    ``full``/``low``, the held-out group for ``cross_study``."""

    data: str  # how to load the dataset (catalogue name or .h5ad path)
    dataset: str  # its name in runs, reports and the registry
    regime: str
    split: str
    strategy: str
    fold: int | None = None
    label_fraction: float | None = None
    held_out: str = ""  # cross_study: the held-out group
    n_train: int = 0  # training cells of its split (for the job's plan)
    n_eval: int = 0  # validation and test cells of its split
    n_cells: int = 0  # cells of its dataset
    thin_classes: tuple[str, ...] = ()  # held-out splits: test classes training lacks or holds few of
    content: str = ""  # digest of the cells, values and annotations its split reads, and of the split's cells
    method: Strategy | None = field(default=None, compare=False, repr=False)  # the strategy, default settings

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.split}/{self.strategy}"

    @property
    def identity(self) -> str:
        """What its result is found by (with the benchmark's fingerprint): the key and the content,
        so a file changed under the same name is a new cell, never an old result."""
        return f"{self.key}@{self.content}" if self.content else self.key

    @property
    def setting(self) -> str:
        """``full``, ``low 5%`` or ``cross_study``: what the replicates of a result average over."""
        return f"low {self.label_fraction * 100:g}%" if self.regime == "low" else self.regime

    @property
    def replicate(self) -> str:
        return self.held_out if self.regime == "cross_study" else f"fold{self.fold}"


def plan_matrix(cfg: BenchmarkConfig, inspect: Callable[[AnnData, str], object] | None = None) -> list[MatrixCell]:
    """Every cell of the matrix, in the order they run: dataset, strategy (cheapest first: see
    :func:`~scadapt.strategies.run_order`), then regime splits.

    Loading and splitting every dataset first means a class too small to split, a missing key
    or a dataset without technologies fails (or is reported) before hours of work. ``inspect``
    sees each loaded dataset with its name (e.g. to check its genes against the backbone).
    """
    cells = []
    for data in cfg.datasets:
        splits = dataset_splits(data, cfg, inspect)
        for strategy in run_order(cfg.strategies, budgeted=cfg.time_budget is not None):
            cells.extend(_cell(data, cfg.methods[strategy], *found) for found in splits)
    if not cells:
        raise ScadaptError(
            f"The benchmark matrix is empty: no dataset of {', '.join(cfg.datasets)} has splits for regimes "
            f"{', '.join(cfg.regimes)} (cross_study needs a technology/batch key: --batch-key)."
        )
    return cells


def dataset_splits(data: str, cfg: BenchmarkConfig,
                   inspect: Callable[[AnnData, str], object] | None = None
                   ) -> list[tuple[str, Split, int, tuple[str, ...], str]]:
    """(dataset name, split, cells of the dataset, its thin classes: see :func:`thin_classes`, its
    content: see :attr:`MatrixCell.content`) for every regime of ``cfg`` this dataset supports."""
    found: list[tuple[str, Split, int, tuple[str, ...], str]] = []
    loaded: dict[int, AnnData] = {}
    options = cfg.reading
    for regime in cfg.regimes:
        first = not loaded
        split_options = SplitOptions(regime=regime, n_folds=cfg.n_folds, label_fractions=cfg.label_fractions,
                                     seed=cfg.seed)
        adata = load_for_regime(data, options, split_options, loaded)
        info = DatasetInfo.of(adata)
        if inspect is not None and first:
            inspect(adata, info.name)
        if regime == "cross_study" and not info.batch_key:
            log.info("%s has no technology/batch key: no cross_study cells for it.", info.name)
            continue
        needed = max(required_cells_per_class(regime, cfg.n_folds), options.min_cells_per_class)
        labels = adata.obs[info.label_key].astype(str).to_numpy()
        found.extend((info.name, split, adata.n_obs, thin_classes(split, labels, needed) if split.held_out else (),
                      "{:.16}.{:.12}".format(*data_identity(adata, split)))
                     for split in split_for_regime(adata, options, split_options, cfg.fold_numbers()))
    return found


def thin_classes(split: Split, labels: np.ndarray, needed: int) -> tuple[str, ...]:
    """The test classes of a held-out split whose training cells are fewer than ``needed`` (the
    regime's minimum per class), absent ones included: their test F1 says little of a strategy
    (0 by construction when absent)."""
    train = pd.Series(labels[split.train]).value_counts()
    test = pd.Series(labels[split.test]).value_counts()
    return tuple(f"{cls} ({int(train.get(cls, 0))} training, {int(n)} test cells)"
                 for cls, n in sorted(test.items()) if train.get(cls, 0) < needed)


def _cell(data: str, method: Strategy, dataset: str, split: Split, n_cells: int, thin: tuple[str, ...],
          content: str) -> MatrixCell:
    group = split.name.removeprefix("cross_study_") if split.regime == "cross_study" else ""
    return MatrixCell(data, dataset, split.regime, split.name, method.name, split.fold, split.label_fraction, group,
                      len(split.train), len(split.validation) + len(split.test), n_cells, thin, content, method)


def by_dataset_and_strategy(cells: list[MatrixCell]) -> list[list[MatrixCell]]:
    """The cells grouped by dataset and strategy (a study's group: with ``reuse`` tuning its first
    cell's study chooses the settings of the others), in the order of ``cells``."""
    groups: dict[tuple[str, str], list[MatrixCell]] = {}
    for cell in cells:
        groups.setdefault((cell.dataset, cell.strategy), []).append(cell)
    return list(groups.values())


def progress_grid(cells: Iterable[MatrixCell], finished: set[str]) -> pd.DataFrame:
    """``finished/planned`` per (dataset, strategy) row and setting column: the matrix filling."""
    rows = pd.DataFrame([{"dataset": c.dataset, "strategy": c.strategy, "setting": c.setting,
                          "done": c.identity in finished} for c in cells])
    if rows.empty:
        return rows
    counts = rows.groupby(["dataset", "strategy", "setting"], sort=False)["done"].agg(["sum", "count"])
    grid = (counts["sum"].astype(str) + "/" + counts["count"].astype(str)).unstack("setting", fill_value="-")
    settings = list(dict.fromkeys(rows["setting"]))
    return grid[settings]

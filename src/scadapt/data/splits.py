"""Evaluation regimes as named train/validation/test splits of cell indices.

* ``full``: stratified K folds give the test sets; the rest of each fold is split again into
  train and validation, stratified per class. Test cells never touch training or tuning.
* ``low``: the same folds and validation sets, with only ``max(1, round(n_c * f))`` training
  cells kept per class ``c``. The kept cells are nested: 1 % is a subset of 5 %, of 10 %.
* ``cross_study``: whole technology groups are held out as the test set; train and validation
  come from the other groups.

Everything is a pure function of the labels, the batch values and the seed, and a set of splits
can be written next to a run (``save_splits``) and read back by cell name (``load_splits``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.model_selection import StratifiedKFold

from scadapt.data.dataset import DEFAULT_N_FOLDS, DatasetInfo
from scadapt.data.options import DEFAULT_LABEL_FRACTIONS, REGIMES, required_cells_per_class
from scadapt.data.validation import check_study_groups, rare_classes_error
from scadapt.infra.errors import InputDataError
from scadapt.infra.storage import atomic_write

log = logging.getLogger(__name__)

PARTS = ("train", "validation", "test")
SPLITS_TABLE = "splits.csv"
SPLITS_META = "splits.json"


@dataclass(frozen=True)
class Split:
    """One train/validation/test division of the cells (positions into ``adata``)."""

    name: str
    regime: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    fold: int | None = None
    label_fraction: float | None = None
    held_out: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def part(self, name: str) -> np.ndarray:
        if name not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {name!r}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {part: len(self.part(part)) for part in PARTS}

    def part_labels(self, n_obs: int) -> np.ndarray:
        """``[n_obs]`` strings: the part of each cell, ``""`` for cells in no part."""
        labels = np.full(n_obs, "", dtype=object)
        for part in PARTS:
            labels[self.part(part)] = part
        return labels

    def describe(self) -> str:
        sizes = ", ".join(f"{n} {part}" for part, n in self.sizes().items())
        extra = f"; held out: {', '.join(self.held_out)}" if self.held_out else ""
        return f"{self.name}: {sizes}{extra}"

    def params(self) -> dict[str, object]:
        """Flat description for MLflow params, as ``split.*`` keys (the same for every regime)."""
        return {
            "split.name": self.name, "split.regime": self.regime, "split.fold": "" if self.fold is None else self.fold,
            "split.label_fraction": "" if self.label_fraction is None else self.label_fraction,
            "split.held_out": ",".join(self.held_out),
            **{f"split.n_{part}": n for part, n in self.sizes().items()},
        }


def make_splits(
    adata: AnnData,
    regime: str,
    *,
    label_key: str | None = None,
    batch_key: str | None = None,
    n_folds: int = DEFAULT_N_FOLDS,
    folds: Sequence[int] | None = None,
    validation_fraction: float = 0.2,
    label_fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS,
    study_groups: Mapping[str, Sequence[str]] | None = None,
    drop_rare_classes: bool = False,
    min_cells_per_class: int = 0,
    seed: int = 0,
) -> list[Split]:
    """The splits of one regime, deterministic in ``seed``.

    Args:
        adata: cells ``[n_obs, ...]``; keys default to those ``load_dataset`` stored in ``uns``.
        regime: ``full``, ``low`` or ``cross_study``.
        n_folds: K for the stratified test folds (``full``, ``low``).
        folds: only these fold numbers (default all), e.g. ``[0]`` for a quick run.
        validation_fraction: share of each class's non-test cells used for validation.
        label_fractions: training-label fractions for ``low``.
        study_groups: ``{group: [batch values]}`` held out one group at a time (``cross_study``);
            default: the catalogue's groups, else every batch value on its own.
        drop_rare_classes: leave cells of classes too small for the regime out of every part
            (noted on each split) instead of refusing.
        min_cells_per_class: a class needs at least this many cells even where the regime needs
            fewer (a run of several regimes keeps one class set).

    Returns:
        Named splits, e.g. ``full_fold0``, ``low_5pct_fold0``, ``cross_study_plate_like``.
    """
    _check_regime(regime)
    info = DatasetInfo.of(adata)
    label_key = label_key or (info.label_key if info else None)
    if label_key is None or label_key not in adata.obs.columns:
        raise InputDataError(
            f"make_splits needs the obs column with the labels (label_key=...; got {label_key!r}; "
            f"columns: {', '.join(map(str, adata.obs.columns))})."
        )
    if not 0 < validation_fraction < 1:
        raise InputDataError(f"validation_fraction must be between 0 and 1, got {validation_fraction}.")
    labels = adata.obs[label_key].astype(str).to_numpy()
    needed = max(required_cells_per_class(regime, n_folds), min_cells_per_class)
    usable, notes = _usable_cells(labels, label_key, needed, drop_rare_classes)

    if regime == "cross_study":
        batch_key = batch_key or (info.batch_key if info else None)
        groups = study_groups or (info.study_groups if info and info.study_groups else None)
        splits = _cross_study(adata, labels, usable, batch_key, groups, validation_fraction, seed)
    else:
        if n_folds < 2:
            raise InputDataError(f"n_folds must be at least 2, got {n_folds}.")
        splits = _full(labels, usable, n_folds, folds, validation_fraction, seed)
        if regime == "low":
            splits = [s for base in splits for s in _low(base, labels, label_fractions, seed)]
    if notes:
        splits = [_with_notes(s, notes) for s in splits]
    for split in splits:
        log.info("Split %s.", split.describe())
    return splits


# -- regimes -----------------------------------------------------------------------------------
def _full(labels, usable, n_folds, folds, validation_fraction, seed) -> list[Split]:
    wanted = set(range(n_folds)) if folds is None else set(folds)
    if bad := sorted(f for f in wanted if not 0 <= f < n_folds):
        raise InputDataError(f"Fold numbers must be in 0..{n_folds - 1}, got {bad}.")
    kfold = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = []
    for fold, (rest, test) in enumerate(kfold.split(np.zeros(len(usable)), labels[usable])):
        if fold not in wanted:
            continue
        rng = np.random.default_rng([seed, fold])
        train, validation, notes = _train_validation(usable[rest], labels, validation_fraction, rng)
        splits.append(Split(f"full_fold{fold}", "full", train, validation, np.sort(usable[test]),
                            fold=fold, notes=notes))
    return splits


def _low(base: Split, labels, fractions, seed) -> list[Split]:
    """Nested subsets of the training cells of one fold, at least one cell per class."""
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise InputDataError(f"label_fractions must be in (0, 1], got {list(fractions)}.")
    rng = np.random.default_rng([seed, base.fold, 1])
    shuffled = {c: rng.permutation(base.train[labels[base.train] == c]) for c in np.unique(labels[base.train])}
    splits = []
    for fraction in sorted(fractions):
        keep = np.sort(np.concatenate([cells[: max(1, round(len(cells) * fraction))] for cells in shuffled.values()]))
        name = f"low_{_percent(fraction)}pct_fold{base.fold}"
        splits.append(Split(name, "low", keep, base.validation, base.test, fold=base.fold,
                            label_fraction=fraction, notes=base.notes))
    return splits


def _cross_study(adata, labels, usable, batch_key, groups, validation_fraction, seed) -> list[Split]:
    if batch_key is None or batch_key not in adata.obs.columns:
        raise InputDataError(
            "cross_study holds out technology/batch groups and needs the obs column that names them "
            f"(batch_key=...; got {batch_key!r}; columns: {', '.join(map(str, adata.obs.columns))})."
        )
    batches = adata.obs[batch_key].astype(str).to_numpy()
    present = sorted(set(batches[usable]))
    if len(present) < 2:
        raise InputDataError(f"cross_study needs at least two values in obs[{batch_key!r}], found {present}.")
    if groups is None:
        groups = {value: (value,) for value in present}  # leave one batch out
    check_study_groups(batches, groups, batch_key)
    if len(groups) == 1 and set(next(iter(groups.values()))) >= set(present):
        raise InputDataError("The only cross-study group holds every batch: nothing is left to train on.")
    splits = []
    for index, (group, members) in enumerate(groups.items()):
        held = np.isin(batches[usable], list(members))
        test, rest = usable[held], usable[~held]
        if len(rest) == 0:
            raise InputDataError(f"Holding out {group!r} leaves no cells to train on.")
        rng = np.random.default_rng([seed, 1000 + index])
        train, validation, notes = _train_validation(rest, labels, validation_fraction, rng)
        unseen = sorted(set(labels[test]) - set(labels[train]))
        if unseen:
            n = int(np.isin(labels[test], unseen).sum())
            notes += (f"{n} test cells belong to classes absent from training ({', '.join(unseen)}); "
                      "no model can predict them",)
        splits.append(Split(f"cross_study_{_slug(group)}", "cross_study", train, validation, test,
                            held_out=tuple(members), notes=notes))
    return splits


# -- helpers -----------------------------------------------------------------------------------
def _usable_cells(labels, label_key, needed, drop) -> tuple[np.ndarray, tuple[str, ...]]:
    counts = pd.Series(labels).value_counts()
    if len(counts) < 2:
        raise InputDataError(f"All cells have the same label in obs[{label_key!r}]; splits need two classes.")
    rare = counts[counts < needed]
    if len(rare) == 0:
        return np.arange(len(labels)), ()
    if not drop:
        raise rare_classes_error(rare, label_key, needed)
    keep = ~np.isin(labels, rare.index.to_numpy())
    note = f"left out {int((~keep).sum())} cells of classes below {needed} cells: {', '.join(map(str, rare.index))}"
    return np.flatnonzero(keep), (note,)


def _train_validation(indices, labels, fraction, rng) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Stratified per class: ``round(n_c * fraction)`` cells to validation, at least one on each
    side when the class has two cells; a single cell stays in training (and is noted)."""
    train, validation, alone = [], [], []
    for cls in np.unique(labels[indices]):
        cells = rng.permutation(indices[labels[indices] == cls])
        n_val = 0 if len(cells) < 2 else min(max(1, round(len(cells) * fraction)), len(cells) - 1)
        validation.append(cells[:n_val])
        train.append(cells[n_val:])
        if len(cells) < 2:
            alone.append(str(cls))
    notes = (f"not stratified: class(es) with one non-test cell kept in training only: {', '.join(alone)}",) if alone else ()
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation)), notes


def _with_notes(split: Split, notes: tuple[str, ...]) -> Split:
    return Split(split.name, split.regime, split.train, split.validation, split.test, split.fold,
                 split.label_fraction, split.held_out, notes + split.notes)


def _check_regime(regime: str) -> None:
    if regime not in REGIMES:
        raise InputDataError(f"Unknown regime {regime!r}; choose one of {', '.join(REGIMES)}.")


def _percent(fraction: float) -> str:
    text = f"{fraction * 100:.2f}".rstrip("0").rstrip(".")
    return text.replace(".", "p")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in str(text)).strip("_") or "group"


# -- saving ------------------------------------------------------------------------------------
def save_splits(splits: Sequence[Split], adata: AnnData, directory: str | Path, **settings) -> list[Path]:
    """Write ``splits.csv`` (one row per cell: name, label, the part in each split) and
    ``splits.json`` (regime settings, sizes, notes). ``settings`` (seed, n_folds, ...) are kept
    so the splits can be remade; ``load_splits`` reads them back by cell name."""
    directory = Path(directory)
    info = DatasetInfo.of(adata)
    table = pd.DataFrame({"obs_name": adata.obs_names.astype(str)})
    if info and info.label_key:
        table[info.label_key] = adata.obs[info.label_key].astype(str).to_numpy()
    for split in splits:
        table[split.name] = split.part_labels(adata.n_obs)
    meta = {
        "version": 1,
        "dataset": info.name if info else None,
        "n_obs": adata.n_obs,
        "settings": settings,
        "splits": [
            {"name": s.name, "regime": s.regime, "fold": s.fold, "label_fraction": s.label_fraction,
             "held_out": list(s.held_out), "notes": list(s.notes), "sizes": s.sizes()}
            for s in splits
        ],
    }
    table_path, meta_path = directory / SPLITS_TABLE, directory / SPLITS_META
    atomic_write(table_path, lambda f: f.write(table.to_csv(index=False).encode()))
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=2, default=str).encode()))
    return [table_path, meta_path]


def load_splits(directory: str | Path, adata: AnnData) -> list[Split]:
    """Splits written by ``save_splits``, as positions into ``adata`` (matched by cell name)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / SPLITS_META).read_text())
        table = pd.read_csv(directory / SPLITS_TABLE, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise InputDataError(f"Cannot read saved splits in {directory}: {error}") from None
    position = pd.Index(adata.obs_names.astype(str)).get_indexer(table["obs_name"])
    if (missing := int((position < 0).sum())) > 0:
        raise InputDataError(
            f"{missing} cells of the saved splits are not in this AnnData (e.g. "
            f"{table['obs_name'][position < 0].iloc[0]!r}); load the same dataset the splits were made on."
        )
    splits = []
    for entry in meta["splits"]:
        parts = table[entry["name"]].to_numpy()
        splits.append(Split(
            entry["name"], entry["regime"],
            *(np.sort(position[parts == part]) for part in PARTS),
            fold=entry["fold"], label_fraction=entry["label_fraction"],
            held_out=tuple(entry["held_out"]), notes=tuple(entry["notes"]),
        ))
    return splits

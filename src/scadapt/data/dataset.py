"""``load_dataset``: any dataset, one validation step, one AnnData out.

The returned AnnData has the chosen expression matrix in ``X`` (CSR when sparse), gene symbols
as ``var_names``, the labels as a string categorical, and what was done in
``adata.uns["scadapt"]`` (see :class:`DatasetInfo`), so later steps need no extra arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from anndata import AnnData

from scadapt.data.catalog import DatasetSpec, resolve_spec
from scadapt.data.options import DEFAULT_N_FOLDS, DataOptions
from scadapt.data.validation import (
    check_batch_key,
    check_cells,
    check_labels,
    check_study_groups,
    check_values,
    keep_sparse,
    scaled_data_fix,
    select_matrix,
    use_gene_symbols,
    value_kind,
)
from scadapt.infra.errors import InputDataError
from scadapt.infra.options import keyword_values

log = logging.getLogger(__name__)

UNS_KEY = "scadapt"


@dataclass(frozen=True)
class DatasetInfo:
    """What ``load_dataset`` read and decided; kept in ``adata.uns["scadapt"]``."""

    name: str
    source: str
    label_key: str | None = None
    batch_key: str | None = None
    layer: str | None = None
    gene_column: str | None = None
    value_kind: str = ""
    dropped_classes: dict[str, int] = field(default_factory=dict)
    dropped_empty_cells: int = 0
    dropped_unlabelled_cells: int = 0
    study_groups: dict[str, list[str]] = field(default_factory=dict)

    def to_uns(self) -> dict:
        """h5ad cannot store None: unset fields are left out."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def of(cls, adata: AnnData) -> DatasetInfo | None:
        stored = adata.uns.get(UNS_KEY)
        if not isinstance(stored, Mapping):
            return None
        known = {key: stored[key] for key in cls.__dataclass_fields__ if key in stored}
        known["dropped_classes"] = {str(k): int(v) for k, v in dict(known.get("dropped_classes", {})).items()}
        known["study_groups"] = {str(k): [str(m) for m in v] for k, v in dict(known.get("study_groups", {})).items()}
        return cls(**known)


def load_expression(
    source: str | Path | DatasetSpec | AnnData,
    *,
    layer: str | None = None,
    gene_column: str | None = None,
    cache_dir: str | Path | None = None,
    drop_empty_cells: bool = True,
) -> AnnData:
    """Expression only (no labels needed, e.g. for pretraining or annotating): read, select the
    matrix, check values, cells and gene symbols. ``drop_empty_cells=False`` keeps cells without
    expression (annotation flags them instead)."""
    spec = resolve_spec(source, DataOptions(layer=layer, gene_column=gene_column))
    adata, _, _ = _read_checked(spec, cache_dir, drop_empty_cells)
    return adata


def load_dataset(source: str | Path | DatasetSpec | AnnData, options: DataOptions | None = None, *,
                 name: str | None = None, cache_dir: str | Path | None = None, **keywords: Any) -> AnnData:
    """A labelled dataset, validated, as AnnData ``[n_cells, n_genes]``.

    Args:
        source: a catalogued name (``pbmc68k_reduced``, ``pancreas_small``, ``human_pancreas``),
            an ``.h5ad`` path, an AnnData (copied, not changed) or a :class:`DatasetSpec`.
        options: how to read it (:class:`~scadapt.data.options.DataOptions`: ``label_key``, required
            for your own file, ``batch_key``, ``layer``, ``gene_column``, ``study_groups``,
            ``drop_rare_classes``); those set override the catalogue's. Or give them as ``keywords``,
            in the command's forms or as Python values. Classes with fewer than
            ``min_cells_per_class`` cells (default: 5, the folds of ``full``) are refused, or
            dropped with ``drop_rare_classes`` (logged, and kept in ``uns["scadapt"]``).
        name: dataset name for runs and the registry (default: catalogue name or file stem).
        cache_dir: where downloads go (default ``$SCADAPT_CACHE``).
    """
    if keywords:
        options = replace(options or DataOptions(), **keyword_values(DataOptions, keywords, "load_dataset"))
    spec = resolve_spec(source, options, name)
    reading = spec.reading
    if reading.label_key is None:
        raise InputDataError(
            f"{spec.name}: say which obs column holds the cell types with label_key=... (--label-key)."
        )
    adata, kind, n_empty = _read_checked(spec, cache_dir)
    adata, dropped, n_unlabelled = check_labels(adata, reading.label_key, reading.min_cells_per_class or DEFAULT_N_FOLDS,
                                                reading.drop_rare_classes)
    check_batch_key(adata, reading.batch_key)
    if reading.study_groups:
        if reading.batch_key is None:
            raise InputDataError("study_groups need a batch_key: the obs column whose values they group.")
        check_study_groups(adata.obs[reading.batch_key], reading.study_groups, reading.batch_key)
    info = DatasetInfo(
        name=spec.name, source=spec.source.describe(), label_key=reading.label_key, batch_key=reading.batch_key,
        layer=reading.layer, gene_column=reading.gene_column, value_kind=kind, dropped_classes=dropped,
        dropped_empty_cells=n_empty, dropped_unlabelled_cells=n_unlabelled,
        study_groups={k: list(v) for k, v in (reading.study_groups or {}).items()},
    )
    adata.uns[UNS_KEY] = info.to_uns()
    n_classes = adata.obs[reading.label_key].nunique()
    log.info("Loaded %s: %d cells x %d genes, %d classes, values: %s.", spec.name, adata.n_obs, adata.n_vars,
             n_classes, kind)
    return adata


def _read_checked(spec: DatasetSpec, cache_dir: str | Path | None,
                  drop_empty_cells: bool = True) -> tuple[AnnData, str, int]:
    """(AnnData, value kind, number of empty cells dropped)."""
    original = spec.source.read(cache_dir)
    adata = select_matrix(original, spec.reading.layer)
    check_values(adata.X, scaled_data_fix(original) if spec.reading.layer is None else "")
    adata = use_gene_symbols(adata, spec.reading.gene_column)
    adata = keep_sparse(adata)
    adata, n_empty = check_cells(adata, drop_empty_cells)
    return adata, value_kind(adata.X), n_empty


"""The checks every dataset passes before anything is trained on it.

Each check raises :class:`~scadapt.infra.errors.InputDataError` with a message that says what is wrong
and how to fix it. None of them densifies a sparse matrix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scadapt.infra.errors import InputDataError
from scadapt.infra.notices import warn_once

log = logging.getLogger(__name__)

MAX_MISSING_FRACTION = 0.5  # of a model's genes that data to annotate may lack (they count as zero)

RAW = "raw"  # layer name that selects adata.raw, as scanpy's use_raw does
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}")
_GENERIC_FIX = "Use adata.raw, layers['counts'], or the matrix from before scaling."
_LOG_SCALE_MAX = 30.0  # log1p of a normalised count rarely exceeds ~15; raw counts routinely do
# Label strings that mean "no label" (written by pandas, R or by hand), compared case-insensitively.
MISSING_LABELS = frozenset({"", "nan", "none", "na", "<na>", "n/a", "null"})
# one gene in one cell: deep full-length protocols count up to ~1e6 reads; far beyond is corrupt data
MAX_EXPRESSION = 1e8
# counts and log-normalised values are mostly zero (the bundled sets: 67-90 %, every cell >= 46 %);
# a matrix of at least MIN_VALUES_FOR_ZEROS values with fewer zeros than this is not expression
MIN_ZERO_FRACTION, MIN_VALUES_FOR_ZEROS = 0.05, 100
MAX_EMPTY_CELL_FRACTION = 0.5  # more cells without expression than this: the wrong matrix was chosen


def looks_like_ensembl(names) -> bool:
    """True when most of the first 200 names are Ensembl gene ids (``ENSG00000141510``)."""
    sample = [str(n) for n in list(names)[:200]]
    return bool(sample) and np.mean([bool(_ENSEMBL.match(n)) for n in sample]) > 0.5


def check_gene_coverage(names, genes: list[str], max_missing: float = MAX_MISSING_FRACTION) -> np.ndarray:
    """Which of the model's ``genes`` are among ``names`` (bool ``[len(genes)]``); refuse when more
    than ``max_missing`` of them are absent."""
    found = pd.Index(pd.Index(names).astype(str)).get_indexer(genes) >= 0
    missing = 1.0 - found.mean()
    if missing > max_missing:
        raise InputDataError(
            f"The data has {found.sum()} of the {len(genes)} genes this model reads ({missing:.0%} missing, at "
            f"most {max_missing:.0%} allowed); e.g. missing {', '.join(np.asarray(genes)[~found][:5])}. "
            "Use gene symbols as column names / var_names."
        )
    return found


def select_matrix(adata: AnnData, layer: str | None) -> AnnData:
    """An AnnData whose ``X`` is the chosen expression matrix (``X``, a layer, or ``raw``)."""
    expression_matrix(adata, layer)  # refuses a missing matrix, naming what there is
    if layer is None:
        return adata
    if layer in adata.layers:
        return AnnData(
            X=adata.layers[layer], obs=adata.obs.copy(), var=adata.var.copy(), uns=dict(adata.uns),
            obsm=dict(adata.obsm), layers=dict(adata.layers),
        )
    out = adata.raw.to_adata()
    out.obs = adata.obs.copy()
    out.uns = dict(adata.uns)
    out.obsm = dict(adata.obsm)
    return out


def expression_matrix(adata: AnnData, layer: str | None):
    """The chosen expression matrix (``X``, a layer, or ``raw``) and the ``var`` table of its genes,
    without copying: for a backed AnnData, ``X`` stays on disk and is read by row slices."""
    if layer is None:
        if adata.X is None:
            raise InputDataError(f"adata.X is empty; pass layer=... (layers: {_names(adata.layers.keys())}).")
        return adata.X, adata.var
    if layer in adata.layers:
        return adata.layers[layer], adata.var
    if layer == RAW and adata.raw is not None:
        return adata.raw.X, adata.raw.var
    raise InputDataError(
        f"Layer {layer!r} is not in adata.layers (layers: {_names(adata.layers.keys())}"
        f"{'; adata.raw is set, select it with layer=' + repr(RAW) if adata.raw is not None else ''})."
    )


def scaled_data_fix(adata: AnnData) -> str:
    """What to use instead of a scaled matrix, named from what this AnnData holds."""
    options = []
    if adata.raw is not None:
        options.append(f"layer={RAW!r} (adata.raw)")
    options += [f"layer={name!r}" for name in adata.layers.keys()]
    if options:
        return "Use " + " or ".join(options) + " if it holds counts or log-normalised values."
    return _GENERIC_FIX


def check_values(matrix, fix: str = "") -> None:
    """Refuse what is not counts or log-normalised expression: non-numeric, NaN/infinite, negative
    (scaled) and absurdly large values, and a matrix without zeros (shifted z-scores, imputed values).
    Training, ``predict`` and the served model all check with this one function."""
    dtype = matrix.dtype
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise InputDataError(
            f"The expression matrix has dtype {dtype}; it must hold numbers (counts or log-normalised values)."
        )
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if data.size and not np.isfinite(data).all():
        raise InputDataError(
            f"The expression matrix contains {int((~np.isfinite(data)).sum())} NaN or infinite values; "
            "fix or drop the affected cells."
        )
    if data.size and data.min() < 0:
        raise InputDataError(
            f"The expression matrix has negative values (min {data.min():.3g}): it looks scaled or centred "
            f"(e.g. sc.pp.scale). scGPT and the baselines need raw counts or log-normalised values. "
            f"{fix or _GENERIC_FIX}"
        )
    if data.size and (largest := float(data.max())) > MAX_EXPRESSION:
        raise InputDataError(
            f"The expression matrix has values up to {largest:.3g}, beyond any count or normalised expression of one "
            f"gene in one cell (at most {MAX_EXPRESSION:.0e}): {int((data > MAX_EXPRESSION).sum())} value(s) look "
            "corrupt or in the wrong unit. Fix or drop the affected cells."
        )
    n_values = int(np.prod(matrix.shape))
    if n_values >= MIN_VALUES_FOR_ZEROS and (zeros := 1.0 - int(np.count_nonzero(data)) / n_values) < MIN_ZERO_FRACTION:
        raise InputDataError(
            f"Only {zeros:.1%} of the expression values are zero. Counts and log-normalised values are mostly zero; "
            "a matrix without zeros is shifted z-scores or imputed values, which scGPT's binning reads as every gene "
            f"expressed. Use counts or log-normalised values. {fix or _GENERIC_FIX}"
        )


def check_cells(adata: AnnData, drop_empty: bool = True) -> tuple[AnnData, int]:
    """Refuse a matrix without cells, genes or expression; drop cells that express nothing.

    Returns the AnnData and the number of dropped cells. With ``drop_empty=False`` (annotating
    given cells) empty cells stay and are flagged downstream.
    """
    if adata.n_obs == 0:
        raise InputDataError("The dataset has no cells (0 rows). Check the file, or the filter that produced it.")
    if adata.n_vars == 0:
        raise InputDataError("The dataset has no genes (0 columns). Check the file, or the layer chosen.")
    nonzero = _nonzero_per_row(adata.X)
    expressed = nonzero > 0
    n_empty = int((~expressed).sum())
    if n_empty == adata.n_obs:
        raise InputDataError(
            f"All {adata.n_obs} cells have zero expression: the matrix holds no data. Choose the matrix with the "
            f"counts or log-normalised values (layer=..., layers: {_names(adata.layers.keys())}"
            f"{', or raw' if adata.raw is not None else ''})."
        )
    if drop_empty and n_empty:
        if n_empty > MAX_EMPTY_CELL_FRACTION * adata.n_obs:
            raise InputDataError(
                f"{n_empty} of {adata.n_obs} cells have zero expression. That many empty cells suggests the wrong "
                "matrix or a failed filter; choose another layer or remove the empty cells first."
            )
        warn_once(log, "Dropping %d of %d cells with zero expression (they carry no information).", n_empty,
                    adata.n_obs)
        adata = adata[expressed].copy()
    return adata, n_empty if drop_empty else 0


def _nonzero_per_row(matrix) -> np.ndarray:
    if sp.issparse(matrix):
        return np.asarray((matrix != 0).sum(axis=1)).ravel()
    return np.count_nonzero(np.asarray(matrix), axis=1)


def value_kind(matrix) -> str:
    """``counts`` (all integers), ``log_normalized`` (max below ~30) or ``normalized`` (anything else).

    Binning makes the first two equivalent for scGPT; the PCA baseline log-normalises the others.
    """
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    if data.size == 0:
        return "counts"
    if np.array_equal(data, np.round(data)):
        return "counts"
    return "log_normalized" if float(data.max()) <= _LOG_SCALE_MAX else "normalized"


def keep_sparse(adata: AnnData) -> AnnData:
    """Sparse matrices become CSR (fast row access for tokenization); dense ones stay dense."""
    if sp.issparse(adata.X) and not isinstance(adata.X, sp.csr_matrix | sp.csr_array):
        adata.X = sp.csr_matrix(adata.X)
    return adata


def use_gene_symbols(adata: AnnData, gene_column: str | None) -> AnnData:
    """Put gene symbols in ``var_names``, refusing Ensembl ids, missing and duplicate names.

    With ``gene_column`` the symbols come from that ``var`` column (the old names are kept in
    ``var["original_var_name"]``); genes without a symbol are dropped and counted.
    """
    symbols, kept = gene_symbols(adata.var, gene_column)
    if gene_column is None:
        return adata
    if not kept.all():
        adata = adata[:, kept].copy()
    adata.var["original_var_name"] = adata.var_names.astype(str)
    adata.var_names = symbols
    return adata


def gene_symbols(var: pd.DataFrame, gene_column: str | None) -> tuple[pd.Index, np.ndarray]:
    """The gene symbols of the genes ``var`` describes (its index, or its column ``gene_column``)
    and which genes have one (bool ``[len(var)]``), checked as :func:`use_gene_symbols` says,
    without touching the matrix (annotation reads it in chunks)."""
    kept = np.ones(len(var), dtype=bool)
    if gene_column is not None:
        if gene_column not in var.columns:
            raise InputDataError(
                f"Gene column {gene_column!r} is not in adata.var (columns: {_names(var.columns)}); "
                "leave it out to use var_names."
            )
        column = var[gene_column]
        kept = ~(column.isna().to_numpy() | (column.astype(str).str.strip() == "").to_numpy())
        if not kept.any():
            raise InputDataError(f"adata.var[{gene_column!r}] holds no gene symbols (all empty).")
        if not kept.all():
            warn_once(log, "Dropping %d genes without a symbol in var[%r].", int((~kept).sum()), gene_column)
        symbols = pd.Index(column[kept].astype(str).to_numpy())
    else:
        symbols = pd.Index(var.index.astype(str))
        if looks_like_ensembl(symbols):
            candidates = [c for c in var.columns if _looks_like_symbols(var[c])]
            raise InputDataError(
                f"adata.var_names look like Ensembl ids (e.g. {symbols[0]}); the scGPT vocabulary uses gene "
                "symbols. Pass the var column that holds symbols"
                + (f", e.g. gene_column={candidates[0]!r} (candidates: {_names(candidates)})." if candidates else
                   f" with gene_column=... (var columns: {_names(var.columns)}).")
            )
    duplicated = symbols[symbols.duplicated()].unique()
    if len(duplicated):
        raise InputDataError(
            f"{len(duplicated)} gene name(s) occur more than once, e.g. {_names(duplicated[:5])}. Make them unique: "
            "sum the duplicated genes, or keep one of each (adata = adata[:, ~adata.var_names.duplicated()])."
        )
    return symbols, kept


def _looks_like_symbols(column: pd.Series) -> bool:
    if column.dtype.kind not in "OUS" and not isinstance(column.dtype, pd.CategoricalDtype):
        return False
    values = column.dropna().astype(str)
    return len(values) > 0 and not looks_like_ensembl(values) and values.str.match(r"^[A-Za-z]").mean() > 0.9


def check_labels(
    adata: AnnData, label_key: str, min_cells_per_class: int, drop_rare_classes: bool = False
) -> tuple[AnnData, dict[str, int], int]:
    """Check the label column; leave out cells without a label (NaN, or a string in
    :data:`MISSING_LABELS`); drop classes below ``min_cells_per_class`` only when allowed.

    Returns the AnnData (labels as a string categorical), ``{dropped class: n cells}`` and the
    number of unlabelled cells left out.
    """
    if label_key not in adata.obs.columns:
        raise InputDataError(
            f"Label key {label_key!r} is not a column of adata.obs (columns: {_names(adata.obs.columns)}). "
            "Pass the column that holds the cell types with label_key=... (--label-key)."
        )
    labels = adata.obs[label_key]
    n_cells = adata.n_obs
    unlabelled = labels.isna().to_numpy() | labels.astype(str).str.strip().str.lower().isin(MISSING_LABELS).to_numpy()
    if unlabelled.all():
        raise InputDataError(
            f"None of the {adata.n_obs} cells has a label in obs[{label_key!r}] (all empty, NaN, None or NA). "
            "Pass the column that holds the cell types with label_key=... (--label-key)."
        )
    if unlabelled.any():
        warn_once(log, "Leaving out %d of %d cells without a label in obs[%r] (empty, NaN, None or NA).",
                    int(unlabelled.sum()), adata.n_obs, label_key)
        adata = adata[~unlabelled].copy()
        labels = adata.obs[label_key]
    adata.obs[label_key] = pd.Categorical(labels.astype(str).str.strip())
    counts = adata.obs[label_key].value_counts()
    counts = counts[counts > 0]
    if len(counts) < 2:
        raise InputDataError(
            f"All {adata.n_obs} cells have the same label ({counts.index[0]!r} in obs[{label_key!r}]); "
            "annotation needs at least two classes."
        )
    rare = counts[counts < min_cells_per_class]
    dropped: dict[str, int] = {}
    if len(rare):
        if not drop_rare_classes:
            raise rare_classes_error(rare, label_key, min_cells_per_class)
        dropped = {str(k): int(v) for k, v in rare.items()}
        adata = adata[~adata.obs[label_key].isin(rare.index)].copy()
        adata.obs[label_key] = adata.obs[label_key].cat.remove_unused_categories()
        warn_once(log, "Dropped %d cells of %d rare class(es): %s.", sum(dropped.values()), len(rare), _counts(rare))
        if adata.obs[label_key].nunique() < 2:
            raise InputDataError("Fewer than two classes are left after dropping rare classes.")
    return adata, dropped, n_cells - adata.n_obs - sum(dropped.values())


def rare_classes_error(rare: pd.Series, label_key: str, needed: int) -> InputDataError:
    """The error for classes (``rare``: class -> cell count) smaller than a split needs."""
    return InputDataError(
        f"{len(rare)} class(es) in obs[{label_key!r}] have fewer than the {needed} cells a split needs: "
        f"{_counts(rare)}. Allow dropping them with drop_rare_classes=True (--drop-rare-classes), merge them "
        "into a broader label, or use fewer folds."
    )


def _counts(counts: pd.Series) -> str:
    return ", ".join(f"{name!r} ({n} cell{'s' if n > 1 else ''})" for name, n in counts.items())


def check_batch_key(adata: AnnData, batch_key: str | None) -> None:
    if batch_key is not None and batch_key not in adata.obs.columns:
        raise InputDataError(
            f"Batch key {batch_key!r} is not a column of adata.obs (columns: {_names(adata.obs.columns)})."
        )
    if batch_key is not None and (missing := int(adata.obs[batch_key].isna().sum())):
        raise InputDataError(f"{missing} cells have no value in obs[{batch_key!r}]; fill or drop them.")


def check_study_groups(values, groups: Mapping[str, tuple[str, ...] | list[str]], batch_key: str) -> None:
    """Every group must name existing batch values, and no value may be in two groups."""
    present = set(map(str, pd.unique(np.asarray(values, dtype=str))))
    seen: dict[str, str] = {}
    for group, members in groups.items():
        if not members:
            raise InputDataError(f"Cross-study group {group!r} is empty.")
        unknown = [m for m in members if m not in present]
        if unknown:
            raise InputDataError(
                f"Cross-study group {group!r} names {_names(unknown)}, which do not occur in obs[{batch_key!r}] "
                f"(values: {_names(sorted(present))})."
            )
        for member in members:
            if member in seen:
                raise InputDataError(f"{member!r} is in two cross-study groups: {seen[member]!r} and {group!r}.")
            seen[member] = group


def _names(items) -> str:
    items = [str(i) for i in items]
    return ", ".join(items) if items else "(none)"

"""Turning a request table (cells x gene symbols) into the AnnData an annotator reads."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scadapt.data.validation import MAX_MISSING_FRACTION, check_gene_coverage, check_values
from scadapt.infra.errors import InputDataError

log = logging.getLogger(__name__)

OUTPUTS = ("label", "probabilities", "embedding")


def cells_from_table(table: pd.DataFrame, genes: list[str], max_missing: float = MAX_MISSING_FRACTION) -> AnnData:
    """:func:`matrix_from_table` as an AnnData (``var_names`` = ``genes``, ``obs_names`` = the table's index)."""
    cells = AnnData(matrix_from_table(table, genes, max_missing))
    cells.var_names = list(genes)
    cells.obs_names = [str(i) for i in table.index]
    return cells


def matrix_from_table(table: pd.DataFrame, genes: list[str], max_missing: float = MAX_MISSING_FRACTION) -> sp.csr_matrix:
    """Cells ``[n_cells, len(genes)]`` (float32, sparse) from a table with one column per gene symbol.

    Genes of the model that the table lacks count as zero, up to ``max_missing`` of them; columns
    the model does not know are ignored with a warning. Values must be counts or log-normalised
    expression (numbers, not negative).
    """
    if not isinstance(table, pd.DataFrame):
        raise InputDataError("Send a table: one row per cell and one column per gene symbol (e.g. dataframe_split).")
    columns = pd.Index(table.columns.astype(str))
    if columns.has_duplicates:
        raise InputDataError(f"Gene columns appear more than once: {', '.join(columns[columns.duplicated()][:5])}. "
                             "Send each gene once (sum or drop the duplicates).")
    position = columns.get_indexer(genes)
    found = position >= 0
    if not found.any():
        raise InputDataError(
            f"None of the model's {len(genes)} genes is among the {len(columns)} column(s) of the request "
            f"(e.g. {', '.join(columns[:3]) or 'no columns'}). Name the columns by gene symbol, as in the training "
            f"data (e.g. {', '.join(genes[:3])})."
        )
    if table.shape[0] == 0:
        raise InputDataError("The request holds no cells: send one row per cell and one column per gene symbol.")
    check_gene_coverage(columns, genes, max_missing)
    if (n_unknown := len(columns) - int(found.sum())) > 0:
        unknown = columns[~columns.isin(genes)]
        log.warning("Ignoring %d column(s) the model does not read: %s", n_unknown, ", ".join(unknown[:5]))
    given = _numbers(table.iloc[:, position[found]])
    if missing := int(np.isnan(given).any(axis=1).sum()):  # a record without some genes (dataframe_records)
        raise InputDataError(f"{missing} cell(s) lack a value for some of the model's genes (e.g. cell "
                             f"{str(table.index[np.isnan(given).any(axis=1)][0])!r}): send every gene column for every cell "
                             "(0 where not expressed).")
    check_values(given)  # as train and predict check their data (the zeros of absent genes left out)
    matrix = np.zeros((table.shape[0], len(genes)), dtype=np.float32)
    matrix[:, found] = given
    return sp.csr_matrix(matrix)


def _numbers(values: pd.DataFrame) -> np.ndarray:
    """The table as float64 (a value too large for float32 is refused as such, not as infinite); numbers in object columns (mixed JSON records) are numbers too, anything else is refused."""
    if all(kind in "biuf" for kind in {dtype.kind for dtype in values.dtypes}):
        return values.to_numpy(dtype=np.float64)  # the usual request: every column numeric, one conversion
    textual = [not pd.api.types.is_numeric_dtype(dtype) for dtype in values.dtypes]
    columns = values.columns[textual]
    converted = values[columns].apply(pd.to_numeric, errors="coerce")
    not_numbers = (converted.isna() & values[columns].notna()).any()
    if not_numbers.any():
        raise InputDataError(f"Gene columns must hold numbers; not numeric: "
                             f"{', '.join(map(str, not_numbers.index[not_numbers][:5]))}.")
    return values.assign(**{c: converted[c] for c in columns}).to_numpy(dtype=np.float64)

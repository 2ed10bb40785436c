"""The served model's gene-column rule (``cells_from_table``): columns are matched by name, the
missing-gene limit holds at its boundary, missing genes are zeros, unknown columns are ignored,
and malformed requests are refused with a message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scadapt.infra.errors import InputDataError
from scadapt.serving.request import MAX_MISSING_FRACTION, cells_from_table

GENES = [f"G{i}" for i in range(10)]


def _table(genes: list[str], n_cells: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.poisson(2.0, (n_cells, len(genes))).astype(float), columns=genes,
                        index=[f"c{i}" for i in range(n_cells)])


def _shifted_z_scores(table: pd.DataFrame) -> pd.DataFrame:
    z = (table - table.mean()) / table.std()
    return z - z.min().min()  # no negative value left, and one zero in the whole table


def test_columns_are_matched_by_name_not_position():
    table = _table(GENES)
    shuffled = table[list(np.random.default_rng(1).permutation(GENES))]
    assert list(shuffled.columns) != GENES
    np.testing.assert_array_equal(cells_from_table(shuffled, GENES).X.toarray(), table.to_numpy(np.float32))
    assert list(cells_from_table(shuffled, GENES).var_names) == GENES


def test_missing_genes_are_zeros_up_to_the_limit_and_refused_beyond_it():
    allowed = int(MAX_MISSING_FRACTION * len(GENES))  # 5 of 10 may be missing
    at_limit = _table(GENES[allowed:])
    cells = cells_from_table(at_limit, GENES)
    assert (cells.X.toarray()[:, :allowed] == 0).all()
    np.testing.assert_array_equal(cells.X.toarray()[:, allowed:], at_limit.to_numpy(np.float32))
    with pytest.raises(InputDataError, match=f"has {len(GENES) - allowed - 1} of the 10 genes .*60% missing"):
        cells_from_table(_table(GENES[allowed + 1:]), GENES)


def test_numbers_in_text_columns_are_numbers():
    as_text = _table(GENES).astype(object)
    as_text["G2"] = as_text["G2"].astype(str)  # e.g. "3.0" from a hand-written JSON record
    np.testing.assert_array_equal(cells_from_table(as_text, GENES).X.toarray(), _table(GENES).to_numpy(np.float32))


def test_unknown_columns_are_ignored(caplog):
    table = _table(GENES).assign(EXTRA=1.0, OTHER=2.0)
    np.testing.assert_array_equal(cells_from_table(table, GENES).X.toarray(), _table(GENES).to_numpy(np.float32))
    assert "Ignoring 2 column(s) the model does not read: EXTRA, OTHER" in caplog.text


@pytest.mark.parametrize(("table", "message"), [
    (pd.concat([_table(GENES), _table(GENES[:1])], axis=1), "Gene columns appear more than once: G0"),
    (_table(GENES).astype(object).assign(G3="high"), "not numeric: G3"),
    (_table(GENES).iloc[:0], "The request holds no cells"),
    (pd.DataFrame({"A": [1.0], "B": [2.0]}), "None of the model's 10 genes is among the 2 column"),
    (pd.DataFrame(index=[0, 1]), "None of the model's 10 genes is among the 0 column"),
    (_table(GENES) - 10.0, "negative values"),
    (_table(GENES).assign(G1=np.nan), "3 cell\\(s\\) lack a value for some of the model's genes"),
    (_table(GENES).assign(G1=np.inf), "3 NaN or infinite values"),
    (_table(GENES).assign(G4=[3.0, 1e30, 0.0]), "values up to 1e\\+30, beyond any count"),
    # a float32 overflow was "765 NaN or infinite values", a record without keys "764 NaN or infinite values"
    (_table(GENES).assign(G4=[3.0, 1e308, 0.0]), "values up to 1e\\+308, beyond any count"),
    (pd.DataFrame.from_records([dict.fromkeys(GENES, 1.0), {GENES[0]: 2.0}]), "1 cell\\(s\\) lack a value .* cell '1'"),
    (_shifted_z_scores(_table(GENES, n_cells=20)), r"Only [\d.]+% of the expression values are zero"),
    ([[1.0, 2.0]], "Send a table"),
])
def test_malformed_requests_are_refused(table, message):
    with pytest.raises(InputDataError, match=message):
        cells_from_table(table, GENES)

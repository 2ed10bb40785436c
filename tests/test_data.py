"""Dataset catalogue, loading and the validation step, on real and synthetic data."""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import REPO, SHARED, synthetic_adata

from scadapt.data import CATALOG, DatasetInfo, load_dataset, load_expression
from scadapt.data.sources import RemoteFile
from scadapt.infra.errors import InputDataError

SHARED_PANCREAS = SHARED / "data" / "pancreas_panc8_small_bbknnR.h5ad"
BUNDLED_PANCREAS = REPO / "src/scadapt/data/bundled/pancreas_panc8_small.h5ad"
PANCREAS_FILE = SHARED_PANCREAS if SHARED_PANCREAS.is_file() else BUNDLED_PANCREAS


def _labels(counts: dict[str, int]) -> list[str]:
    return [name for name, n in counts.items() for _ in range(n)]


# -- catalogue ---------------------------------------------------------------------------------
def test_pbmc_uses_log_normalised_raw():
    adata = load_dataset("pbmc68k_reduced")
    assert adata.shape == (700, 765)
    assert sp.isspmatrix_csr(adata.X) and adata.X.min() >= 0
    assert adata.obs["bulk_labels"].nunique() == 10
    info = DatasetInfo.of(adata)
    assert (info.name, info.label_key, info.batch_key, info.layer) == ("pbmc68k_reduced", "bulk_labels", None, "raw")
    assert info.value_kind == "log_normalized"


def test_bundled_pancreas_keeps_counts_sparse_and_has_study_groups():
    adata = load_dataset("pancreas_small")
    assert adata.shape == (500, 2000) and sp.isspmatrix_csr(adata.X)
    info = DatasetInfo.of(adata)
    assert info.batch_key == "tech"
    assert set(info.study_groups) == {"plate_like", "celseq_family", "droplet_c1"}


def test_human_pancreas_spec_follows_the_scib_file():
    spec = CATALOG["human_pancreas"]
    reading = spec.reading
    assert (reading.label_key, reading.batch_key, reading.layer) == ("celltype", "tech", "counts")
    assert spec.source.url == "https://ndownloader.figshare.com/files/36086813"
    members = [m for group in reading.study_groups.values() for m in group]
    assert len(members) == len(set(members)) == 9  # the nine technologies, each in one family


def test_human_pancreas_code_path_on_a_real_local_file(tmp_path):
    """The catalogue entry, fetched through the download code from a file:// URL, on the real
    500-cell subset rewritten in the scIB layout (log-normalised X, counts in layers['counts'])."""
    real = ad.read_h5ad(PANCREAS_FILE)
    scib_like = ad.AnnData(real.layers["seurat_lognorm"], obs=real.obs, var=real.var, layers={"counts": real.X})
    scib_like.write_h5ad(tmp_path / "scib_layout.h5ad")
    spec = replace(
        CATALOG["human_pancreas"],
        source=RemoteFile(url=(tmp_path / "scib_layout.h5ad").as_uri(), filename="human_pancreas_test.h5ad"),
    )
    groups = {"plate_like": ["smartseq2"], "celseq_family": ["celseq", "celseq2"], "droplet_c1": ["indrop", "fluidigmc1"]}
    adata = load_dataset(spec, study_groups=groups)
    assert (tmp_path / "cache" / "datasets" / "human_pancreas_test.h5ad").is_file()
    assert (adata.X != real.X).nnz == 0  # the counts layer became X
    assert DatasetInfo.of(adata).value_kind == "normalized"  # CEL-seq counts in panc8 are not integers
    with pytest.raises(InputDataError, match="names smarter, which do not occur in obs\\['tech'\\]"):
        load_dataset(spec)  # the full file's groups name technologies this subset lacks


def test_user_file_with_keys(tmp_path):
    synthetic_adata(_labels({"a": 6, "b": 6}), batches=["x"] * 6 + ["y"] * 6).write_h5ad(tmp_path / "mine.h5ad")
    adata = load_dataset(tmp_path / "mine.h5ad", label_key="cell_type", batch_key="batch")
    info = DatasetInfo.of(adata)
    assert (info.name, info.label_key, info.batch_key, info.value_kind) == ("mine", "cell_type", "batch", "counts")


def test_in_memory_anndata_is_copied_not_changed():
    original = synthetic_adata(_labels({"a": 6, "b": 6}))
    original.X = original.X.tocsc()
    adata = load_dataset(original, label_key="cell_type", name="mine")
    assert sp.isspmatrix_csr(adata.X) and sp.isspmatrix_csc(original.X)
    assert "scadapt" not in original.uns and DatasetInfo.of(adata).name == "mine"


def test_dense_input_stays_dense():
    adata = synthetic_adata(_labels({"a": 6, "b": 6}))
    adata.X = adata.X.toarray()
    assert isinstance(load_dataset(adata, label_key="cell_type").X, np.ndarray)


def test_info_survives_writing_h5ad(tmp_path):
    adata = load_dataset(synthetic_adata(_labels({"a": 6, "b": 6, "c": 1})), label_key="cell_type",
                         drop_rare_classes=True)
    adata.write_h5ad(tmp_path / "out.h5ad")
    assert DatasetInfo.of(ad.read_h5ad(tmp_path / "out.h5ad")) == DatasetInfo.of(adata)


def test_gene_symbols_from_a_var_column():
    adata = synthetic_adata(_labels({"a": 6, "b": 6}))
    adata.var["symbol"] = adata.var_names
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    adata.var.loc[adata.var_names[0], "symbol"] = None
    loaded = load_dataset(adata, label_key="cell_type", gene_column="symbol")
    assert loaded.n_vars == adata.n_vars - 1 and loaded.var_names[0] == "GENE1"
    assert loaded.var["original_var_name"].iloc[0] == "ENSG00000000001"


# -- bad input ---------------------------------------------------------------------------------
def test_missing_label_key_lists_the_obs_columns():
    adata = synthetic_adata(_labels({"a": 6, "b": 6}), batches=["x"] * 12)
    with pytest.raises(InputDataError, match="'celltype' is not a column of adata.obs \\(columns: cell_type, batch\\)"):
        load_dataset(adata, label_key="celltype")


def test_user_file_needs_a_label_key(tmp_path):
    synthetic_adata(_labels({"a": 6, "b": 6})).write_h5ad(tmp_path / "mine.h5ad")
    with pytest.raises(InputDataError, match="label_key"):
        load_dataset(tmp_path / "mine.h5ad")


def test_class_with_a_single_cell_is_refused_or_dropped_when_allowed(caplog):
    adata = synthetic_adata(_labels({"a": 6, "b": 6, "lonely": 1}))
    with pytest.raises(InputDataError, match="'lonely' \\(1 cell\\).*drop_rare_classes=True"):
        load_dataset(adata, label_key="cell_type")
    with caplog.at_level(logging.WARNING):
        loaded = load_dataset(adata, label_key="cell_type", drop_rare_classes=True)
    assert loaded.n_obs == 12 and "lonely" not in loaded.obs["cell_type"].cat.categories
    assert DatasetInfo.of(loaded).dropped_classes == {"lonely": 1}
    assert "Dropped 1 cells of 1 rare class" in caplog.text


def test_all_cells_in_one_class():
    with pytest.raises(InputDataError, match="same label.*at least two classes"):
        load_dataset(synthetic_adata(_labels({"a": 12})), label_key="cell_type")


@pytest.mark.parametrize("missing", [None, float("nan"), "", "nan", "NaN", "None", "NA", " n/a "])
def test_cells_without_a_label_are_left_out_and_counted(missing, caplog):
    adata = synthetic_adata(_labels({"a": 6, "b": 6}))
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[0, 0] = missing
    loaded = load_dataset(adata, label_key="cell_type")
    assert loaded.n_obs == 11 and set(loaded.obs["cell_type"]) == {"a", "b"}  # never a class of its own
    assert DatasetInfo.of(loaded).dropped_unlabelled_cells == 1
    assert "Leaving out 1 of 12 cells without a label" in caplog.text


def test_no_labelled_cell_is_refused():
    adata = synthetic_adata(["nan"] * 6 + ["None"] * 6)
    with pytest.raises(InputDataError, match="None of the 12 cells has a label"):
        load_dataset(adata, label_key="cell_type")


def test_scaled_values_are_refused_with_the_fix_for_this_anndata():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import scanpy as sc

        scaled = sc.datasets.pbmc68k_reduced()  # X is scaled, raw is log-normalised
    with pytest.raises(InputDataError, match="negative values.*looks scaled.*layer='raw'"):
        load_dataset(scaled, label_key="bulk_labels")
    assert load_dataset(scaled, label_key="bulk_labels", layer="raw").X.min() >= 0


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.full((12, 40), "x", dtype=object), "must hold numbers"),
        (np.where(np.eye(12, 40) > 0, np.nan, 1.0), "NaN or infinite"),
    ],
)
def test_non_numeric_and_nan_values(matrix, message):
    adata = synthetic_adata(_labels({"a": 6, "b": 6}))
    adata.X = matrix
    with pytest.raises(InputDataError, match=message):
        load_dataset(adata, label_key="cell_type")


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_gene_names():
    adata = synthetic_adata(_labels({"a": 6, "b": 6}))
    adata.var_names = ["GENE0", "GENE0"] + list(adata.var_names[2:])
    with pytest.raises(InputDataError, match="1 gene name\\(s\\) occur more than once, e.g. GENE0"):
        load_dataset(adata, label_key="cell_type")


def test_ensembl_ids_suggest_the_symbol_column():
    adata = synthetic_adata(_labels({"a": 6, "b": 6}))
    adata.var["feature_name"] = adata.var_names
    adata.var["feature_length"] = 1000
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    with pytest.raises(InputDataError, match="look like Ensembl ids.*gene_column='feature_name'"):
        load_dataset(adata, label_key="cell_type")


def test_missing_gene_column_and_layer_list_what_exists():
    adata = synthetic_adata(_labels({"a": 6, "b": 6}))
    adata.layers["counts"] = adata.X
    with pytest.raises(InputDataError, match="'symbols' is not in adata.var"):
        load_dataset(adata, label_key="cell_type", gene_column="symbols")
    with pytest.raises(InputDataError, match="Layer 'raw_counts' is not in adata.layers \\(layers: counts"):
        load_dataset(adata, label_key="cell_type", layer="raw_counts")


def test_missing_batch_key_and_unknown_study_group_value():
    adata = synthetic_adata(_labels({"a": 6, "b": 6}), batches=["x"] * 6 + ["y"] * 6)
    with pytest.raises(InputDataError, match="Batch key 'tech' is not a column"):
        load_dataset(adata, label_key="cell_type", batch_key="tech")
    with pytest.raises(InputDataError, match="group 'other' names z, which do not occur in obs\\['batch'\\] \\(values: x, y\\)"):
        load_dataset(adata, label_key="cell_type", batch_key="batch", study_groups={"one": ["x"], "other": ["z"]})


def test_truncated_h5ad(tmp_path):
    blob = PANCREAS_FILE.read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputDataError, match="cut.h5ad could not be read as AnnData.*truncated"):
        load_dataset(tmp_path / "cut.h5ad", label_key="celltype")


def test_not_an_h5ad_and_unknown_names(tmp_path):
    (tmp_path / "table.h5ad").write_text("cell,type\n")
    with pytest.raises(InputDataError, match="not an HDF5 file"):
        load_expression(tmp_path / "table.h5ad")
    with pytest.raises(InputDataError, match="does not exist"):
        load_expression(tmp_path / "absent.h5ad")
    with pytest.raises(InputDataError, match="neither a catalogued dataset \\(pbmc68k_reduced, pancreas_small"):
        load_expression("pancreas_big")


def test_a_matrix_without_zeros_or_with_absurd_values_is_refused_and_empty_cells_are_dropped(caplog):
    adata = synthetic_adata(["a"] * 8 + ["b"] * 8, n_genes=40)
    shifted = np.asarray(adata.X.toarray()) + 0.5  # e.g. z-scores shifted to be non-negative
    with pytest.raises(InputDataError, match=r"Only 0.0% of the expression values are zero.*shifted z-scores"):
        load_dataset(ad.AnnData(shifted, obs=adata.obs, var=adata.var), label_key="cell_type")
    absurd = adata.X.toarray()
    absurd[2, 5] = 1e30
    with pytest.raises(InputDataError, match=r"values up to 1e\+30, beyond any count.*1 value\(s\) look corrupt"):
        load_dataset(ad.AnnData(sp.csr_matrix(absurd), obs=adata.obs, var=adata.var), label_key="cell_type")
    sparse = adata.X.toarray()
    sparse[:3] = 0
    loaded = load_dataset(ad.AnnData(sp.csr_matrix(sparse), obs=adata.obs, var=adata.var), label_key="cell_type",
                          drop_rare_classes=True)
    assert loaded.n_obs == 13 and DatasetInfo.of(loaded).dropped_empty_cells == 3
    assert "Dropping 3 of 16 cells with zero expression" in caplog.text and "no zeros" not in caplog.text


def test_load_dataset_reads_the_data_options_as_the_command_does():
    """load_dataset's keywords are the fields of DataOptions (one declaration), parsed in the command's forms."""
    from scadapt.data.options import DataOptions
    from scadapt.infra.errors import ScadaptError

    given = load_dataset("pancreas_small", study_groups="smart:smartseq2;rest:celseq,celseq2,indrop,fluidigmc1")
    assert DatasetInfo.of(given).study_groups == {"smart": ["smartseq2"], "rest": ["celseq", "celseq2", "indrop",
                                                                                    "fluidigmc1"]}
    same = load_dataset("pancreas_small", DataOptions(study_groups={"smart": ("smartseq2",),
                                                                   "rest": ("celseq", "celseq2", "indrop", "fluidigmc1")}))
    assert DatasetInfo.of(same).study_groups == DatasetInfo.of(given).study_groups
    with pytest.raises(ScadaptError, match="lable_key"):
        load_dataset("pancreas_small", lable_key="celltype")

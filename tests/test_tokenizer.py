"""Tokenizer: gene matching, validation, binning and padding, checked against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData
from reference_scgpt import import_scgpt

from scadapt.infra.errors import InputDataError, VocabularyError
from scadapt.tokenization import GeneTokenizer, GeneVocab, TokenCache
from scadapt.tokenization import tokenizer as tokenizer_module


def _tokenizer(vocab, **kwargs) -> GeneTokenizer:
    kwargs.setdefault("min_genes", 10)
    return GeneTokenizer(vocab, **kwargs)


@pytest.fixture
def pancreas_vocab(pancreas):
    # a vocabulary that lacks some of the data's genes, as a real one does
    return GeneVocab.from_genes(pancreas.var_names[::3][:500].tolist() + pancreas.var_names[1::3].tolist())


def test_binning_matches_reference(pancreas, pancreas_vocab):
    import_scgpt()
    from scgpt.preprocess import Preprocessor

    seed = 7
    cells = _tokenizer(pancreas_vocab, seed=seed).tokenize(pancreas)
    in_vocab = [g for g in pancreas.var_names if g in pancreas_vocab]
    reference = pancreas[:, in_vocab].copy()
    np.random.seed(seed)
    Preprocessor(use_key="X", normalize_total=False, log1p=False, subset_hvg=False, binning=51,
                 result_binned_key="X_binned").__call__(reference)
    binned = reference.layers["X_binned"]
    assert binned.max() == 50 and binned.min() == 0
    gene_ids = np.array([pancreas_vocab[g] for g in in_vocab])
    n_tied = 0
    for cell in range(pancreas.n_obs):
        nonzero = np.flatnonzero(binned[cell])
        start, stop = cells.indptr[cell], cells.indptr[cell + 1]
        np.testing.assert_array_equal(cells.gene_ids[start:stop], gene_ids[nonzero])
        values = reference.X[cell].toarray().ravel()[nonzero]
        edges = np.quantile(values, np.linspace(0, 1, 50))
        left, right = np.searchsorted(edges, values, side="right"), np.searchsorted(edges, values, side="left")
        untied = left == right  # one bin possible: scGPT's exactly
        np.testing.assert_array_equal(cells.bins[start:stop][untied], binned[cell, nonzero][untied])
        ours = cells.bins[start:stop][~untied]  # a tie: a bin between its edges, as scGPT draws one
        assert ((ours >= np.minimum(left, right)[~untied]) & (ours <= np.maximum(left, right)[~untied])).all()
        n_tied += int((~untied).sum())
    assert n_tied > 1000  # counts tie a lot: the second branch was exercised


def test_a_cells_bins_do_not_depend_on_the_other_cells(pancreas, pancreas_vocab):
    """Tie-breaking is a function of the cell alone: a cell tokenized in a chunk, alone or after
    other cells gets the same bins (annotation in chunks and served requests rely on it)."""
    tokenizer = _tokenizer(pancreas_vocab, seed=3)
    whole = tokenizer.tokenize(pancreas[:60])
    for first, last in ((0, 7), (13, 14), (40, 60)):
        part = tokenizer.tokenize(pancreas[first:last])
        np.testing.assert_array_equal(part.bins, whole.bins[whole.indptr[first]:whole.indptr[last]])
    reordered = tokenizer.tokenize(pancreas[[5, 0]])
    np.testing.assert_array_equal(reordered.bins[:reordered.indptr[1]], whole.bins[whole.indptr[5]:whole.indptr[6]])
    other_seed = _tokenizer(pancreas_vocab, seed=4).tokenize(pancreas[:60])
    assert not np.array_equal(other_seed.bins, whole.bins)  # the seed still matters
    short = _tokenizer(pancreas_vocab, seed=3, max_seq_len=32)  # long cells keep a random subset of genes
    alone = short.batch(short.tokenize(pancreas[40:60]), np.arange(20))
    among = short.batch(short.tokenize(pancreas[:60]), np.arange(40, 60))
    for name in ("gene_ids", "values"):
        assert torch.equal(alone[name], among[name]), name


def test_padded_batch_matches_reference(pancreas, pancreas_vocab):
    import_scgpt()
    from scgpt.tokenizer import tokenize_and_pad_batch

    tokenizer = _tokenizer(pancreas_vocab, max_seq_len=3000)
    cells = tokenizer.tokenize(pancreas[:20])
    ours = tokenizer.batch(cells, np.arange(20))
    in_vocab = [g for g in pancreas.var_names if g in pancreas_vocab]
    column_of = {pancreas_vocab[g]: column for column, g in enumerate(in_vocab)}
    dense = np.zeros((20, len(in_vocab)), dtype=np.float32)
    for cell in range(20):
        start, stop = cells.indptr[cell], cells.indptr[cell + 1]
        columns = [column_of[int(i)] for i in cells.gene_ids[start:stop]]
        dense[cell, columns] = cells.bins[start:stop]
    ref = tokenize_and_pad_batch(
        dense, np.array([pancreas_vocab[g] for g in in_vocab]), max_len=3000, vocab=pancreas_vocab.to_dict(),
        pad_token="<pad>", pad_value=-2, append_cls=True, include_zero_gene=False, cls_token="<cls>",
    )
    np.testing.assert_array_equal(ours["gene_ids"].numpy(), ref["genes"].numpy())
    np.testing.assert_array_equal(ours["values"].numpy(), ref["values"].numpy())
    np.testing.assert_array_equal(ours["padding_mask"].numpy(), ref["genes"].numpy() == pancreas_vocab.pad_id)


def test_bins_do_not_depend_on_per_cell_scale(pancreas, pancreas_vocab):
    scaled = pancreas.copy()
    scaled.X = sp.diags(np.linspace(0.25, 8.0, pancreas.n_obs)) @ sp.csr_matrix(scaled.X, dtype=np.float64)
    tokenizer = _tokenizer(pancreas_vocab)
    a, b = tokenizer.tokenize(pancreas), tokenizer.tokenize(scaled)
    np.testing.assert_array_equal(a.gene_ids, b.gene_ids)
    np.testing.assert_array_equal(a.bins, b.bins)


def test_counts_and_log_normalised_values_give_nearly_the_same_bins(pancreas, pancreas_vocab):
    """Quantile edges interpolate linearly, so a log moves a few values across an edge: counts
    and log-normalised input are close, not identical (unlike a per-cell scale factor)."""
    import scanpy as sc

    lognorm = pancreas.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    tokenizer = _tokenizer(pancreas_vocab)
    a, b = tokenizer.tokenize(pancreas), tokenizer.tokenize(lognorm)
    np.testing.assert_array_equal(a.gene_ids, b.gene_ids)
    differ = a.bins != b.bins
    assert 0 < differ.mean() < 0.01


def test_subsetting_beyond_max_seq_len(pancreas, pancreas_vocab):
    tokenizer = _tokenizer(pancreas_vocab, max_seq_len=64)
    cells = tokenizer.tokenize(pancreas)
    long_cell = int(np.argmax(cells.lengths))
    assert cells.lengths[long_cell] > 63
    batch = tokenizer.batch(cells, np.array([long_cell, 0]))
    ids = batch["gene_ids"][0].numpy()
    assert batch["gene_ids"].shape[1] == 64 and ids[0] == pancreas_vocab.cls_id
    assert not batch["padding_mask"][0].any()
    own_genes = set(cells.gene_ids[cells.indptr[long_cell] : cells.indptr[long_cell + 1]].tolist())
    assert set(ids[1:].tolist()) <= own_genes and len(set(ids[1:].tolist())) == 63
    again = tokenizer.batch(cells, np.array([3, long_cell]))["gene_ids"][1].numpy()
    np.testing.assert_array_equal(again, ids)  # same subset in any batch
    other_epoch = tokenizer.batch(cells, np.array([long_cell]), epoch=1)["gene_ids"][0].numpy()
    assert not np.array_equal(other_epoch, ids)


def test_padding_layout(pancreas, pancreas_vocab):
    tokenizer = _tokenizer(pancreas_vocab, max_seq_len=4000)
    cells = tokenizer.tokenize(pancreas[:5])
    batch = tokenizer.batch(cells, np.arange(5))
    lengths = cells.lengths + 1
    assert batch["gene_ids"].shape == (5, lengths.max())
    for row, length in enumerate(lengths):
        assert not batch["padding_mask"][row, :length].any() and batch["padding_mask"][row, length:].all()
        assert (batch["values"][row, length:] == -2).all()
        assert (batch["gene_ids"][row, length:] == pancreas_vocab.pad_id).all()
        assert batch["values"][row, 0] == 0 and (batch["values"][row, 1:length] >= 1).all()


def test_gene_column_and_overlap_report(pancreas, pancreas_vocab):
    adata = pancreas.copy()
    adata.var["symbol"] = adata.var_names
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    cells = _tokenizer(pancreas_vocab).tokenize(adata, gene_column="symbol")
    assert cells.overlap.n_matched == sum(g in pancreas_vocab for g in pancreas.var_names)
    assert cells.overlap.n_genes == 2000
    with pytest.raises(VocabularyError, match="look like Ensembl ids.*gene_column"):
        _tokenizer(pancreas_vocab).tokenize(adata)
    with pytest.raises(InputDataError, match="'nope' is not in adata.var. Columns: symbol"):
        _tokenizer(pancreas_vocab).tokenize(adata, gene_column="nope")


def test_too_few_genes_in_vocabulary(pancreas, pancreas_vocab):
    with pytest.raises(VocabularyError, match=r"Only \d+ of 2000 genes .* fewer than the required 5000"):
        _tokenizer(pancreas_vocab, min_genes=5000).tokenize(pancreas)


def test_no_gene_in_vocabulary():
    adata = AnnData(np.ones((3, 4), dtype=np.float32))
    adata.var_names = ["a", "b", "c", "d"]
    with pytest.raises(VocabularyError, match="Only 0 of 4 genes"):
        _tokenizer(GeneVocab.from_genes(["X", "Y"]), min_genes=1).tokenize(adata)


@pytest.mark.parametrize(
    "value, message", [(-0.5, "negative values.*adata.raw"), (np.nan, "NaN or infinite"), (np.inf, "NaN or infinite")]
)
def test_bad_values_are_refused(value, message):
    X = np.ones((4, 12), dtype=np.float32)
    X[1, 3] = value
    adata = AnnData(sp.csr_matrix(X))
    adata.var_names = [f"G{i}" for i in range(12)]
    with pytest.raises(InputDataError, match=message):
        _tokenizer(GeneVocab.from_genes(adata.var_names), min_genes=5).tokenize(adata)


def test_scaled_pbmc_is_refused_and_raw_accepted(pbmc):
    import scanpy as sc

    scaled = sc.datasets.pbmc68k_reduced()
    vocab = GeneVocab.from_genes(pbmc.var_names)
    with pytest.raises(InputDataError, match="looks scaled"):
        _tokenizer(vocab).tokenize(scaled)
    assert _tokenizer(vocab).tokenize(pbmc).n_cells == 700


def test_duplicate_genes_are_refused():
    adata = AnnData(np.ones((3, 6), dtype=np.float32))
    adata.var_names = ["A", "B", "C", "D", "E", "F"]
    adata.var["symbol"] = ["A", "B", "C", "C", "E", "F"]
    with pytest.raises(InputDataError, match="more than one column, e.g. C"):
        _tokenizer(GeneVocab.from_genes("ABCDEF"), min_genes=3).tokenize(adata, gene_column="symbol")


def test_missing_layer():
    adata = AnnData(np.ones((3, 6), dtype=np.float32))
    with pytest.raises(InputDataError, match="Layer 'counts' is not in adata.layers"):
        _tokenizer(GeneVocab.from_genes(adata.var_names), min_genes=3).tokenize(adata, layer="counts")


def test_tokenized_data_are_cached(tmp_path, pancreas, pancreas_vocab, monkeypatch):
    cache = TokenCache(tmp_path / "tok")
    first = _tokenizer(pancreas_vocab, cache=cache).tokenize(pancreas)
    assert len(list((tmp_path / "tok").glob("*.npz"))) == 1

    def must_not_bin(*args, **kwargs):
        raise AssertionError("binning ran although the result was cached")

    monkeypatch.setattr(tokenizer_module, "bin_cells", must_not_bin)
    second = _tokenizer(pancreas_vocab, cache=cache).tokenize(pancreas)
    np.testing.assert_array_equal(first.bins, second.bins)
    changed = pancreas.copy()
    changed.X = changed.X.copy()
    changed.X[0, changed.X[0].nonzero()[1][0]] += 1
    with pytest.raises(AssertionError, match="binning ran"):
        _tokenizer(pancreas_vocab, cache=cache).tokenize(changed)


def test_damaged_cache_entry_is_rebuilt(tmp_path, pancreas, pancreas_vocab):
    cache = TokenCache(tmp_path / "tok")
    first = _tokenizer(pancreas_vocab, cache=cache).tokenize(pancreas)
    entry = next((tmp_path / "tok").glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:100])
    second = _tokenizer(pancreas_vocab, cache=cache).tokenize(pancreas)
    np.testing.assert_array_equal(first.bins, second.bins)

"""scadapt.annotate on an AnnData (in memory and backed), file to file in chunks, majority voting,
and what it refuses."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

import scadapt
from scadapt.annotation import annotate_h5ad, majority_vote, over_cluster
from scadapt.annotation.voting import over_clustering_resolution
from scadapt.data.options import DataOptions
from scadapt.infra.errors import InputDataError, ScadaptError
from scadapt.jobs.config import TrainJob
from scadapt.jobs.train import train


@pytest.fixture(scope="module")
def pca_folder(tmp_path_factory):
    """A pca_logreg annotator trained on the bundled pancreas cells, saved as a folder with its genes."""
    root = tmp_path_factory.mktemp("pca")
    with pytest.MonkeyPatch.context() as patch:  # its own MLflow store and cache (the per-test ones come later)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("SCADAPT_CACHE", str(root / "cache"))
        patch.chdir(root)  # MLflow puts a SQLite store's artifacts under ./mlruns
        result = train(TrainJob(data="pancreas_small", strategy="pca_logreg", hparams={"n_components": 20},
                                progress=False, umap=False))
    return result.annotator.save(root / "annotator")


def test_annotate_writes_labels_confidences_and_embeddings_in_place(pca_folder, pancreas):
    query = pancreas[:60].copy()
    query.obs["kept"] = "yes"
    returned = scadapt.annotate(query, pca_folder, progress=False)
    assert returned is query  # in place, and returned (scanpy's convention)
    annotator = scadapt.load_model(pca_folder).annotator
    expected = annotator.predict(pancreas[:60])
    assert list(query.obs["scadapt_label"]) == list(expected["label"])
    np.testing.assert_allclose(query.obs["scadapt_confidence"], expected["confidence"], rtol=1e-6)
    assert query.obsm["X_scadapt"].shape == (60, 20)
    assert list(query.obs["kept"]) == ["yes"] * 60
    assert query.uns["scadapt_annotation"]["strategy"] == "pca_logreg"
    copied = scadapt.annotate(pancreas[:60].copy(), annotator, key="again", copy=True, batch_size=13, progress=False)
    assert list(copied.obs["again_label"]) == list(expected["label"])  # chunks of 13 cells: the same labels


def test_cells_expressing_none_of_the_models_genes_are_unassigned_sparse_or_dense(pca_folder, pancreas):
    query = pancreas[:6].copy()
    counts = sp.csr_matrix(query.X).toarray()
    counts[0] = 0
    counts[1] = 0
    extra = np.zeros((6, 1), dtype=counts.dtype)
    extra[0] = 5  # cell 0 expresses only a gene the model does not read
    dense = anndata.AnnData(np.hstack([counts, extra]), obs=query.obs[[]], var={"x": np.zeros(counts.shape[1] + 1)})
    dense.var_names = list(query.var_names) + ["NOT_A_MODEL_GENE"]
    stored = sp.csr_matrix(dense.X)
    stored.data[stored.indptr[2]: stored.indptr[3]] = 0  # cell 2: only explicitly stored zeros
    sparse = anndata.AnnData(stored, obs=dense.obs, var=dense.var)
    dense.X = stored.toarray()
    for cells in (sparse, dense):
        scadapt.annotate(cells, pca_folder, unknown=None, progress=False)
        assert list(cells.obs["scadapt_label"][:3]) == ["Unassigned"] * 3
        assert list(cells.obs["scadapt_confidence"][:3]) == [0.0] * 3
        assert (cells.obs["scadapt_label"][3:] != "Unassigned").all()


def test_a_backed_file_is_annotated_in_place_and_read_only_is_refused(pca_folder, pancreas, tmp_path):
    pancreas[:50].copy().write_h5ad(tmp_path / "cells.h5ad")
    read_only = anndata.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    with pytest.raises(ScadaptError, match="open it with backed='r\\+'"):
        scadapt.annotate(read_only, pca_folder, progress=False)
    read_only.file.close()
    backed = anndata.read_h5ad(tmp_path / "cells.h5ad", backed="r+")
    scadapt.annotate(backed, pca_folder, batch_size=16, progress=False)
    backed.file.close()
    again = anndata.read_h5ad(tmp_path / "cells.h5ad")
    assert again.obsm["X_scadapt"].shape == (50, 20)
    assert list(again.obs["scadapt_label"]) == list(scadapt.load_model(pca_folder).annotator.predict(pancreas[:50])["label"])


def test_a_file_is_annotated_chunk_by_chunk_into_a_new_file(pca_folder, pancreas, tmp_path):
    query = pancreas[:70].copy()
    query.obs["kept"] = np.arange(70)
    query.write_h5ad(tmp_path / "query.h5ad")
    result = annotate_h5ad(pca_folder, tmp_path / "query.h5ad", tmp_path / "out.h5ad", batch_size=32,
                           majority_voting=True, progress=False)
    written = anndata.read_h5ad(result.output)
    in_memory = scadapt.annotate(pancreas[:70].copy(), pca_folder, majority_voting=True, progress=False)
    assert list(written.obs["kept"]) == list(range(70))  # the user's data is kept
    for column in ("scadapt_label", "scadapt_majority_voting", "scadapt_over_clustering"):
        assert list(written.obs[column]) == list(in_memory.obs[column]), column
    np.testing.assert_allclose(written.obsm["X_scadapt"], in_memory.obsm["X_scadapt"], rtol=1e-6)
    assert not list(tmp_path.glob(".*.partial"))


def test_majority_voting_gives_each_cluster_its_most_frequent_label():
    labels = np.array(["a", "a", "b", "b", "b", "a", "c"])
    clusters = np.array(["0", "0", "0", "1", "1", "1", "2"])
    assert list(majority_vote(labels, clusters)) == ["a", "a", "a", "b", "b", "b", "c"]
    assert over_clustering_resolution(1_000) == 10 and over_clustering_resolution(150_000) == 25
    assert over_clustering_resolution(2_000_000) == 30


def test_over_clustering_separates_distinct_groups_of_cells():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 8))
    points = np.concatenate([centre + rng.normal(0, 0.3, (40, 8)) for centre in centres])
    clusters = over_cluster(points, resolution=0.5)
    truth = np.repeat([0, 1, 2], 40)
    for group in range(3):  # no cluster mixes two groups
        assert len(set(clusters[truth == group]) & set(clusters[truth != group])) == 0


def test_majority_voting_mends_noisy_calls_and_costs_a_good_model_nothing(pancreas, tmp_path):
    """Voting in clusters of `logreg`'s embedding keeps its accuracy, and mends a noisy classifier
    (a third of its calls replaced by random labels)."""
    model = train(TrainJob(data="pancreas_small", strategy="logreg", progress=False, umap=False)).annotator
    annotated = scadapt.annotate(pancreas.copy(), model, majority_voting=True, progress=False)
    truth = load_truth(pancreas)
    single = np.mean(annotated.obs["scadapt_label"].astype(str).to_numpy() == truth)
    voted = np.mean(annotated.obs["scadapt_majority_voting"].astype(str).to_numpy() == truth)
    assert voted >= single - 0.01, (single, voted)
    rng = np.random.default_rng(0)
    noisy = annotated.obs["scadapt_label"].astype(str).to_numpy().copy()
    flipped = rng.random(len(noisy)) < 0.33
    noisy[flipped] = rng.permutation(noisy)[flipped]
    clusters = annotated.obs["scadapt_over_clustering"].to_numpy()
    assert np.mean(majority_vote(noisy, clusters) == truth) > np.mean(noisy == truth) + 0.1


def load_truth(adata) -> np.ndarray:
    labelled = scadapt.load_dataset("pancreas_small")
    label_key = scadapt.DatasetInfo.of(labelled).label_key
    return labelled.obs[label_key].reindex(adata.obs_names).astype(str).to_numpy()


def test_an_obs_column_can_be_the_over_clustering(pca_folder, pancreas):
    query = pancreas[:40].copy()
    query.obs["mine"] = ["x"] * 20 + ["y"] * 20
    scadapt.annotate(query, pca_folder, over_clustering="mine", progress=False)
    voted = query.obs["scadapt_majority_voting"].astype(str)
    assert voted.iloc[:20].nunique() == 1 and voted.iloc[20:].nunique() == 1
    assert list(query.obs["scadapt_over_clustering"]) == list(query.obs["mine"])


def test_bad_requests_are_refused_before_anything_is_written(pca_folder, pancreas, tmp_path):
    query = pancreas[:20].copy()
    with pytest.raises(InputDataError, match="Over-clustering column 'nope' is not in adata.obs"):
        scadapt.annotate(query, pca_folder, over_clustering="nope", progress=False)
    with pytest.raises(InputDataError, match="300 of the 2000 genes this model reads|genes this model uses"):
        scadapt.annotate(pancreas[:20, :300].copy(), pca_folder, progress=False)
    assert "scadapt_label" not in query.obs
    with pytest.raises(ScadaptError, match="neither an MLflow model"):
        scadapt.annotate(query, tmp_path, progress=False)
    with pytest.raises(ScadaptError, match="No model at"):
        scadapt.annotate(query, str(tmp_path / "missing"), progress=False)
    with pytest.raises(ScadaptError, match="Cannot annotate with a int"):
        scadapt.annotate(query, 3, progress=False)
    scaled = query.copy()
    scaled.X = sp.csr_matrix(scaled.X.toarray() - 1.0)
    with pytest.raises(InputDataError, match="negative values"):
        scadapt.annotate(scaled, pca_folder, progress=False)
    with pytest.raises(ScadaptError, match="batch_size is a number of cells, at least 1"):
        scadapt.annotate(query, pca_folder, batch_size=-3, progress=False)
    query.write_h5ad(tmp_path / "query.h5ad")
    with pytest.raises(InputDataError, match="Over-clustering column"):
        annotate_h5ad(pca_folder, tmp_path / "query.h5ad", tmp_path / "out.h5ad", over_clustering="nope")
    assert not (tmp_path / "out.h5ad").exists() and not list(tmp_path.glob(".*.partial"))
    assert "scadapt_label" not in query.obs


@pytest.mark.parametrize("strategy", ["pca_logreg", "logreg"])
def test_expression_models_keep_the_cells_sparse_and_give_the_dense_formulas_answer(strategy, pbmc):
    """The centring of PCA (and logreg's scaling) are folded so the cells stay sparse: the answer is
    that of the formula on dense log-normalised expression."""
    import pandas as pd

    from scadapt.data.preprocess import log_normalized

    model = train(TrainJob(data="pbmc68k_reduced", strategy=strategy, progress=False, umap=False)).annotator
    _, proba = model.matrix_outputs(pbmc.X, list(pbmc.var_names))
    a = model.arrays
    dense = log_normalized(pbmc.X)[:, pd.Index(pbmc.var_names).get_indexer(model.genes)].toarray().astype(np.float64)
    scores = (dense - a["pca_mean"]) @ a["pca_components"].T if "pca_components" in a else dense
    standardized = (scores - a["score_mean"]) / a["score_scale"]
    if model.max_scaled is not None:
        standardized = np.minimum(standardized, model.max_scaled)
    logits = standardized @ a["coef"].T + a["intercept"]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, expected / expected.sum(axis=1, keepdims=True), atol=1e-6)


def test_a_model_that_is_not_a_scadapt_annotator_is_refused(pancreas):
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):  # an MLflow model, not one of scadapt's
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="echo", python_model=Echo())
    with pytest.raises(ScadaptError, match="is not a scadapt annotator model"):
        scadapt.annotate(pancreas[:5].copy(), info.model_uri, progress=False)


def test_pca_from_the_gene_covariance_is_scikit_learns_pca(pbmc):
    """pca_logreg's PCA never densifies the training cells (a genes x genes covariance instead): the
    same axes, up to sign, and the same scores as scikit-learn's full-SVD PCA of the dense cells."""
    from sklearn.decomposition import PCA

    from scadapt.data.preprocess import log_normalized
    from scadapt.fitting.linear import gram_pca

    cells = sp.csr_matrix(log_normalized(pbmc.X), dtype=np.float64)
    mean, axes = gram_pca(cells, 20)
    reference = PCA(n_components=20, svd_solver="full").fit(cells.toarray())
    np.testing.assert_allclose(mean, reference.mean_, atol=1e-10)
    signs = np.sign(np.sum(axes * reference.components_, axis=1))
    np.testing.assert_allclose(axes, reference.components_ * signs[:, None], atol=1e-6)
    np.testing.assert_allclose(np.asarray(cells @ axes.T) - mean @ axes.T,
                               reference.transform(cells.toarray()) * signs, atol=1e-6)


@pytest.mark.parametrize("strategy", ["pca_logreg", "mlp"])
def test_a_query_in_counts_is_read_as_the_model_was_trained(strategy, tmp_path, caplog):
    """A model trained on log-normalised values (here log1p of counts per million) given the same
    cells as counts, or normalised but not logged, labels and rejects them as the log-normalised
    cells: the query is scaled to the training cells' per-cell total (it was scaled to 10,000, and
    every cell came out Unassigned), and what was done is said once."""
    import logging

    import scanpy as sc
    from test_strategies import planted_data

    counts = planted_data(n_per_class=60)
    logged = counts.copy()
    sc.pp.normalize_total(logged, target_sum=1e6)
    sc.pp.log1p(logged)
    logged.write_h5ad(tmp_path / "logged.h5ad")
    model = train(TrainJob(data=str(tmp_path / "logged.h5ad"), reading=DataOptions(label_key="cell_type"), strategy=strategy,
                           progress=False, umap=False, hparams={"epochs": 5} if strategy == "mlp" else {})).annotator
    assert model.trained_on["values"] == "log_normalized" and model.trained_on["target_sum"] == pytest.approx(1e6)
    expected = model.predict(logged)
    unlogged = sp.csr_matrix(logged.X, copy=True)
    unlogged.data = np.expm1(unlogged.data)
    for form, matrix in (("counts", counts.X), ("normalized", unlogged)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            query = scadapt.annotate(anndata.AnnData(matrix, obs=logged.obs[[]], var=logged.var[[]]), model,
                                     batch_size=40, progress=False)
        labels = query.obs["scadapt_label"].astype(str).to_numpy()
        assert np.mean(labels == expected["label"].to_numpy()) >= 0.99, form
        assert np.mean(labels == "Unassigned") == pytest.approx(np.mean(expected["label"] == "Unassigned"), abs=0.01)
        said = [r.getMessage() for r in caplog.records if "this model was trained on log-normalised values" in r.getMessage()]
        assert len(said) == 1 and "1,000,000" in said[0], form  # once for the whole query, not per chunk
    scaled = logged.copy()
    scaled.X = scaled.X.toarray() - 1.0  # centred values fit neither form
    with pytest.raises(InputDataError, match="negative values"):
        scadapt.annotate(scaled, model, progress=False)

"""Cells of a type the model never saw: the novelty scorer, its calibration, and ``Unassigned``."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest

import scadapt
from scadapt.data.options import DataOptions
from scadapt.infra.errors import InputDataError, ScadaptError
from scadapt.jobs.config import TrainJob
from scadapt.jobs.train import train
from scadapt.models.annotator import UNASSIGNED
from scadapt.models.novelty import NoveltyScorer

LEFT_OUT = "acinar"


def test_the_scorer_separates_a_new_group_and_rejects_the_asked_fraction_of_known_cells(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0] * 6, [6.0] * 6])
    codes = np.repeat([0, 1], 300)
    trained = centres[codes] + rng.normal(0, 1, (600, 6))
    known = centres[np.repeat([0, 1], 200)] + rng.normal(0, 1, (400, 6))
    novel = np.array([[3.0, -3.0] * 3]) + rng.normal(0, 1, (200, 6))
    scorer = NoveltyScorer.fit(trained, codes, known, np.repeat([0, 1], 200))
    assert np.mean(scorer.score(known) > scorer.threshold(0.05)) == pytest.approx(0.05, abs=0.01)
    assert np.mean(scorer.score(novel) > scorer.threshold(0.05)) > 0.95
    assert scorer.threshold(0.0) == float("inf")
    scorer.save(tmp_path)
    again = NoveltyScorer.read(tmp_path)
    np.testing.assert_array_equal(again.score(novel), scorer.score(novel))
    assert NoveltyScorer.read(tmp_path / "elsewhere") is None


@pytest.fixture(scope="module")
def without_acinar(tmp_path_factory):
    """The bundled pancreas cells; a reference without one type, and a query of the reference's
    test cells plus every cell of the left-out type."""
    root = tmp_path_factory.mktemp("novel")
    cells = scadapt.load_dataset("pancreas_small")
    key = scadapt.DatasetInfo.of(cells).label_key
    cells[cells.obs[key] != LEFT_OUT].copy().write_h5ad(root / "reference.h5ad")
    reference = scadapt.load_dataset(root / "reference.h5ad", label_key=key)
    test = scadapt.make_splits(reference, "full", folds=[0])[0].test
    query = anndata.concat([reference[test], cells[cells.obs[key] == LEFT_OUT]])
    return root, key, query


# most cells of the new type are not forced into a known one; the conformal threshold rejects at most 5 % of new
# known cells (3 % of the 70 validation cells here), which leaves logreg's logits fewer acinar cells (0.72) than
# pca_logreg's components (0.95) (benchmarks/novelty.py)
@pytest.mark.parametrize(("strategy", "novel_rejected"), [("pca_logreg", 0.9), ("logreg", 0.65)])
def test_a_type_left_out_of_training_comes_out_unassigned(strategy, novel_rejected, without_acinar, tmp_path):
    root, key, query = without_acinar
    result = train(TrainJob(data=str(root / "reference.h5ad"), reading=DataOptions(label_key=key), strategy=strategy, progress=False,
                            umap=False))
    assert result.metrics["novelty_threshold"] == pytest.approx(result.annotator.novelty.threshold())
    result.annotator.save(tmp_path / "annotator")
    annotated = scadapt.annotate(query.copy(), tmp_path / "annotator", progress=False)  # unknown="auto"
    novel = (query.obs[key] == LEFT_OUT).to_numpy()
    labels = annotated.obs["scadapt_label"].astype(str).to_numpy()
    assert np.mean(labels[novel] == UNASSIGNED) > novel_rejected
    assert np.mean(labels[~novel] == query.obs[key].to_numpy()[~novel]) > 0.85  # most known cells keep their label
    assert (annotated.obs["scadapt_predicted"].astype(str).to_numpy()[novel] != UNASSIGNED).all()  # the closest type
    assert annotated.obs["scadapt_novelty"].notna().all()
    kept = scadapt.annotate(query.copy(), tmp_path / "annotator", unknown=None, progress=False)
    assert (kept.obs["scadapt_label"].astype(str) != UNASSIGNED).all()
    strict = scadapt.annotate(query.copy(), tmp_path / "annotator", unknown=0.3, progress=False)
    assert (strict.obs["scadapt_label"] == UNASSIGNED).sum() > (annotated.obs["scadapt_label"] == UNASSIGNED).sum()


def test_bad_rejection_settings_are_refused(without_acinar, tmp_path):
    root, key, query = without_acinar
    model = train(TrainJob(data=str(root / "reference.h5ad"), reading=DataOptions(label_key=key), strategy="logreg", progress=False,
                           umap=False)).annotator
    for unknown in (1.5, -0.1, "sometimes", True, ""):
        with pytest.raises(ScadaptError, match="unknown"):
            scadapt.annotate(query.copy(), model, unknown=unknown, progress=False)
    model.novelty = None  # as a model saved before novelty scorers existed
    assert (scadapt.annotate(query.copy(), model, progress=False).obs["scadapt_label"] != UNASSIGNED).all()
    assert "scadapt_novelty" not in scadapt.annotate(query.copy(), model, progress=False).obs
    with pytest.raises(InputDataError, match="without a novelty scorer"):
        scadapt.annotate(query.copy(), model, unknown=0.1, progress=False)


def test_the_served_model_rejects_novel_cells_and_takes_the_rate_as_a_param(without_acinar, tmp_path):
    import mlflow

    from scadapt.serving.package import log_served_model

    root, key, query = without_acinar
    model = train(TrainJob(data=str(root / "reference.h5ad"), reading=DataOptions(label_key=key), strategy="pca_logreg", progress=False,
                           umap=False)).annotator
    folder = model.save(tmp_path / "annotator")
    genes = list(query.var_names)
    table = pd.DataFrame(query.X[:40].toarray(), columns=genes)
    with mlflow.start_run():
        info = log_served_model(folder, genes, table.iloc[:2], None)
    served = mlflow.pyfunc.load_model(info.model_uri)
    answer = served.predict(table)
    assert {"label", "confidence", "predicted", "novelty"} <= set(answer.columns)
    expected = model.predict(query[:40])
    assert list(answer["label"]) == list(expected["label"])
    assert (served.predict(table, params={"unknown": "none"})["label"] != UNASSIGNED).all()
    with pytest.raises(mlflow.exceptions.MlflowException, match="unknown"):
        served.predict(table, params={"unknown": "often"})


# -- every part of the split, every family, two datasets -------------------------------------------

PARTS_CASES = {"pancreas_small": "acinar", "pbmc68k_reduced": "CD19+ B"}  # a distinct type left out of each


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Per bundled dataset: a reference without one distinct type (as a file), its first split, the
    cells of the left-out type, and a random tiny backbone over its genes."""
    from conftest import random_backbone

    from scadapt.backbone import save_backbone
    from scadapt.tokenization import GeneVocab

    found = {}
    for data, left_out in PARTS_CASES.items():
        root = tmp_path_factory.mktemp(data)
        cells = scadapt.load_dataset(data)
        key = scadapt.DatasetInfo.of(cells).label_key
        cells[cells.obs[key] != left_out].copy().write_h5ad(root / "reference.h5ad")
        reference = scadapt.load_dataset(root / "reference.h5ad", label_key=key)
        vocab = GeneVocab.from_genes(cells.var_names)
        save_backbone(random_backbone(vocab), vocab, root / "backbone")
        found[data] = (root, key, reference, scadapt.make_splits(reference, "full", folds=[0])[0],
                       cells[cells.obs[key] == left_out].copy())
    return found


@pytest.mark.parametrize("data", PARTS_CASES)
@pytest.mark.parametrize("strategy", ["pca_logreg", "mlp", "frozen_probe", "lora"])  # linear, network, frozen, adapted
def test_known_cells_of_every_part_of_the_split_are_rejected_at_the_calibrated_rate(data, strategy, references):
    """The scorer scores what annotation scores: a model annotating its own dataset rejects the
    training cells as rarely as new ones (pca_logreg on PBMC rejected 91 % of its training cells)."""
    root, key, reference, split, _ = references[data]
    hparams = {"epochs": 2} if strategy in ("mlp", "lora") else {}
    model = train(TrainJob(data=str(root / "reference.h5ad"), reading=DataOptions(label_key=key), strategy=strategy, progress=False,
                           umap=False, checkpoint=str(root / "backbone"), hparams=hparams)).annotator
    labels = scadapt.annotate(reference.copy(), model, progress=False).obs["scadapt_label"].to_numpy()
    for part in ("train", "validation", "test"):
        assert np.mean(labels[split.part(part)] == UNASSIGNED) <= 2 * 0.05, part


def test_the_threshold_is_conformal_and_never_rejects_more_of_the_training_cells():
    rng = np.random.default_rng(1)
    codes = np.repeat([0, 1], 100)
    trained = np.array([[0.0] * 4, [5.0] * 4])[codes] + rng.normal(0, 1, (200, 4))
    known = np.array([[0.0] * 4, [5.0] * 4])[np.repeat([0, 1], 10)] + rng.normal(0, 1, (20, 4))
    scorer = NoveltyScorer.fit(trained, codes, known, np.repeat([0, 1], 10))
    assert scorer.threshold(0.04) == float("inf")  # 20 cells cannot calibrate a 4 % rejection: (20 + 1) * 0.96 > 20
    assert scorer.threshold(0.1) >= np.sort(scorer.score(known))[18]  # the 19th of 20 (conformal rank)
    scorer.reference = scorer.reference * 0.1  # validation cells far closer than training cells
    assert np.mean(scorer.score(trained) > scorer.threshold(0.1)) <= 0.1  # the training cells' own quantile holds

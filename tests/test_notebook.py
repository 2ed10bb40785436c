"""The jobs called from Python on an AnnData in memory: scadapt.train, scadapt.tune, scadapt.run_pipeline."""

from __future__ import annotations

import os

import mlflow
import pandas as pd
import pytest

import scadapt
from scadapt.data.digest import content_digest
from scadapt.errors import ScadaptError
from scadapt.notebook import dataset_file


@pytest.fixture
def cells():
    adata = scadapt.load_dataset("pancreas_small")
    adata.uns.clear()  # a user's AnnData: nothing scadapt wrote
    return adata


def test_train_and_tune_take_an_anndata_and_record_it_as_the_runs_input(cells):
    result = scadapt.train(cells, "logreg", name="islets", label_key="celltype", progress=False, umap=False)
    run = mlflow.get_run(result.run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "scadapt-islets"
    (dataset,) = run.inputs.dataset_inputs
    assert content_digest(cells, cells.obs.columns) in dataset.dataset.source  # the cells are named by their content
    assert {tag.key: tag.value for tag in dataset.tags}["shape"] == f"{cells.n_obs} cells x {cells.n_vars} genes"
    tuned = scadapt.tune(cells, "pca_logreg", name="islets", label_key="celltype", n_trials=2, progress=False)
    assert tuned.trial_states == {"complete": 2}
    annotated = scadapt.annotate(cells[:20].copy(), result.annotator, progress=False)
    assert annotated.obs["scadapt_label"].notna().all()


def test_the_same_cells_are_written_once_and_other_cells_elsewhere(cells):
    first = dataset_file(cells, "islets")
    written = os.stat(first).st_mtime_ns
    assert dataset_file(cells.copy(), "islets") == first
    assert os.stat(first).st_mtime_ns == written  # not written again
    changed = cells.copy()
    changed.obs["celltype"] = changed.obs["celltype"].astype(str).replace({"alpha": "alpha cell"})
    assert dataset_file(changed, "islets") != first  # the labels are part of the content
    assert dataset_file("pancreas_small") == "pancreas_small"


def test_the_pipeline_from_python_returns_the_summary_and_the_champions_uri(cells):
    result = scadapt.run_pipeline(cells, name="islets", label_key="celltype", strategies=["pca_logreg", "logreg"],
                                  n_trials=1, progress=False)
    assert isinstance(result.summary, pd.DataFrame) and set(result.summary["strategy"]) == {"pca_logreg", "logreg"}
    assert result.champion_uri == "models:/scadapt-islets@champion"
    annotated = scadapt.annotate(cells[:30].copy(), result.champion_uri, progress=False)
    assert annotated.obs["scadapt_label"].notna().all()


def test_unknown_options_and_misplaced_names_are_refused(cells):
    with pytest.raises(ScadaptError, match="Unknown option of train n_trial"):
        scadapt.train(cells, "logreg", label_key="celltype", n_trial=3)
    with pytest.raises(ScadaptError, match="name= names an in-memory AnnData"):
        scadapt.train("pancreas_small", "logreg", name="other")
    with pytest.raises(ScadaptError, match="pipeline settings"):
        scadapt.run_pipeline(cells, label_key="celltype", strategy="logreg")


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", " lead", "a:b", "tab\tname", "back\\slash"])
def test_a_name_that_is_not_a_name_is_refused_before_any_work(cells, name, tmp_path):
    """A dataset name becomes an experiment, a registered model and a file name: "../../x" wrote the
    cells outside the cache; every name is checked against one rule first."""
    with pytest.raises(ScadaptError, match="not a usable name"):
        scadapt.train(cells, "logreg", name=name, label_key="celltype")
    assert not list(tmp_path.rglob("*.h5ad"))
    with pytest.raises(ScadaptError, match="not a usable name"):
        scadapt.train(cells, "logreg", name="islets", label_key="celltype", experiment=name)
    cells.write_h5ad(tmp_path / "my:cells.h5ad")
    with pytest.raises(ScadaptError, match="The dataset name 'my:cells' is not a usable name"):
        scadapt.train(str(tmp_path / "my:cells.h5ad"), "logreg", label_key="celltype")

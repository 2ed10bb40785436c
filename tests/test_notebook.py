"""The jobs called from Python on an AnnData in memory: scadapt.train, scadapt.tune, scadapt.run_pipeline."""

from __future__ import annotations

import os
import re

import anndata
import mlflow
import numpy as np
import pandas as pd
import pytest

import scadapt
from scadapt.data.digest import content_digest
from scadapt.infra.errors import ScadaptError
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
    with pytest.raises(ScadaptError, match="Unknown keyword of train n_trial"):
        scadapt.train(cells, "logreg", label_key="celltype", n_trial=3)
    with pytest.raises(ScadaptError, match="name= names an in-memory AnnData"):
        scadapt.train("pancreas_small", "logreg", name="other")
    with pytest.raises(ScadaptError, match="Unknown keyword of run_pipeline strategy"):
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


# -- the notebook reads its keywords as the commands read their options -------------------------------

@pytest.mark.parametrize(("call", "keywords", "refused"), [
    ("tune", {"n_trials": 1.5}, "n_trials=1.5 is refused (expected an integer"),  # it ran 2 trials
    ("tune", {"n_trials": "three"}, "n_trials='three' is refused"),
    ("run_pipeline", {"time_budget": "abc"}, "time_budget='abc' is refused (expected a number"),
    ("run_pipeline", {"strategies": "pca_logreg,nope"}, "unknown strategies nope"),
    ("run_pipeline", {"strategies": ["pca_logreg", "nope"]}, "unknown strategies nope"),
    ("train", {"seed": -1}, "seed must be 0 or more"),
    ("train", {"hparams": 5}, "hparams=5 is refused"),
    ("train", {"regime": "everything"}, "regime='everything' is refused (expected one of full, low, cross_study"),
    ("train", {"umap": "perhaps"}, "umap='perhaps' is refused (expected true or false"),
    ("annotate", {"batch_size": 0}, "batch_size is a number of cells, at least 1"),  # it meant 10,000
    ("annotate", {"batch_size": 2.5}, "batch_size=2.5 is refused"),
    ("annotate", {"unknown": ""}, "unknown='' is refused"),  # it turned rejection off
    ("annotate", {"unknown": "often"}, "unknown='often' is refused"),
    ("annotate", {"unknown": True}, "unknown=True is refused"),
    ("annotate", {"key": ""}, "key='' is not a usable name"),  # it wrote obs columns named _label
    ("annotate", {"over_clustering": [0, 1]}, "over_clustering has 2 entries for 60 cells"),
])
def test_bad_keywords_are_one_message_naming_the_keyword(cells, call, keywords, refused):
    with pytest.raises(ScadaptError, match=re.escape(refused)):
        if call == "annotate":
            scadapt.annotate(cells[:60].copy(), "no-such-model", **keywords)
        else:
            getattr(scadapt, call)(cells, **({"strategy": "logreg"} if call != "run_pipeline" else {}),
                                   label_key="celltype", **keywords)


def test_the_commands_strings_and_python_values_mean_the_same(cells, tmp_path):
    from scadapt.benchmark.config import BenchmarkConfig
    from scadapt.infra.options import AnnotateOptions, keyword_values
    from scadapt.jobs.config import TrainJob

    assert keyword_values(BenchmarkConfig, {"strategies": "pca_logreg,logreg", "n_trials": "3", "time_budget": 2},
                          "x") == {"strategies": ("pca_logreg", "logreg"), "n_trials": 3, "time_budget": 2.0}
    assert keyword_values(BenchmarkConfig, {"strategies": ["pca_logreg", "logreg"]}, "x")["strategies"] == \
        ("pca_logreg", "logreg")
    assert keyword_values(TrainJob, {"hparams": "n_components=5"}, "x") == {"hparams": {"n_components": "5"}}
    assert keyword_values(AnnotateOptions, {"unknown": "0.1", "batch_size": "10"}, "x") == {"unknown": 0.1,
                                                                                           "batch_size": 10}
    assert keyword_values(AnnotateOptions, {"unknown": "none"}, "x") == {"unknown": None}
    result = scadapt.train(cells, "pca_logreg", name="islets", label_key="celltype", hparams="n_components=5",
                           progress=False, umap=False)
    assert result.annotator.config.n_components == 5
    cells.write_h5ad(tmp_path / "query.h5ad")
    annotated = scadapt.annotate(str(tmp_path / "query.h5ad"), result.annotator, unknown="none", batch_size="50",
                                 progress=False)  # a path is read as the command reads it
    assert annotated.n_obs == cells.n_obs and (annotated.obs["scadapt_label"] != "Unassigned").all()
    clusters = cells.obs["celltype"].astype(str).to_numpy(dtype=object)
    without = np.arange(cells.n_obs) % 7 == 0
    clusters[without] = np.nan
    voted = scadapt.annotate(cells.copy(), result.annotator, over_clustering=clusters, progress=False)
    assert (voted.obs["scadapt_majority_voting"].astype(str).to_numpy()[without] ==
            voted.obs["scadapt_label"].astype(str).to_numpy()[without]).all()  # no "nan" cluster votes for them
    assert "nan" not in set(voted.obs["scadapt_over_clustering"].astype(str))


def test_obs_columns_h5py_cannot_write_are_stored_as_strings(cells, caplog):
    cells.obs["meta"] = [{"a": i} if i % 2 else i for i in range(cells.n_obs)]  # dicts and ints
    path = dataset_file(cells, "islets")
    assert "meta" in caplog.text and anndata.read_h5ad(path).obs["meta"].iloc[1] == "{'a': 1}"


def test_one_public_model_resolver():
    assert not {"read_annotator", "load_annotator"} & set(dir(scadapt))  # scadapt.load_model is the one way
    with pytest.raises(ScadaptError, match="No model at 'nothing-here'"):
        scadapt.load_model("nothing-here")
    with pytest.raises(ScadaptError, match="Cannot load model 0123456789abcdef0123456789abcdef"):
        scadapt.load_model("0123456789abcdef0123456789abcdef")  # a run id this tracking store does not have

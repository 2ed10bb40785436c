"""Annotate cells from a notebook: train on a labelled reference AnnData (in memory, no files),
then label a query AnnData in place, with majority voting, and compare with the known labels.

Run it anywhere (about a minute on 2 CPU cores); MLflow's runs go to ./scadapt-example:

    python examples/annotate_in_a_notebook.py

The reference and the query are two halves of the bundled pancreas cells; with your own data,
replace them with your AnnData objects and use the model a run promoted
(``"models:/scadapt-<dataset>@champion"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np

import scadapt

workdir = Path("scadapt-example")
workdir.mkdir(exist_ok=True)
os.chdir(workdir)  # a SQLite store keeps its artifacts under ./mlruns
mlflow.set_tracking_uri("sqlite:///mlflow.db")

# a labelled reference: any AnnData of counts or log-normalised values, with a cell-type column
cells = scadapt.load_dataset("pancreas_small")
label_key = scadapt.DatasetInfo.of(cells).label_key
rng = np.random.default_rng(0)
in_reference = rng.random(cells.n_obs) < 0.5
reference, query = cells[in_reference].copy(), cells[~in_reference].copy()

# every expression strategy, one Optuna trial each, the best promoted to models:/scadapt-islets@champion
# (scadapt.train(reference, "logreg", ...) fits one strategy; scadapt.tune(...) tunes one)
result = scadapt.run_pipeline(reference, name="islets", label_key=label_key, drop_rare_classes=True,
                              strategies=["pca_logreg", "logreg", "mlp"], n_trials=1)
print(result.summary[["strategy", "val_macro_f1", "test_macro_f1"]])
model = result.champion_uri

# annotate the query in place: obs[scadapt_label], obs[scadapt_confidence], obsm[X_scadapt]
scadapt.annotate(query, model, majority_voting=True)
truth = query.obs[label_key].astype(str)
for column in ("scadapt_label", "scadapt_majority_voting"):
    print(f"{column}: accuracy {np.mean(query.obs[column].astype(str) == truth):.3f}")
print(query.obs[["scadapt_label", "scadapt_confidence", "scadapt_majority_voting"]].head())

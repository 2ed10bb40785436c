"""Annotate cells from a notebook: train on a labelled reference, then label a query AnnData in
place, with and without majority voting, and compare with the known labels.

Run from the repository root (about a minute on 2 CPU cores; MLflow writes to ./mlruns-example):

    python examples/annotate_in_a_notebook.py

The reference and the query are two halves of the bundled pancreas cells; with your own data,
replace them with your AnnData objects and use the model a run promoted
(``"models:/scadapt-<dataset>@champion"``).
"""

from __future__ import annotations

import mlflow
import numpy as np

import scadapt
from scadapt.training.config import TrainJob
from scadapt.training.train import train

mlflow.set_tracking_uri("sqlite:///mlruns-example.db")

# a labelled reference: any AnnData of counts or log-normalised values, with a cell-type column
cells = scadapt.load_dataset("pancreas_small")
label_key = scadapt.DatasetInfo.of(cells).label_key
rng = np.random.default_rng(0)
in_reference = rng.random(cells.n_obs) < 0.5
reference, query = cells[in_reference].copy(), cells[~in_reference].copy()
reference.write_h5ad("reference.h5ad")

# one strategy with its default settings (scadapt pipeline / tune compare and tune them all)
model = train(TrainJob(data="reference.h5ad", label_key=label_key, strategy="logreg", progress=False)).annotator

# annotate the query in place: obs[scadapt_label], obs[scadapt_confidence], obsm[X_scadapt]
scadapt.annotate(query, model, majority_voting=True)
truth = query.obs[label_key].astype(str)
for column in ("scadapt_label", "scadapt_majority_voting"):
    print(f"{column}: accuracy {np.mean(query.obs[column].astype(str) == truth):.3f}")
print(query.obs[["scadapt_label", "scadapt_confidence", "scadapt_majority_voting"]].head())

"""``predict``: annotate an ``.h5ad`` file with a registered model, as a tracked run.

AnnData in, AnnData out: the input file's content is kept and ``obs["<key>_label"]``,
``obs["<key>_confidence"]`` and ``obsm["X_<key>"]`` are added.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import mlflow
import pandas as pd

from scadapt.data import load_expression
from scadapt.errors import ScadaptError
from scadapt.serving.request import check_gene_coverage
from scadapt.storage import atomic_write, writable_file
from scadapt.tracking import log_params, tracked_run
from scadapt.tracking.contract import ENTRY_POINT_TAG, PREDICT_EXPERIMENT

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    output: Path
    run_id: str
    label_counts: pd.Series


def predict_h5ad(model_uri: str, data: str | Path, output: str | Path | None = None, layer: str | None = None,
                 gene_column: str | None = None, key: str = "scadapt", experiment: str = PREDICT_EXPERIMENT) -> PredictResult:
    """Annotate the cells of ``data`` with the model at ``model_uri`` (e.g. ``models:/name@champion``)
    and write ``output`` (default: ``<stem>_annotated.h5ad`` in the working directory)."""
    data = Path(data)
    if data.suffix != ".h5ad" or not data.is_file():
        raise ScadaptError(f"{data} is not an .h5ad file.")
    output = Path(output) if output else Path.cwd() / f"{data.stem}_annotated.h5ad"
    if output.resolve() == data.resolve():
        raise ScadaptError("The output would overwrite the input; choose another --output.")
    writable_file(output, "the annotated cells", "--output")
    try:
        served = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except mlflow.exceptions.MlflowException as error:
        raise ScadaptError(f"Cannot load model {model_uri}: {error.message}") from None
    if not hasattr(served, "annotator"):
        raise ScadaptError(f"{model_uri} is not a scadapt annotator model.")
    cells = load_expression(data, layer=layer, gene_column=gene_column, drop_empty_cells=False)
    check_gene_coverage(cells.var_names, served.genes)
    with tracked_run(experiment, run_name=f"predict {data.name}", tags={ENTRY_POINT_TAG: "predict"}) as run:
        log_params({"model_uri": model_uri, "data": str(data), "layer": layer, "output": str(output),
                    "strategy": served.annotator.strategy, "n_cells": cells.n_obs})
        served.annotator.annotate(cells, key=key)
        result = ad.read_h5ad(data)  # the user's file as it was, plus the annotation
        for column in (f"{key}_label", f"{key}_confidence"):
            result.obs[column] = cells.obs[column].to_numpy()
        result.obsm[f"X_{key}"] = cells.obsm[f"X_{key}"]
        atomic_write(output, lambda handle: result.write_h5ad(handle.name))
        counts = result.obs[f"{key}_label"].value_counts()
        mlflow.log_metrics({"n_cells": cells.n_obs, "mean_confidence": float(result.obs[f"{key}_confidence"].mean())})
        mlflow.log_table(result.obs[[f"{key}_label", f"{key}_confidence"]].reset_index(names="cell"),
                         "predictions.json")
        log.info("Annotated %d cells of %s with %s; wrote %s.", cells.n_obs, data, model_uri, output)
        return PredictResult(output, run.info.run_id, counts)

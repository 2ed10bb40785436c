"""``predict``: annotate an ``.h5ad`` file with a registered model, as a tracked run.

AnnData in, AnnData out: the input file's content is kept and ``obs["<key>_label"]``,
``obs["<key>_confidence"]`` and ``obsm["X_<key>"]`` are added (with majority voting also
``obs["<key>_over_clustering"]`` and ``obs["<key>_majority_voting"]``). The file is annotated in
chunks (:func:`scadapt.annotation.annotate_h5ad`); the run logs the label counts and the
per-cell labels as a compressed table, not a table of every cell in the run's JSON.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from scadapt.annotation import annotate_h5ad
from scadapt.infra.options import AnnotateOptions
from scadapt.models.annotator import UNASSIGNED
from scadapt.tracking import log_params, tracked_run
from scadapt.tracking.contract import ENTRY_POINT_TAG, LABEL_COUNTS_FILE, PREDICT_EXPERIMENT, PREDICTIONS_FILE

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    output: Path
    run_id: str
    label_counts: pd.Series


def predict_h5ad(model_uri: str, data: str | Path, output: str | Path | None = None,
                 options: AnnotateOptions | None = None, experiment: str = PREDICT_EXPERIMENT) -> PredictResult:
    """Annotate the cells of ``data`` with the model at ``model_uri`` (e.g. ``models:/name@champion``)
    and write ``output`` (default: ``<stem>_annotated.h5ad`` in the working directory)."""
    options = options or AnnotateOptions()
    key = options.key
    with tracked_run(experiment, run_name=f"predict {Path(data).name}", tags={ENTRY_POINT_TAG: "predict"}) as run:
        result = annotate_h5ad(model_uri, data, output, **vars(options))
        log_params({"model_uri": model_uri, "data": str(data), "output": str(result.output),
                    "strategy": result.model.annotator.strategy, "n_cells": result.n_cells, **vars(options),
                    "majority_voting": options.majority_voting or options.over_clustering is not None})
        column = f"{key}_majority_voting" if f"{key}_majority_voting" in result.obs else f"{key}_label"
        counts = result.obs[column].value_counts()
        mlflow.log_metrics({"n_cells": result.n_cells, "mean_confidence": float(result.labels.confidence.mean()),
                            "unassigned_cells": int((result.labels.labels == UNASSIGNED).sum())})
        with tempfile.TemporaryDirectory() as tmp:
            counts.rename_axis("label").rename("cells").to_csv(Path(tmp) / LABEL_COUNTS_FILE)
            annotation = [c for c in result.obs.columns if str(c).startswith(f"{key}_")]
            result.obs[annotation].rename_axis("cell").to_csv(Path(tmp) / PREDICTIONS_FILE, compression="gzip")
            mlflow.log_artifacts(tmp)
        log.info("Annotated %d cells of %s with %s; wrote %s.", result.n_cells, data, model_uri, result.output)
        return PredictResult(result.output, run.info.run_id, counts)

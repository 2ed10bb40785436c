"""The MLflow pyfunc model of a promoted annotator, logged as code ("models from code"): MLflow
stores this file, not a pickled object, and runs it when the model is loaded.

Artifacts: ``annotator`` (the saved annotator folder), ``backbone`` (its scGPT checkpoint; absent
for ``pca_logreg``) and ``serving`` (``genes.json``: the gene symbols the model reads).

Input: a table of cells x gene symbols (counts or log-normalised). Output: one row per cell with
``label`` and ``confidence``; ``params={"output": "probabilities"}`` adds ``p_<class>`` columns and
``params={"output": "embedding"}`` adds ``emb_<i>`` columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from scadapt.annotation.labelling import label_cells, report_rejected
from scadapt.infra.devices import resolve_device
from scadapt.infra.errors import ScadaptError
from scadapt.serving.request import OUTPUTS, matrix_from_table
from scadapt.strategies.saved import rebuild_annotator
from scadapt.tracking.contract import ANNOTATOR_ARTIFACT, BACKBONE_ARTIFACT, GENES_FILE, SERVING_ARTIFACT


class ServedAnnotator(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        artifacts = context.artifacts
        device = str(resolve_device("auto"))
        self.annotator = rebuild_annotator(artifacts[ANNOTATOR_ARTIFACT], checkpoint=artifacts.get(BACKBONE_ARTIFACT),
                                           device=device)
        self.genes = json.loads((Path(artifacts[SERVING_ARTIFACT]) / GENES_FILE).read_text())

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        output = (params or {}).get("output", "label")
        try:
            if output not in OUTPUTS:
                raise ScadaptError(f"Unknown output {output!r}; choose one of {', '.join(OUTPUTS)}.")
            threshold = self.annotator.unknown_threshold((params or {}).get("unknown", "auto"))
            matrix = matrix_from_table(model_input, self.genes)  # no AnnData: the lean path of one request
            labels = label_cells(self.annotator, matrix, self.genes, threshold)  # as annotate() labels each chunk
        except ScadaptError as error:  # a bad request: HTTP 400 with the message, the server keeps serving
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None
        report_rejected(labels)
        table = labels.table(with_novelty=self.annotator.novelty is not None)
        if output == "probabilities":
            table = table.join(pd.DataFrame(labels.probabilities, columns=[f"p_{c}" for c in self.annotator.classes]))
        elif output == "embedding":
            embedding = labels.embedding
            table = table.join(pd.DataFrame(embedding, columns=[f"emb_{i}" for i in range(embedding.shape[1])]))
        return table


mlflow.models.set_model(ServedAnnotator())

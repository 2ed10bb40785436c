"""Logging an annotator as the served pyfunc model (models from code, no pickled objects)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from scadapt.tracking.contract import ANNOTATOR_ARTIFACT, BACKBONE_ARTIFACT, SERVING_ARTIFACT

MODEL_CODE = Path(__file__).with_name("model.py")
ARTIFACT_NAME = "served_model"


def signature() -> ModelSignature:
    """Label and confidence out, ``output`` as a param.

    No input schema: MLflow would check requests against it before the model sees them, and
    answer a duplicated or unknown gene column with an internal error instead of our message.
    The model's genes are in its ``serving/genes.json`` artifact and its input example.
    """
    outputs = Schema([ColSpec("string", "label"), ColSpec("double", "confidence")])
    return ModelSignature(None, outputs, ParamSchema([ParamSpec("output", "string", "label")]))


def log_served_model(annotator_dir: Path, genes: list[str], input_example: pd.DataFrame,
                     checkpoint_dir: Path | None) -> mlflow.models.model.ModelInfo:
    """Log the served model on the active run and return its info (``model_uri`` to register)."""
    with tempfile.TemporaryDirectory() as tmp:
        serving = Path(tmp) / SERVING_ARTIFACT
        serving.mkdir()
        (serving / "genes.json").write_text(json.dumps(list(genes)))
        artifacts = {ANNOTATOR_ARTIFACT: str(annotator_dir), SERVING_ARTIFACT: str(serving)}
        if checkpoint_dir is not None:
            artifacts[BACKBONE_ARTIFACT] = str(checkpoint_dir)
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME, python_model=str(MODEL_CODE), artifacts=artifacts, signature=signature(),
            input_example=input_example.astype("float64"), pip_requirements=_requirements(),
        )


def _requirements() -> list[str]:
    """The served environment: this package's pinned stack (for serving without ``--env-manager local``)."""
    from importlib.metadata import version

    return [f"scadapt=={version('scadapt')}", f"torch=={version('torch')}", f"peft=={version('peft')}",
            f"mlflow=={version('mlflow')}", f"anndata=={version('anndata')}", f"scanpy=={version('scanpy')}"]

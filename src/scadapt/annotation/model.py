"""What :func:`~scadapt.annotation.annotate` accepts as a model, read once into an annotator and
the genes it was trained on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from scadapt.artifacts.annotators import read_annotator
from scadapt.infra.devices import resolve_device
from scadapt.infra.errors import ScadaptError
from scadapt.models.annotator import ANNOTATOR_FILE, Annotator
from scadapt.tracking.contract import GENES_FILE, SERVING_ARTIFACT

MLMODEL_FILE = "MLmodel"  # what makes a folder an MLflow model


@dataclass(frozen=True)
class AnnotationModel:
    """A trained annotator, the gene symbols of its training data (``None`` where the model did not
    record them: a bare annotator folder) and where it came from (for messages and run params)."""

    annotator: Annotator
    genes: list[str] | None
    source: str


def load_model(model: Any, device: str = "auto") -> AnnotationModel:
    """The annotator in ``model``: a ``models:/`` or ``runs:/`` URI, a local MLflow model folder or
    saved annotator folder, a loaded pyfunc model, an :class:`Annotator` or an :class:`AnnotationModel`."""
    if isinstance(model, AnnotationModel):
        return model
    if isinstance(model, Annotator):
        return AnnotationModel(model, None, f"an in-memory {model.strategy} annotator")
    if isinstance(model, mlflow.pyfunc.PyFuncModel):
        return _served(model, "a loaded MLflow model")
    if hasattr(model, "annotator") and hasattr(model, "genes"):
        return _served(model, "a loaded MLflow model")
    if not isinstance(model, str | Path):
        raise ScadaptError(f"Cannot annotate with a {type(model).__name__}: pass a models:/ or runs:/ URI, a model "
                           "folder, or a model loaded with mlflow.pyfunc.load_model.")
    text, folder = str(model), Path(model)
    if folder.is_dir() and (folder / ANNOTATOR_FILE).is_file():
        return AnnotationModel(read_annotator(folder, device=str(resolve_device(device))), _genes_beside(folder), text)
    if folder.is_dir() and not (folder / MLMODEL_FILE).is_file():
        raise ScadaptError(f"{folder} is neither an MLflow model (no {MLMODEL_FILE}) nor a saved annotator "
                           f"(no {ANNOTATOR_FILE}): pass a scadapt model's folder or its models:/ URI.")
    if not folder.exists() and ":/" not in text:
        raise ScadaptError(f"No model at {text!r}: pass a models:/name@champion or runs:/<run id>/model URI, "
                           "or a model folder.")
    try:
        loaded = mlflow.pyfunc.load_model(text)
    except Exception as error:  # MLflow's, the network's, a missing client (s3://, gs://: boto3, ...)
        raise ScadaptError(f"Cannot load model {text}: {getattr(error, 'message', error)} ({type(error).__name__}). "
                           "Pass a models:/ or runs:/ URI of this tracking store, or a model folder.") from None
    return _served(loaded, text)


def _served(model: Any, source: str) -> AnnotationModel:
    try:
        python_model = model.unwrap_python_model() if isinstance(model, mlflow.pyfunc.PyFuncModel) else model
    except MlflowException:  # another flavour's model (scikit-learn, ...): no python model inside
        python_model = None
    if not hasattr(python_model, "annotator"):
        raise ScadaptError(f"{source} is not a scadapt annotator model (a model registered by scadapt promote).")
    return AnnotationModel(python_model.annotator, list(python_model.genes), source)


def _genes_beside(folder: Path) -> list[str] | None:
    """The training genes a run logged beside its annotator (``serving/genes.json``), if here."""
    beside = folder.parent / SERVING_ARTIFACT / GENES_FILE
    return json.loads(beside.read_text()) if beside.is_file() else None

"""Annotators in the MLflow artifact store: logged by a fit, downloaded and read back by tuning,
promotion and serving, with the base checkpoint found where the annotator recorded it; and the one
model resolver, :func:`load_model` (public as ``scadapt.load_model``): a URI, a run id, a folder, a
loaded model or an annotator in, an annotator and its training genes out."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from scadapt.artifacts.checkpoints import fetch_checkpoint
from scadapt.backbone.checkpoint import checkpoint_weights_hash
from scadapt.infra.devices import resolve_device
from scadapt.infra.errors import CheckpointError, ScadaptError
from scadapt.models.annotator import ANNOTATOR_FILE, Annotator, read_manifest
from scadapt.strategies.saved import rebuild_annotator
from scadapt.tracking.contract import ANNOTATOR_ARTIFACT, GENES_FILE, SERVING_ARTIFACT

_RUN_ID = re.compile(r"[0-9a-f]{32}")


def log_annotator(annotator: Annotator) -> int:
    """Log the annotator into the active run; returns its size in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = annotator.save(Path(tmp) / ANNOTATOR_ARTIFACT)
        mlflow.log_artifacts(str(folder), ANNOTATOR_ARTIFACT)
        return sum(f.stat().st_size for f in folder.iterdir())


def download_annotator(run_id: str, destination: str | Path) -> Path:
    """The run's annotator folder, downloaded under ``destination``."""
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ANNOTATOR_ARTIFACT,
                                                    dst_path=str(destination)))


def download_serving_inputs(run_id: str, destination: str | Path) -> Path:
    """The run's ``serving`` folder (``genes.json``, ``input_example.csv``), downloaded under ``destination``."""
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SERVING_ARTIFACT,
                                                    dst_path=str(destination)))


def load_annotator(run_id: str, device: str = "cpu") -> Annotator:
    """The run's annotator, ready to predict (its backbone loaded from the recorded checkpoint)."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_annotator(download_annotator(run_id, tmp), device=device)


def read_annotator(folder: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> Annotator:
    """A saved annotator folder, ready to predict. A backbone annotator's base checkpoint is
    ``checkpoint``, else the one it recorded (see :func:`recorded_checkpoint`)."""
    return rebuild_annotator(folder, checkpoint or recorded_checkpoint(folder), device)


def recorded_checkpoint(folder: str | Path) -> Path | None:
    """The base checkpoint folder a saved annotator was trained on, on this machine: the folder it
    recorded where that still holds the checkpoint, else its copy in the artifact store,
    downloaded once into the cache (None for an annotator without a backbone)."""
    manifest = read_manifest(folder)
    if "backbone" not in manifest:
        return None
    recorded = manifest["backbone"]
    source, uri = Path(recorded["source"]), recorded.get("uri", "")
    if source.is_dir() and (not uri or checkpoint_weights_hash(source) == recorded["weights_hash"]):
        return source  # (a wrong checkpoint here, without a URI to fall back on, is refused when loaded)
    if uri:
        return fetch_checkpoint(uri, recorded["weights_hash"])
    raise CheckpointError(
        f"The backbone checkpoint this annotator was trained on ({source}, weights hash "
        f"{recorded['weights_hash'][:16]}) is not on this machine, and the annotator recorded no copy in the "
        "artifact store. Copy the checkpoint folder here, or pass its folder (or runs:/ URI) as the checkpoint."
    )


MLMODEL_FILE = "MLmodel"  # what makes a folder an MLflow model


@dataclass(frozen=True)
class AnnotationModel:
    """A trained annotator, the gene symbols of its training data (``None`` where the model did not
    record them: a bare annotator folder) and where it came from (for messages and run params)."""

    annotator: Annotator
    genes: list[str] | None
    source: str


def load_model(model: Any, device: str = "auto") -> AnnotationModel:
    """The one way to get a trained model: the annotator in ``model``, a ``models:/`` or ``runs:/``
    URI, a run id (its logged annotator), a local MLflow model folder or saved annotator folder, a
    loaded pyfunc model, an :class:`Annotator` or an :class:`AnnotationModel`."""
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
    run_id = not folder.exists() and _RUN_ID.fullmatch(text)
    if not folder.exists() and ":/" not in text and not run_id:
        raise ScadaptError(f"No model at {text!r}: pass a models:/name@champion or runs:/<run id>/model URI, "
                           "a run id, or a model folder.")
    try:
        if run_id:
            return AnnotationModel(load_annotator(text, device=str(resolve_device(device))), None, f"run {text}")
        loaded = mlflow.pyfunc.load_model(text)
    except Exception as error:  # MLflow's, the network's, a missing client (s3://, gs://: boto3, ...)
        raise ScadaptError(f"Cannot load model {text}: {getattr(error, 'message', error)} ({type(error).__name__}). "
                           "Pass a models:/ or runs:/ URI or a run id of this tracking store, or a model folder.") from None
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

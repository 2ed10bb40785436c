"""Annotators in the MLflow artifact store: logged by a fit, downloaded and read back by tuning,
promotion and serving, with the base checkpoint found where the annotator recorded it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from scadapt.artifacts.checkpoints import fetch_checkpoint
from scadapt.backbone.checkpoint import checkpoint_weights_hash
from scadapt.infra.errors import CheckpointError, ScadaptError
from scadapt.models.annotator import Annotator, read_manifest
from scadapt.strategies.saved import rebuild_annotator
from scadapt.tracking.contract import ANNOTATOR_ARTIFACT, SERVING_ARTIFACT


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
    if ":" in run_id or "/" in run_id:
        raise ScadaptError(f"load_annotator takes a run id, not {run_id!r}: for a models:/ or runs:/ URI use "
                           "scadapt.load_model(uri).annotator, or annotate with the URI itself.")
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

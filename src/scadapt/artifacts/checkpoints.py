"""Backbone checkpoints in the MLflow artifact store, so that work can run on any machine.

A worker trains on a checkpoint folder of its own; the first run that uses a checkpoint logs its
three files once, in a run of the ``scadapt-backbones`` experiment tagged with the weights hash
(a pretraining run is such a run too). Annotators record that ``runs:/<id>/backbone`` URI next
to the local folder, and a machine that lacks the folder downloads the checkpoint once into its
cache, keyed by the weights hash (``<cache>/backbones/by-hash/<hash>``). ``--checkpoint`` takes
such URIs (``runs:/...``, ``models:/...``) as well as folders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from scadapt.backbone.checkpoint import ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE
from scadapt.infra.errors import CheckpointError
from scadapt.infra.storage import default_cache_dir
from scadapt.tracking.contract import BACKBONE_ARTIFACT, BACKBONE_EXPERIMENT, BACKBONE_HASH_TAG, ENTRY_POINT_TAG
from scadapt.tracking.runs import ensure_experiment, quiet_artifact_downloads, search_all_runs

log = logging.getLogger(__name__)

URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")
CHECKPOINT_FILES = (ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE)


def is_artifact_uri(spec: str | os.PathLike | None) -> bool:
    return isinstance(spec, str) and spec.startswith(URI_SCHEMES)


def cached_checkpoint_dir(weights_hash: str) -> Path:
    return default_cache_dir() / "backbones" / "by-hash" / weights_hash


def published_checkpoint(weights_hash: str) -> str | None:
    """The ``runs:/`` URI of the checkpoint with ``weights_hash`` in the tracking store, if logged."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                                                       max_results=50_000)]
    runs = search_all_runs(experiments, f"tags.`{BACKBONE_HASH_TAG}` = '{weights_hash}' and "
                                        "attributes.status = 'FINISHED'") if experiments else []
    if not runs:
        return None
    oldest = min(runs, key=lambda r: (r.info.start_time, r.info.run_id))
    return f"runs:/{oldest.info.run_id}/{BACKBONE_ARTIFACT}"


def publish_checkpoint(folder: Path, weights_hash: str,
                       lock: Callable[[str], AbstractContextManager] | None = None) -> str:
    """The ``runs:/`` URI of this checkpoint in the tracking store, logged first if it is not yet.

    ``lock(name)``: a lock shared by all workers, so that workers starting together log it once.
    """
    if uri := published_checkpoint(weights_hash):
        return uri
    with (lock(f"publish-backbone:{weights_hash}") if lock else contextlib.nullcontext()):
        if uri := published_checkpoint(weights_hash):
            return uri
        client = MlflowClient()
        experiment_id = ensure_experiment(BACKBONE_EXPERIMENT)
        run = client.create_run(experiment_id, run_name=f"backbone {weights_hash[:12]}",
                                tags={ENTRY_POINT_TAG: "publish-backbone", "source": str(folder)})
        try:
            for name in CHECKPOINT_FILES:
                client.log_artifact(run.info.run_id, str(folder / name), BACKBONE_ARTIFACT)
        except BaseException:
            client.set_terminated(run.info.run_id, "FAILED")
            raise
        client.set_tag(run.info.run_id, BACKBONE_HASH_TAG, weights_hash)
        client.set_terminated(run.info.run_id)
        log.info("Logged backbone %s to the tracking store (run %s), for workers on other machines.",
                 weights_hash[:16], run.info.run_id)
        return f"runs:/{run.info.run_id}/{BACKBONE_ARTIFACT}"


def fetch_checkpoint(uri: str, weights_hash: str | None = None) -> Path:
    """A local folder with the checkpoint at artifact ``uri``, downloaded once per weights hash.

    ``weights_hash``: the hash the checkpoint must have (then a cached copy is used without
    asking the server, and a different checkpoint is refused).
    """
    from scadapt.backbone import load_backbone

    expected = weights_hash or _tagged_hash(uri)
    if expected and (cached_checkpoint_dir(expected) / ARGS_FILE).is_file():
        return cached_checkpoint_dir(expected)
    root = default_cache_dir() / "backbones" / "by-hash"
    root.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(dir=root, prefix=".incoming-"))
    try:
        try:
            with quiet_artifact_downloads():
                downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(incoming)))
        except (MlflowException, OSError) as error:
            raise CheckpointError(f"Cannot download the backbone checkpoint {uri}: {str(error).splitlines()[0][:300]}. "
                                  "Check the URI and that MLFLOW_TRACKING_URI points at the store that holds it.") \
                from None
        folder = _checkpoint_folder(downloaded, uri)
        actual = load_backbone(folder).weights_hash
        if weights_hash and actual != weights_hash:
            raise CheckpointError(f"The checkpoint at {uri} has weights hash {actual[:16]}, not the expected "
                                  f"{weights_hash[:16]}.")
        target = cached_checkpoint_dir(actual)
        if not (target / ARGS_FILE).is_file():
            shutil.rmtree(target, ignore_errors=True)
            os.replace(folder, target)  # complete before it appears under its hash
            log.info("Downloaded backbone %s from %s into %s.", actual[:16], uri, target)
        return target
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def local_checkpoint(spec: str | Path) -> Path:
    """``--checkpoint`` as a local folder: a folder as given, an artifact URI fetched."""
    if is_artifact_uri(spec):
        return fetch_checkpoint(str(spec))
    if "://" in str(spec):
        raise CheckpointError(f"Cannot read the backbone checkpoint {spec}: give a local folder or an MLflow artifact "
                              f"URI ({', '.join(s + '...' for s in URI_SCHEMES)}).")
    return Path(spec)


def _tagged_hash(uri: str) -> str | None:
    if not uri.startswith("runs:/"):
        return None
    try:
        return MlflowClient().get_run(uri.removeprefix("runs:/").split("/")[0]).data.tags.get(BACKBONE_HASH_TAG)
    except MlflowException:
        return None


def _checkpoint_folder(downloaded: Path, uri: str) -> Path:
    """The folder holding the checkpoint files in a download: the URI itself, or (a registered
    served model) its ``backbone`` artifact."""
    candidates = [downloaded] if downloaded.is_dir() else []
    candidates += sorted(p.parent for p in downloaded.rglob(ARGS_FILE)) if downloaded.is_dir() else []
    for folder in candidates:
        if all((folder / name).is_file() for name in CHECKPOINT_FILES):
            return folder
    raise CheckpointError(f"{uri} holds no backbone checkpoint ({', '.join(CHECKPOINT_FILES)}). Give the URI of a "
                          "checkpoint folder, e.g. runs:/<run id>/backbone of a pretraining run.")

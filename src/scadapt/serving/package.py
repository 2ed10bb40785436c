"""Logging an annotator as the served pyfunc model, self-contained: it serves on a host where
neither this repository nor scadapt is installed.

What the model carries (see :func:`log_served_model`):

- **code**: a copy of the ``scadapt`` package's modules (MLflow ``code_paths``: ``code/scadapt``,
  put first on ``sys.path`` when the model loads) and the model file itself (models from code,
  no pickled objects);
- **weights**: the annotator folder and, for backbone strategies, its scGPT checkpoint;
- **environment**: scadapt's own runtime dependencies pinned to the versions installed here,
  written by MLflow as ``requirements.txt``, ``python_env.yaml`` and ``conda.yaml`` alike. Pins
  are public versions only: a local build tag (``torch==2.13.0+cpu``) names no release on a
  package index, so it is dropped and each host's pip or uv picks its own CPU or CUDA build.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from packaging.requirements import Requirement

import scadapt
from scadapt.infra.errors import ScadaptError
from scadapt.tracking.contract import ANNOTATOR_ARTIFACT, BACKBONE_ARTIFACT, GENES_FILE, SERVING_ARTIFACT

MODEL_CODE = Path(__file__).with_name("model.py")
ARTIFACT_NAME = "served_model"
DISTRIBUTION = "scadapt"


def signature() -> ModelSignature:
    """Label and confidence out (with the top class and the novelty score where the model has a
    novelty scorer), ``output`` and ``unknown`` (auto, none or a fraction) as params.

    No input schema: MLflow would check requests against it before the model sees them, and
    answer a duplicated or unknown gene column with an internal error instead of our message.
    The model's genes are in its ``serving/genes.json`` artifact and its input example.
    """
    outputs = Schema([ColSpec("string", "label"), ColSpec("double", "confidence"),
                      ColSpec("string", "predicted", required=False), ColSpec("double", "novelty", required=False)])
    return ModelSignature(None, outputs, ParamSchema([ParamSpec("output", "string", "label"),
                                                      ParamSpec("unknown", "string", "auto")]))


def log_served_model(annotator_dir: Path, genes: list[str], input_example: pd.DataFrame,
                     checkpoint_dir: Path | None) -> mlflow.models.model.ModelInfo:
    """Log the served model on the active run and return its info (``model_uri`` to register)."""
    requirements = served_requirements()
    with tempfile.TemporaryDirectory() as tmp:
        serving = Path(tmp) / SERVING_ARTIFACT
        serving.mkdir()
        (serving / GENES_FILE).write_text(json.dumps(list(genes)))
        artifacts = {ANNOTATOR_ARTIFACT: str(annotator_dir), SERVING_ARTIFACT: str(serving)}
        if checkpoint_dir is not None:
            artifacts[BACKBONE_ARTIFACT] = str(checkpoint_dir)
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME, python_model=str(MODEL_CODE), artifacts=artifacts, signature=signature(),
            code_paths=[str(package_code(Path(tmp) / "code"))], pip_requirements=requirements,
            input_example=input_example.astype("float64"), metadata={"scadapt_version": scadapt.__version__},
        )


def package_code(destination: Path) -> Path:
    """A copy of the running ``scadapt`` package's Python modules under ``destination/scadapt``
    (no bundled data, no byte code): what the served model imports."""
    source = Path(scadapt.__file__).resolve().parent
    target = destination / "scadapt"
    for module in source.rglob("*.py"):
        if "__pycache__" not in module.parts:
            copy = target / module.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(module, copy)
    return target


def served_requirements() -> list[str]:
    """``name==version`` for each runtime dependency scadapt declares, at the version installed
    here without its local build tag (``2.13.0+cpu`` -> ``2.13.0``), extras kept."""
    try:
        declared = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        raise ScadaptError("scadapt's package metadata is missing, so the served model's environment is unknown: "
                           "install it (pip install -e .) before promoting a model.") from None
    pins = []
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an optional extra's dependency, or one for another platform
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extras}=={public_version(version(requirement.name))}")
    return pins


def public_version(installed: str) -> str:
    """The release a package index serves for an installed version: without ``+local`` tags."""
    return installed.split("+", 1)[0]

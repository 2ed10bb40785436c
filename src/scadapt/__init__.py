"""scadapt: adapt the scGPT single-cell foundation model to cell-type annotation.

The public names below are imported on first use, so ``scadapt datasets`` and other light
commands start without loading torch or MLflow.
"""

from __future__ import annotations

import importlib

from scadapt.infra.errors import CheckpointError, InputDataError, ScadaptError, VocabularyError

__version__ = "0.1.0"

_LAZY = {
    "train": "scadapt.notebook",
    "tune": "scadapt.notebook",
    "run_pipeline": "scadapt.notebook",
    "annotate": "scadapt.annotation",
    "annotate_h5ad": "scadapt.annotation",
    "load_model": "scadapt.artifacts.annotators",
    "BackboneConfig": "scadapt.backbone",
    "ScGPTBackbone": "scadapt.backbone",
    "load_backbone": "scadapt.backbone",
    "save_backbone": "scadapt.backbone",
    "GeneTokenizer": "scadapt.tokenization",
    "GeneVocab": "scadapt.tokenization",
    "PretrainConfig": "scadapt.jobs.config",
    "PretrainResult": "scadapt.jobs.pretrain",
    "pretrain": "scadapt.jobs.pretrain",
    "DatasetInfo": "scadapt.data",
    "Split": "scadapt.data",
    "load_dataset": "scadapt.data",
    "make_splits": "scadapt.data",
    "load_splits": "scadapt.data",
    "save_splits": "scadapt.data",
}

__all__ = ["CheckpointError", "InputDataError", "ScadaptError", "VocabularyError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scadapt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

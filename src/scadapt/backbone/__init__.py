"""The scGPT-compatible encoder and its checkpoint format. The names load on first use, so reading
a job's options (which name a backbone's shape) imports no torch."""

from scadapt.infra.lazy import lazy_attributes

_WHERE = {
    **dict.fromkeys(("LoadedBackbone", "load_backbone", "save_backbone", "weights_hash"), "scadapt.backbone.checkpoint"),
    "BackboneConfig": "scadapt.backbone.config",
    "embed_cells": "scadapt.backbone.inference",
    "ScGPTBackbone": "scadapt.backbone.model",
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
__all__ = list(_WHERE)

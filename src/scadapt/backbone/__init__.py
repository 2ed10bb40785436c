"""The scGPT-compatible encoder and its checkpoint format."""

from scadapt.backbone.checkpoint import LoadedBackbone, load_backbone, save_backbone, weights_hash
from scadapt.backbone.config import BackboneConfig
from scadapt.backbone.inference import embed_cells
from scadapt.backbone.model import ScGPTBackbone

__all__ = [
    "BackboneConfig",
    "LoadedBackbone",
    "ScGPTBackbone",
    "embed_cells",
    "load_backbone",
    "save_backbone",
    "weights_hash",
]

"""scadapt: adapt the scGPT single-cell foundation model to cell-type annotation."""

from scadapt.backbone import BackboneConfig, ScGPTBackbone, load_backbone, save_backbone
from scadapt.errors import CheckpointError, InputDataError, ScadaptError, VocabularyError
from scadapt.tokenization import GeneTokenizer, GeneVocab
from scadapt.training.pretrain import PretrainConfig, PretrainResult, pretrain

__version__ = "0.1.0"

__all__ = [
    "BackboneConfig",
    "CheckpointError",
    "GeneTokenizer",
    "GeneVocab",
    "InputDataError",
    "PretrainConfig",
    "PretrainResult",
    "ScGPTBackbone",
    "ScadaptError",
    "VocabularyError",
    "load_backbone",
    "pretrain",
    "save_backbone",
]

"""``head``: only the classifier head trains; the frozen backbone embeds the cells once and the
epochs run on the cached embeddings."""

from __future__ import annotations

from dataclasses import dataclass

from scadapt.strategies.base import TorchConfig, register
from scadapt.strategies.families import HeadStrategy


@dataclass
class HeadConfig(TorchConfig):
    lr: float = 5e-3
    epochs: int = 100
    batch_size: int = 64
    patience: int = 10


@register
class Head(HeadStrategy):
    name = "head"
    config_class = HeadConfig
    description = "classifier head on frozen CLS embeddings"

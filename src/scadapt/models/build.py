"""Turning a loaded backbone into the trainable model of a strategy."""

from __future__ import annotations

import torch

from scadapt.models.head import AnnotationModel, ClassifierHead
from scadapt.strategies import StrategyConfig, get_strategy
from scadapt.strategies.base import freeze


def build_annotation_model(strategy_name: str, config: StrategyConfig, backbone, n_classes: int) -> AnnotationModel:
    """Freeze the backbone, let the strategy adapt it, and put a fresh head on top.

    The head is seeded from ``config.seed``, so the same settings give the same initial model.
    ``frozen_probe`` gets a single linear layer (its weights come from a logistic regression).
    An adapted backbone gets ``config.backbone_dropout`` before the strategy injects its modules.
    """
    strategy = get_strategy(strategy_name)
    freeze(backbone)
    torch.manual_seed(config.seed)
    if strategy.kind == "adapted":
        backbone.set_dropout(config.backbone_dropout)
        strategy.adapt(backbone, config)
    n_layers = 1 if strategy_name == "frozen_probe" else getattr(config, "head_layers", 1)
    head = ClassifierHead(backbone.config.d_model, n_classes, n_layers, getattr(config, "head_dropout", 0.0))
    return AnnotationModel(backbone, head)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a strategy fitted: every weight with ``requires_grad`` plus the head's input
    standardisation buffers, detached on the CPU."""
    state = {name: p.detach().cpu().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    state.update({name: b.detach().cpu().clone().contiguous() for name, b in model.named_buffers() if "input_" in name})
    return state

"""What every adaptation strategy is: a config dataclass (hyperparameters + search space) and a
class that says how the strategy changes the backbone.

Three kinds of strategy exist:

* ``expression``: no backbone at all (``pca_logreg``).
* ``frozen``: the backbone is left untouched and run once to embed the cells; only a classifier
  on the embeddings is fitted (``frozen_probe``, ``head``).
* ``adapted``: the backbone runs in every training step, with some of its weights or injected
  modules trainable (``full``, ``lora``, ``adapter``, ``prefix``, ``ia3``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from scadapt.errors import ScadaptError

LAYER_PATTERN = r"transformer_encoder\.layers\.\d+\."  # peft target prefix: every encoder layer


@dataclass
class StrategyConfig:
    """Base of every strategy's hyperparameters. Fields must be int, float, bool or str."""

    seed: int = 0

    def to_params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> StrategyConfig:
        """Build from a mapping whose values may be strings (command line, MLflow params)."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(params) - known):
            raise ScadaptError(
                f"Unknown hyperparameter(s) {', '.join(unknown)} for {cls.__name__}; "
                f"known: {', '.join(sorted(known))}."
            )
        return cls(**{key: _coerce(key, value, hints[key]) for key, value in params.items()})

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        """Hyperparameters suggested by an Optuna ``trial`` (the rest keep their defaults)."""
        return {}


@dataclass
class TorchConfig(StrategyConfig):
    """Hyperparameters of strategies trained by gradient descent with the shared classifier head."""

    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    class_weighted: bool = True
    patience: int = 3
    head_layers: int = 3
    head_dropout: float = 0.1
    # Dropout inside the backbone while training through it (not ``head``). 0 by default: in
    # frozen layers it only adds noise that hides the between-cell differences of the CLS
    # embedding; on the demo backbone, LoRA/IA3 with the checkpoint's 0.1 stayed near chance.
    backbone_dropout: float = 0.0

    def __post_init__(self) -> None:
        problems = [text for bad, text in (
            (not self.lr > 0, f"lr must be positive (got {self.lr})"),
            (self.epochs < 1, f"epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size < 1, f"batch_size must be at least 1 (got {self.batch_size})"),
            (self.patience < 1, f"patience must be at least 1 (got {self.patience})"),
            (self.head_layers < 1, f"head_layers must be at least 1 (got {self.head_layers})"),
            (not 0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})"),
            (not 0 <= self.head_dropout < 1, f"head_dropout must be in [0, 1) (got {self.head_dropout})"),
            (not 0 <= self.backbone_dropout < 1, f"backbone_dropout must be in [0, 1) (got {self.backbone_dropout})"),
            (self.weight_decay < 0 or self.max_grad_norm <= 0, "weight_decay must be >= 0 and max_grad_norm > 0"),
        ) if bad]
        if problems:
            raise ScadaptError(f"Bad hyperparameters for {type(self).__name__}: {'; '.join(problems)}.")

    @classmethod
    def lr_range(cls) -> tuple[float, float]:
        """The learning rates the search may try (log-uniform)."""
        return cls.lr / 10, cls.lr * 5

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", *cls.lr_range(), log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-4, 0.1, log=True),
            "head_dropout": trial.suggest_float("head_dropout", 0.0, 0.3),
        }


class Strategy:
    """One adaptation method. Subclasses set the class attributes and, for ``adapted``
    strategies, implement :meth:`adapt`."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "expression" | "frozen" | "adapted"
    config_class: ClassVar[type[StrategyConfig]]
    description: ClassVar[str] = ""

    @classmethod
    def adapt(cls, backbone: nn.Module, config: StrategyConfig) -> None:
        """Make the backbone trainable the way this strategy wants, in place.

        Every base weight starts frozen; a strategy injects its own modules around the base
        modules (never changing the base weights) or unfreezes weights (``full``).
        """
        raise NotImplementedError(f"{cls.name} does not adapt the backbone")


def freeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)) and \
            not (kind is float and not math.isfinite(value)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        return text
    except ValueError:
        raise ScadaptError(f"Hyperparameter {key}={value!r} is not a valid {kind.__name__}"
                           f"{' (a finite number)' if kind is float else ''}.") from None

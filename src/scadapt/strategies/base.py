"""What every adaptation strategy is: a config dataclass (hyperparameters + search space) and a
class that owns its fit, as a peft tuner owns its update.

Strategies come in four families (:mod:`scadapt.strategies.families`), whose base classes hold
the fit; a strategy module only adds what is its own:

* expression-only: no backbone at all (``pca_logreg``, ``logreg``, ``mlp``);
* probe on frozen embeddings: the backbone embeds every cell once, a closed-form classifier is
  fitted on the embeddings (``frozen_probe``);
* head on frozen embeddings: the same cached embeddings, a head trained by the shared loop (``head``);
* trained through the backbone: the backbone runs in every step with some of its weights or
  injected modules trainable (``full``, ``lora``, ``dora``, ``adalora``, ``adapter``, ``prefix``,
  ``ia3``), with hooks for a per-step callback and an extra loss.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from scadapt.infra.errors import ScadaptError
from scadapt.strategies.costs import EPOCHS_RUN

if TYPE_CHECKING:
    import numpy as np

    from scadapt.fitting.classifier import FitResult
    from scadapt.jobs.context import TrainingContext
    from scadapt.models.annotator import Annotator
    from scadapt.strategies.costs import Rates, StudyWork

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
    def from_saved(cls, params: Mapping[str, Any]) -> StrategyConfig:
        """The settings recorded with a saved annotator: a setting the recording lacks takes the
        value it had before it existed (:attr:`saved_defaults`), not today's default."""
        return cls.from_params({**cls.saved_defaults, **params})

    saved_defaults: ClassVar[dict[str, Any]] = {}

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
    # A cell with more genes than fit in max_seq_len keeps its first subset in every epoch, as
    # scGPT's annotation tutorial does, so the frozen layers' output of every cell is computed once
    # (scadapt.fitting.frozen_layers). True draws a new subset every epoch (augmentation), at the
    # price of running the frozen layers again for those cells: on wide data (10,000+ genes) that
    # is most cells, every epoch.
    resample_genes: bool = False

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


@dataclass
class InjectedConfig(TorchConfig):
    """Hyperparameters of strategies that inject trainable modules into the backbone's layers."""

    # Adapt the top ``layers`` layers only (0: every layer). The frozen layers below run once per
    # fit (scadapt.fitting.frozen_layers), so an epoch costs about layers / nlayers of a full pass.
    # 2 by default: on the bundled data, test macro-F1 with the top 1-2 of the demo backbone's 4
    # layers was as good as with all of them (benchmarks/top_layers.py in benchmarks/RESULTS.md).
    layers: int = 2
    saved_defaults: ClassVar[dict[str, Any]] = {"layers": 0}  # annotators saved before ``layers`` adapted every layer

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers < 0:
            raise ScadaptError(f"layers must be 0 (every layer) or the number of top layers to adapt (got {self.layers}).")

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        # the top 1, 2 or 4 layers (the cheap end of the 2-4 of 12 that scGPT-sized models need); 0 stays possible
        return {**super().search_space(trial), "layers": trial.suggest_categorical("layers", [1, 2, 4])}


def adapted_layers(backbone: nn.Module, config: InjectedConfig) -> range:
    """Indices of the encoder layers a strategy adapts: the top ``config.layers`` (all if 0 or more than exist)."""
    n_layers = len(backbone.transformer_encoder.layers)
    top = config.layers if 0 < config.layers < n_layers else n_layers
    return range(n_layers - top, n_layers)


def layers_used(backbone: nn.Module, config: StrategyConfig) -> dict[str, object]:
    """``{"layers": depth}`` when ``config`` asks to adapt more top layers than the backbone has
    (then every layer is adapted, and the run logs ``used.layers``); ``{}`` otherwise."""
    asked, depth = getattr(config, "layers", 0), len(backbone.transformer_encoder.layers)
    return {"layers": depth} if asked > depth else {}


def layer_prefix(indices: range) -> str:
    """The ``peft`` target-module prefix that matches the encoder layers ``indices``."""
    return rf"transformer_encoder\.layers\.({'|'.join(map(str, indices))})\."


@dataclass
class Fitted:
    """What a strategy's fit returns: the annotator, the training curve (strategies trained by
    gradient descent), the size of the whole model, and hyperparameters the data forced to other
    values (name -> value used)."""

    annotator: Annotator
    fit: FitResult | None
    total_parameters: int
    adjusted: dict[str, object] = field(default_factory=dict)


class Strategy:
    """One adaptation method. A family (:mod:`scadapt.strategies.families`) implements
    :meth:`fit`; a strategy sets the class attributes and the hooks its family asks for."""

    name: ClassVar[str]
    config_class: ClassVar[type[StrategyConfig]]
    description: ClassVar[str] = ""
    needs_backbone: ClassVar[bool] = True
    # fits once on the frozen backbone's embeddings (their one pass counts in its runtime)
    frozen_embeddings: ClassVar[bool] = False
    # a baseline of the benchmark's paired comparison: what a user gets without adapting scGPT
    baseline: ClassVar[bool] = False
    # rough wall time of a study against ``full``'s, for ordering work cheapest first and sharing
    # a time budget among studies (the default benchmark matrix, benchmarks/RESULTS.md: expression
    # and frozen-backbone strategies 0.03-0.07x full, injected ones 0.24-0.78x)
    relative_cost: ClassVar[float] = 1.0

    @classmethod
    def estimate_seconds(cls, work: StudyWork, rates: Rates) -> float:
        """Rough seconds of ``work`` at ``rates`` (:mod:`scadapt.strategies.costs`): by default
        training through every backbone layer each epoch, scaled by :attr:`relative_cost` (what
        adapting fewer weights and caching frozen layers save), for the share of the epochs that
        fits run before early stopping or pruning ends them (:data:`~scadapt.strategies.costs.EPOCHS_RUN`)."""
        per_epoch = work.n_train * rates.train_cell_sec + work.n_eval * rates.embed_cell_sec
        return work.trials * (cls.relative_cost * EPOCHS_RUN * work.epochs * per_epoch + rates.trial_overhead_sec)

    @classmethod
    def fit(cls, ctx: TrainingContext, config: StrategyConfig, progress: bool = True, on_epoch=None) -> Fitted:
        """Train one configuration on ``ctx.split``'s training cells (validation cells may choose the epoch)."""
        raise NotImplementedError

    @classmethod
    def outputs(cls, ctx: TrainingContext, annotator: Annotator, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and probabilities of the context's cells ``indices``: the served path by default."""
        return annotator.outputs(ctx.adata[indices])

    @classmethod
    def rebuild(cls, manifest: dict[str, Any], config: StrategyConfig, weights: dict[str, Any],
                checkpoint: Path | None, device: str) -> Annotator:
        """The annotator this strategy saved (its ``annotator.json`` and fitted weights), ready to
        predict; backbone strategies rebuild their model on the base ``checkpoint`` folder."""
        raise NotImplementedError


_REGISTERED: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: the strategy of a module in :data:`scadapt.strategies.NAMES`."""
    if cls.name in _REGISTERED:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    _REGISTERED[cls.name] = cls
    return cls


def registered(name: str) -> type[Strategy] | None:
    return _REGISTERED.get(name)


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

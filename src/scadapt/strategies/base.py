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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch import nn

from scadapt.infra.errors import ScadaptError
from scadapt.infra.options import keyword_values
from scadapt.strategies.costs import EPOCHS_RUN
from scadapt.strategies.hyperparameters import AroundDefault, declarations, hyperparameter, inherit_declarations

if TYPE_CHECKING:
    import numpy as np
    import torch
    from anndata import AnnData

    from scadapt.data import Split
    from scadapt.fitting.classifier import FitResult
    from scadapt.fitting.memory import MemoryBudget
    from scadapt.models.annotator import Annotator
    from scadapt.strategies.costs import Rates, StudyWork
    from scadapt.tokenization import GeneTokenizer, TokenizedCells


@dataclass
class StrategyConfig:
    """Base of every strategy's hyperparameters, each declared with
    :func:`~scadapt.strategies.hyperparameters.hyperparameter` (int, float, bool or str)."""

    seed: int = hyperparameter(0, "seed of the random draws of a fit (initial weights, batches, subsets)",
                               at_least=0)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        inherit_declarations(cls)

    def __post_init__(self) -> None:
        declared = declarations(type(self))
        problems = [p for name, d in declared.items() if (p := d.problem(getattr(self, name)))] + self.problems()
        if problems:
            raise ScadaptError(f"Bad hyperparameters for {type(self).__name__}: {'; '.join(problems)}.")

    def problems(self) -> list[str]:
        """What is wrong with settings that are each allowed but not together (none by default)."""
        return []

    def to_params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> StrategyConfig:
        """Build from a mapping whose values may be strings (command line, MLflow params), parsed as
        the command parses its options."""
        known = [f.name for f in dataclasses.fields(cls)]
        if unknown := sorted(set(params) - set(known)):
            raise ScadaptError(f"Unknown hyperparameter(s) {', '.join(unknown)} for {cls.__name__}; "
                               f"known: {', '.join(known)} (--hparams help says what each means).")
        return cls(**keyword_values(cls, dict(params), f"hyperparameters of {cls.__name__}"))

    @classmethod
    def from_saved(cls, params: Mapping[str, Any]) -> StrategyConfig:
        """The settings recorded with a saved annotator: a setting the recording lacks takes the
        value it had before it existed (:attr:`saved_defaults`), not today's default."""
        return cls.from_params({**cls.saved_defaults, **params})

    saved_defaults: ClassVar[dict[str, Any]] = {}


@dataclass
class TorchConfig(StrategyConfig):
    """Hyperparameters of strategies trained by gradient descent with the shared classifier head."""

    lr: float = hyperparameter(1e-3, "peak learning rate of AdamW (linear warm-up, then cosine decay)", above=0,
                               search=AroundDefault(0.1, 5.0))
    epochs: int = hyperparameter(10, "most passes over the training cells", at_least=1)
    batch_size: int = hyperparameter(32, "cells per optimiser step", at_least=1)
    weight_decay: float = hyperparameter(0.01, "AdamW weight decay", at_least=0,
                                         search=FloatDistribution(1e-4, 0.1, log=True))
    warmup_ratio: float = hyperparameter(0.1, "share of the steps spent warming the learning rate up", at_least=0,
                                         below=1)
    max_grad_norm: float = hyperparameter(1.0, "gradients are clipped to this norm", above=0)
    class_weighted: bool = hyperparameter(True, "weigh each class's loss by its inverse frequency")
    patience: int = hyperparameter(3, "epochs without a better validation macro-F1 before stopping", at_least=1)
    head_layers: int = hyperparameter(3, "linear layers of the classifier head", at_least=1)
    head_dropout: float = hyperparameter(0.1, "dropout in the classifier head", at_least=0, below=1,
                                         search=FloatDistribution(0.0, 0.3))
    # 0 by default: in frozen layers it only adds noise that hides the between-cell differences of
    # the CLS embedding; on the demo backbone, LoRA/IA3 with the checkpoint's 0.1 stayed near chance.
    backbone_dropout: float = hyperparameter(0.0, "dropout inside the backbone while training through it (not head)",
                                             at_least=0, below=1)
    # True costs running the frozen layers again for those cells (scadapt.fitting.frozen_layers):
    # on wide data (10,000+ genes) that is most cells, every epoch.
    resample_genes: bool = hyperparameter(False, "a cell with more genes than fit in max_seq_len gets a new subset "
                                                 "every epoch (augmentation) instead of keeping its first one, as "
                                                 "scGPT's annotation tutorial does")


@dataclass
class InjectedConfig(TorchConfig):
    """Hyperparameters of strategies that inject trainable modules into the backbone's layers."""

    # The frozen layers below run once per fit (scadapt.fitting.frozen_layers), so an epoch costs
    # about layers / nlayers of a full pass. 2 by default: on the bundled data, test macro-F1 with the
    # top 1-2 of the demo backbone's 4 layers was as good as with all of them (benchmarks/top_layers.py).
    # The search: the cheap end of the 2-4 of 12 that scGPT-sized models need.
    layers: int = hyperparameter(2, "adapt the top layers only (0: every layer)", at_least=0,
                                 search=CategoricalDistribution([1, 2, 4]))
    saved_defaults: ClassVar[dict[str, Any]] = {"layers": 0}  # annotators saved before ``layers`` adapted every layer


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


class FitData(Protocol):
    """What a strategy fits on (a job's prepared context, :class:`scadapt.jobs.context.TrainingContext`):
    the data and its split, and for backbone strategies the backbone, its tokens and its cached
    embeddings. Defined here, below the jobs, so that a strategy needs nothing from them."""

    adata: AnnData
    split: Split
    classes: list[str]  # in model output order
    codes: np.ndarray  # [n_cells] class index, -1 for a class absent from training
    device: torch.device
    checkpoint: Path | None
    checkpoint_uri: str
    weights_hash: str | None
    backbone: nn.Module | None  # pristine: never trained
    tokenizer: GeneTokenizer | None
    cells: TokenizedCells | None
    memory: MemoryBudget | None
    checkpointing: str

    def fresh_backbone(self) -> nn.Module: ...

    def embeddings(self, indices: np.ndarray | None = None, progress: bool = True) -> np.ndarray: ...

    def frozen_limit(self) -> int | None: ...

    def inference_cap(self) -> int | None: ...


class Strategy:
    """One adaptation method with its settings: ``get_strategy("lora")(config)``. A family
    (:mod:`scadapt.strategies.families`) implements :meth:`fit`; a strategy sets the class
    attributes and the hooks its family asks for."""

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

    def __init__(self, config: StrategyConfig | None = None):
        if config is not None and not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} takes a {self.config_class.__name__}, not a {type(config).__name__}")
        self.config = config if config is not None else self.config_class()

    def with_config(self, config: StrategyConfig) -> Strategy:
        """The same strategy with other settings (a study's trial)."""
        return type(self)(config)

    @classmethod
    def estimate_seconds(cls, work: StudyWork, rates: Rates) -> float:
        """Rough seconds of ``work`` at ``rates`` (:mod:`scadapt.strategies.costs`): by default
        training through every backbone layer each epoch, scaled by :attr:`relative_cost` (what
        adapting fewer weights and caching frozen layers save), for the share of the epochs that
        fits run before early stopping or pruning ends them (:data:`~scadapt.strategies.costs.EPOCHS_RUN`)."""
        per_epoch = work.n_train * rates.train_cell_sec + work.n_eval * rates.embed_cell_sec
        return work.trials * (cls.relative_cost * EPOCHS_RUN * work.epochs * per_epoch + rates.trial_overhead_sec)

    def epoch_budget(self, epochs: int) -> dict[str, int]:
        """Fixed settings that give ``epochs`` epochs (with early stopping after a third of them
        without improvement), for a strategy trained by gradient descent; empty for the others."""
        return {"epochs": epochs, "patience": max(3, epochs // 3)} if isinstance(self.config, TorchConfig) else {}

    def fit(self, data: FitData, progress: bool = True, on_epoch=None) -> Fitted:
        """Train :attr:`config` on ``data.split``'s training cells (validation cells may choose the epoch)."""
        raise NotImplementedError

    def outputs(self, data: FitData, annotator: Annotator, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and probabilities of ``data``'s cells ``indices`` by ``annotator`` (fitted by this
        strategy with any settings): the served path by default."""
        return annotator.outputs(data.adata[indices])

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


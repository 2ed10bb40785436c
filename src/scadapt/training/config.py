"""Settings of training jobs, importable without torch (the console command reads their defaults)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from scadapt.errors import ScadaptError
from scadapt.options import (
    CHECKPOINTING_MODES,
    PRUNERS,
    REGIMES,
    STRATEGY_NAMES,
    DataOptions,
    MemoryOptions,
    SplitOptions,
    parse_memory_size,
)
from scadapt.strategies import get_strategy  # strategy classes load on first use

DEVICE_HELP = "auto, cpu, cuda or cuda:N"


@dataclass
class PretrainConfig:
    """Settings of a pretraining job. Model-shape fields apply only to a new backbone."""

    data: tuple[str, ...] = ("pbmc68k_reduced", "pancreas_small")
    layer: str | None = None
    gene_column: str | None = None  # var column with gene symbols
    checkpoint: str | None = None
    output_dir: str | None = None
    d_model: int = 64
    nlayers: int = 4
    nhead: int = 4
    d_hid: int = 128
    dropout: float = 0.1
    n_bins: int = 51
    max_seq_len: int = 512
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 30
    mask_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    val_fraction: float = 0.05
    min_genes: int = 100
    seed: int = 0
    device: str = "auto"
    experiment: str = "scadapt-pretrain"

    def __post_init__(self) -> None:
        self.data = tuple(self.data)
        self.mask_ratios = tuple(float(r) for r in self.mask_ratios)
        refuse([
            (not self.data, "at least one dataset is needed (data=...)"),
            (not all(0.0 < r < 1.0 for r in self.mask_ratios),
             f"mask_ratios must lie strictly between 0 and 1 (got {self.mask_ratios})"),
            (self.epochs < 1 or self.batch_size < 1, "epochs and batch_size must be at least 1"),
            (not self.lr > 0 or not self.weight_decay >= 0, f"lr must be positive and weight_decay >= 0 "
                                                             f"(got {self.lr}, {self.weight_decay})"),
            (min(self.d_model, self.nlayers, self.nhead, self.d_hid) < 1 or self.d_model % max(self.nhead, 1),
             f"d_model, nlayers, nhead and d_hid must be positive and d_model a multiple of nhead "
             f"(got {self.d_model}, {self.nlayers}, {self.nhead}, {self.d_hid})"),
            (self.max_seq_len < 2, f"max_seq_len must be at least 2 (got {self.max_seq_len})"),
            (self.n_bins < 3, f"n_bins must be at least 3 (got {self.n_bins})"),
            (not 0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})"),
            (not 0 < self.val_fraction < 1, f"val_fraction must lie between 0 and 1 (got {self.val_fraction})"),
            (self.min_genes < 1 or self.warmup_steps < 0, "min_genes must be at least 1 and warmup_steps >= 0"),
            (not valid_device(self.device), f"unknown device {self.device!r}; use {DEVICE_HELP}"),
        ], "pretraining settings")

    def fingerprint(self) -> str:
        """Identifies the job for resuming: everything but where it runs and logs."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("device", "experiment", "output_dir")}
        return hashlib.blake2b(json.dumps(keep, sort_keys=True).encode(), digest_size=12).hexdigest()


@dataclass
class TrainJob(MemoryOptions, SplitOptions, DataOptions):
    """One strategy on one split of one dataset, with fixed hyperparameters (the ``train`` entry point).

    The data options (label key, batch key, layer, ...) come from :class:`~scadapt.options.DataOptions`,
    the regime and its split settings from :class:`~scadapt.options.SplitOptions`, the memory
    budget from :class:`~scadapt.options.MemoryOptions`;
    ``hparams`` are the strategy's own settings (see ``scadapt.strategies``), given as values or
    strings; everything else chooses the data, the split and the backbone.
    """

    data: str = "pancreas_small"
    split: str | None = None  # e.g. "full_fold0"; default: the regime's first split
    strategy: str = "head"
    hparams: dict[str, object] = field(default_factory=dict)
    checkpoint: str | None = None  # default: the demo backbone made by `scadapt pretrain`
    max_seq_len: int | None = None  # tokens per cell; default: the checkpoint's
    min_genes: int = 200  # refuse data with fewer genes in the backbone's vocabulary
    device: str = "auto"
    experiment: str | None = None  # default: "scadapt-<dataset>"
    output_dir: str | None = None  # also save the trained annotator here
    umap: bool = True
    progress: bool = True
    parent_run_id: str | None = None  # nest the job's run under this run (e.g. a benchmark's)
    run_tags: dict[str, str] = field(default_factory=dict)  # more tags for the job's own run

    def __post_init__(self) -> None:
        self.label_fractions = tuple(float(f) for f in self.label_fractions)
        refuse([
            (self.strategy not in STRATEGY_NAMES,
             f"unknown strategy {self.strategy!r}; known: {', '.join(STRATEGY_NAMES)}"),
            (self.regime not in REGIMES, f"unknown regime {self.regime!r}; known: {', '.join(REGIMES)}"),
            (self.n_folds < 2, f"n_folds must be at least 2 (got {self.n_folds})"),
            (not 0 < self.validation_fraction < 1,
             f"validation_fraction must lie between 0 and 1 (got {self.validation_fraction})"),
            (not self.label_fractions or not all(0 < f <= 1 for f in self.label_fractions),
             f"label_fractions must lie in (0, 1] (got {self.label_fractions})"),
            (self.max_seq_len is not None and self.max_seq_len < 2,
             f"max_seq_len must be at least 2 (<cls> and one gene; got {self.max_seq_len})"),
            (self.min_genes < 1, f"min_genes must be at least 1 (got {self.min_genes})"),
            (not valid_device(self.device), f"unknown device {self.device!r}; use {DEVICE_HELP}"),
            *memory_problems(self),
        ], "job settings")

    @property
    def needs_backbone(self) -> bool:
        return get_strategy(self.strategy).needs_backbone


@dataclass
class TuneJob(TrainJob):
    """A :class:`TrainJob` whose strategy settings are searched. ``hparams`` stay fixed (they
    override the search space)."""

    n_trials: int = 10  # finished (complete or pruned) trials the study should reach
    timeout: float | None = None  # seconds after which this worker starts no new trial
    storage: str | None = None  # default: sqlite:///optuna.db in the working directory
    study_name: str | None = None  # default: "<dataset>/<strategy>/<split>/<digest of the setup>"
    pruning: str = "median"  # "median" (below the median of earlier trials), "threshold" or "none"
    prune_below: float = 0.0  # "threshold": prune trials whose validation macro-F1 is below this
    pruning_warmup_epochs: int = 2  # epochs a trial always gets
    pruning_startup_trials: int = 2  # trials before median pruning starts

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse([
            (self.n_trials < 1, f"n_trials must be at least 1 (got {self.n_trials})"),
            (self.pruning not in PRUNERS, f"pruning must be one of {', '.join(PRUNERS)} (got {self.pruning!r})"),
            (self.study_name is not None and "'" in self.study_name,
             f"a study name cannot contain a quote: {self.study_name!r}"),
            (self.timeout is not None and not self.timeout > 0, f"timeout must be positive (got {self.timeout})"),
            (self.pruning_warmup_epochs < 0, "pruning_warmup_epochs must be at least 0"),
        ], "tuning settings")

    def pruner(self):
        import optuna

        if self.pruning == "median":
            return optuna.pruners.MedianPruner(self.pruning_startup_trials, self.pruning_warmup_epochs)
        if self.pruning == "threshold":
            return optuna.pruners.ThresholdPruner(lower=self.prune_below, n_warmup_steps=self.pruning_warmup_epochs)
        return optuna.pruners.NopPruner()


@dataclass
class PipelineConfig(MemoryOptions, DataOptions):
    """The main job: demo backbone (or ``checkpoint``), a study per strategy, promotion, summary.

    ``pretrain_data`` pretrains the demo backbone on those (unlabelled) cells instead of the
    bundled data, so that its vocabulary covers the genes of your dataset.
    """

    data: str = "pbmc68k_reduced"
    strategies: tuple[str, ...] = STRATEGY_NAMES
    n_trials: int = 3  # per strategy
    epochs: int = 10  # per trial, for the strategies trained by gradient descent
    checkpoint: str | None = None  # default: the demo backbone (pretrained here on first use)
    pretrain_epochs: int = 10
    pretrain_data: tuple[str, ...] = ()  # default: the bundled datasets
    min_genes: int = 200  # refuse data with fewer genes in the backbone's vocabulary
    storage: str | None = None  # Optuna storage of the studies (default: sqlite:///optuna.db)
    policy: str | None = None  # promotion policy (default: registry/policy.yaml)
    force: bool = False  # promote even when the new champion ranks below the current one
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # processes on this machine sharing the studies; 0: one per CPU core (up to 4 and 4 GB each), 1 on a GPU
    progress: bool = True
    tune_overrides: dict[str, object] = field(default_factory=dict)  # more TuneJob fields (max_seq_len, ...)

    def __post_init__(self) -> None:
        self.strategies, self.pretrain_data = tuple(self.strategies), tuple(self.pretrain_data)
        refuse([
            (not self.strategies, "at least one strategy is needed"),
            (bool(bad := [s for s in self.strategies if s not in STRATEGY_NAMES]),
             f"unknown strategies {', '.join(bad)}; known: {', '.join(STRATEGY_NAMES)}"),
            (self.n_trials < 1 or self.epochs < 1 or self.pretrain_epochs < 1,
             "n_trials, epochs and pretrain_epochs must be at least 1"),
            (self.min_genes < 1, f"min_genes must be at least 1 (got {self.min_genes})"),
            (self.workers < 0, f"workers must be 0 (automatic) or more (got {self.workers})"),
            (bool(self.pretrain_data) and bool(self.checkpoint),
             "pretrain_data pretrains the demo backbone; it cannot be combined with checkpoint"),
            (not valid_device(self.device), f"unknown device {self.device!r}; use {DEVICE_HELP}"),
            *memory_problems(self),
        ], "pipeline settings")

    @property
    def needs_backbone(self) -> bool:
        return any(get_strategy(s).needs_backbone for s in self.strategies)


def valid_device(name: str) -> bool:
    head, _, index = str(name).partition(":")
    return head in ("auto", "cpu", "cuda") and (not index or (head == "cuda" and index.isdigit()))


def memory_problems(options: MemoryOptions) -> list[tuple[bool, str]]:
    try:
        parse_memory_size(options.memory_budget)
        bad_budget = ""
    except ValueError as error:
        bad_budget = str(error)
    return [(bool(bad_budget), f"memory_budget: {bad_budget}"),
            (options.activation_checkpointing not in CHECKPOINTING_MODES,
             f"activation_checkpointing must be one of {', '.join(CHECKPOINTING_MODES)} "
             f"(got {options.activation_checkpointing!r})")]


def refuse(problems: list[tuple[bool, str]], what: str) -> None:
    """Raise one :class:`ScadaptError` naming every problem whose condition holds."""
    if messages := [message for failed, message in problems if failed]:
        raise ScadaptError(f"Bad {what}: " + "; ".join(messages) + ".")

"""Settings of training jobs, importable without torch (the console command reads their defaults)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from scadapt.backbone.config import BackboneConfig
from scadapt.data.options import BUNDLED_DATASETS, REGIMES, DataOptions, SplitOptions
from scadapt.infra.errors import ScadaptError
from scadapt.infra.options import CHECKPOINTING_MODES, PRUNERS, MemoryOptions, internal, option, options_group
from scadapt.infra.parsers import (
    NAME_RULE,
    bad_name,
    names,
    number_list,
    optional_count,
    optional_seconds,
    pairs,
    parse_memory_size,
)
from scadapt.strategies import NAMES, get_strategy  # strategy classes load on first use
from scadapt.tracking.contract import PRETRAIN_EXPERIMENT

if TYPE_CHECKING:
    from scadapt.strategies.base import Strategy

DEVICE_HELP = "auto, cpu, cuda or cuda:N"
DATA_HELP = "a catalogued dataset (`scadapt datasets` lists them) or the path of your own .h5ad"


@dataclass
class PretrainConfig:
    """Settings of a pretraining job. The shape (``d_model`` ... ``max_seq_len``) applies only to a
    new backbone; ``checkpoint`` continues the pretraining of one that exists."""

    data: tuple[str, ...] = option(BUNDLED_DATASETS, "comma-separated bundled dataset names or .h5ad paths", parse=names)
    layer: str | None = option(None, "AnnData layer with counts or log-normalised values (default: X)")
    gene_column: str | None = option(None, "var column with gene symbols")
    checkpoint: str | None = option(None, "scGPT model directory to continue pretraining; omit for a new small model")
    output_dir: str | None = option(None, "where to write the checkpoint (default: the demo backbone folder in the "
                                          "scadapt cache)")
    d_model: int = option(64, "embedding size of a new backbone")
    nlayers: int = option(4, "transformer layers of a new backbone")
    nhead: int = option(4, "attention heads of a new backbone")
    d_hid: int = option(128, "feed-forward width of a new backbone")
    dropout: float = option(0.1, "dropout of a new backbone")
    n_bins: int = option(51, "expression bins of a new backbone")
    max_seq_len: int = option(512, "tokens per cell")
    epochs: int = option(10, "pretraining epochs")
    batch_size: int = option(32, "cells per batch")
    lr: float = option(1e-3, "learning rate")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_steps: int = option(30, "steps of linear learning-rate warm-up")
    mask_ratios: tuple[float, ...] = option((0.25, 0.5, 0.75), "masked shares of the genes, one per step in turn",
                                            parse=number_list)
    val_fraction: float = option(0.05, "share of the cells that measure the validation loss")
    min_genes: int = option(100, "refuse data with fewer genes than this")
    seed: int = option(0, "seed of the initial weights, the masks and the validation cells")
    device: str = option("auto", DEVICE_HELP)
    experiment: str = option(PRETRAIN_EXPERIMENT, "MLflow experiment")

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

    def backbone_config(self, vocab_size: int) -> BackboneConfig:
        """The shape of a new backbone over ``vocab_size`` genes."""
        return BackboneConfig(vocab_size=vocab_size, d_model=self.d_model, nhead=self.nhead, d_hid=self.d_hid,
                              nlayers=self.nlayers, dropout=self.dropout, n_bins=self.n_bins,
                              max_seq_len=self.max_seq_len)

    def fingerprint(self) -> str:
        """Identifies the job for resuming: everything but where it runs and logs."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("device", "experiment", "output_dir")}
        return hashlib.blake2b(json.dumps(keep, sort_keys=True).encode(), digest_size=12).hexdigest()


@dataclass
class BackboneOptions:
    """Which backbone a job adapts, how many tokens a cell gives it, and where it runs: the same
    options for ``train``, ``tune``, the pipeline and the benchmark."""

    checkpoint: str | None = option(None, "scGPT model folder or runs:/ URI (default: the demo backbone, pretrained "
                                          "on first use)")
    max_seq_len: int | None = option(None, "tokens per cell (default: the checkpoint's)", parse=optional_count)
    min_genes: int = option(200, "refuse data with fewer genes in the backbone's vocabulary")
    device: str = option("auto", DEVICE_HELP)

    def backbone_problems(self) -> list[tuple[bool, str]]:
        return [(self.max_seq_len is not None and self.max_seq_len < 2,
                 f"max_seq_len must be at least 2 (<cls> and one gene; got {self.max_seq_len})"),
                (self.min_genes < 1, f"min_genes must be at least 1 (got {self.min_genes})"),
                (not valid_device(self.device), f"unknown device {self.device!r}; use {DEVICE_HELP}")]


def hparam_pairs(text: str) -> dict[str, str]:
    """``--hparams``: name=value pairs, or ``help`` (``{"help": ""}``: the command lists the strategy's
    hyperparameters instead of running)."""
    return {"help": ""} if text.strip() == "help" else pairs(text)


@dataclass
class TrainJob(BackboneOptions, MemoryOptions, SplitOptions):
    """One strategy on one split of one dataset, with fixed hyperparameters (the ``train`` entry point).

    How the data is read (label key, batch key, layer, ...) is one :class:`~scadapt.data.options.DataOptions`
    the job holds (``reading``), the regime and its split settings come from :class:`~scadapt.data.options.SplitOptions`, the memory
    budget from :class:`~scadapt.infra.options.MemoryOptions`, the backbone from :class:`BackboneOptions`;
    ``hparams`` are the strategy's own settings (see ``scadapt.strategies``), given as values or
    strings; everything else chooses the data, the split and the backbone. ``method`` is the strategy
    with the job's settings (``get_strategy(strategy)(config)``), made once when the job is.
    """

    data: str = option("pancreas_small", DATA_HELP)
    reading: DataOptions = options_group(DataOptions)
    split: str | None = option(None, "split name, e.g. full_fold0 or low_5pct_fold0 (default: the regime's first)")
    strategy: str = option("head", "the adaptation strategy", choices=NAMES)
    hparams: dict[str, object] = option({}, "strategy hyperparameters as name=value,name=value (e.g. "
                                            "lr=0.001,epochs=5); help lists the strategy's", parse=hparam_pairs)
    experiment: str | None = option(None, "MLflow experiment (default: scadapt-<dataset>)")
    output_dir: str | None = option(None, "also save the trained annotator here")
    umap: bool = option(True, "skip the UMAP figure of the test embeddings", flag="no-umap")
    progress: bool = internal(True)
    parent_run_id: str | None = internal(None)  # nest the job's run under this run (e.g. a benchmark's)
    run_tags: dict[str, str] = internal({})  # more tags for the job's own run
    deadline: float | None = internal(None)  # time.time() after which a fit ends at its next epoch (time budget)

    def __post_init__(self) -> None:
        self.label_fractions = tuple(float(f) for f in self.label_fractions)
        refuse([
            (self.strategy not in NAMES,
             f"unknown strategy {self.strategy!r}; known: {', '.join(NAMES)}"),
            (self.regime not in REGIMES, f"unknown regime {self.regime!r}; known: {', '.join(REGIMES)}"),
            (self.n_folds < 2, f"n_folds must be at least 2 (got {self.n_folds})"),
            (not 0 < self.validation_fraction < 1,
             f"validation_fraction must lie between 0 and 1 (got {self.validation_fraction})"),
            (not self.label_fractions or not all(0 < f <= 1 for f in self.label_fractions),
             f"label_fractions must lie in (0, 1] (got {self.label_fractions})"),
            (bad_name(self.experiment), f"experiment {self.experiment!r} {NAME_RULE}"),
            (self.seed < 0, f"seed must be 0 or more (got {self.seed})"),
            *self.backbone_problems(),
            *memory_problems(self),
        ], "job settings")
        kind = get_strategy(self.strategy)  # the one look-up of the name given from outside
        self.method: Strategy = kind(kind.config_class.from_params({"seed": self.seed, **self.hparams}))

    @property
    def needs_backbone(self) -> bool:
        return self.method.needs_backbone


@dataclass
class TuneJob(TrainJob):
    """A :class:`TrainJob` whose strategy settings are searched. ``hparams`` stay fixed (they
    override the search space)."""

    hparams: dict[str, object] = option({}, "fixed strategy hyperparameters, not searched, as name=value,name=value; "
                                            "help lists the strategy's and their search", parse=hparam_pairs)
    output_dir: str | None = internal(None)
    n_trials: int = option(10, "finished trials the study should reach; a second worker or a rerun continues it")
    timeout: float | None = option(None, "seconds after which this worker starts no new trial (0: none)",
                                   parse=optional_seconds)
    storage: str | None = option(None, "sqlite:///optuna.db (default), journal:PATH for several workers on one "
                                       "host, or a database URL")
    study_name: str | None = option(None, "default: <dataset>/<strategy>/<split>/{setup}, where {setup} is a digest "
                                          "of the data, split, backbone and fixed settings; a study joined by name "
                                          "must have the same setup")
    pruning: str = option("median", "median (below the median of earlier trials), threshold or none", choices=PRUNERS)
    prune_below: float = option(0.0, "with --pruning threshold: prune trials whose validation macro-F1 is below this")
    pruning_warmup_epochs: int = option(2, "epochs a trial always gets")
    pruning_startup_trials: int = internal(2)  # trials before median pruning starts

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

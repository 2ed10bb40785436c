"""Settings of a benchmark, and the fingerprint that tells its finished cells apart from others'."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from scadapt.options import (
    DEFAULT_LABEL_FRACTIONS,
    REGIMES,
    STRATEGY_NAMES,
    TUNING_MODES,
    MemoryOptions,
)
from scadapt.strategies import get_strategy  # strategy classes load on first use
from scadapt.training.config import DEVICE_HELP, memory_problems, refuse, valid_device


@dataclass
class BenchmarkConfig(MemoryOptions):
    """Which matrix to run and how.

    The matrix is datasets x strategies x splits, where the splits are those of each regime:
    ``full`` (one per fold), ``low`` (one per label fraction and fold) and ``cross_study`` (one
    per held-out technology group; datasets without a batch key have none).

    ``tuning``:
        ``reuse``: one Optuna study per dataset and strategy, on the first split of the matrix
        (``full_fold0``); its best settings train every other split. Cheap, but those settings
        were chosen on fold 0's validation cells, which are test cells of other folds.
        ``per_fold``: one study per split (nested: each split's settings are chosen on its own
        validation cells only). ``n_trials`` times more fits.
    """

    datasets: tuple[str, ...] = ("pbmc68k_reduced", "pancreas_small")
    strategies: tuple[str, ...] = STRATEGY_NAMES
    regimes: tuple[str, ...] = REGIMES
    label_fractions: tuple[float, ...] = DEFAULT_LABEL_FRACTIONS
    n_folds: int = 5  # K of the stratified folds
    folds: int | None = 3  # run the first ``folds`` of the K folds (None, or more than K: all K)
    tuning: str = "reuse"
    n_trials: int = 3  # per study
    epochs: int = 10  # per fit, for the strategies trained by gradient descent
    checkpoint: str | None = None  # default: the demo backbone (pretrained on first use)
    pretrain_epochs: int = 10
    pretrain_data: tuple[str, ...] = ()  # pretrain the demo backbone on these cells (default: the bundled data)
    storage: str | None = None  # Optuna storage (default: sqlite:///optuna.db)
    policy: str | None = None  # ranking and promotion rule (default: registry/policy.yaml)
    promote: bool = True  # register each dataset's champion at the end
    force: bool = False  # promote even when the new champion ranks below the current one
    experiment: str = "scadapt-benchmark"
    output_dir: str = "benchmark_results"
    name: str = "default"  # shown in run names and the report
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # processes on this machine sharing the matrix; 0: one per CPU core (up to 4 and 4 GB each), 1 on a GPU
    progress: bool = True
    data_options: dict[str, object] = field(default_factory=dict)  # label_key, batch_key, ... for every dataset
    job_options: dict[str, object] = field(default_factory=dict)  # more TrainJob fields (max_seq_len, min_genes, ...)

    def __post_init__(self) -> None:
        self.datasets, self.strategies, self.regimes = tuple(self.datasets), tuple(self.strategies), tuple(self.regimes)
        self.label_fractions = tuple(float(f) for f in self.label_fractions)
        self.pretrain_data = tuple(self.pretrain_data)
        problems = [
            (not self.datasets, "at least one dataset is needed"),
            (not self.strategies, "at least one strategy is needed"),
            (bool(bad := [s for s in self.strategies if s not in STRATEGY_NAMES]),
             f"unknown strategies {bad if self.strategies else ''}; known: {', '.join(STRATEGY_NAMES)}"),
            (bool(bad_r := [r for r in self.regimes if r not in REGIMES]),
             f"unknown regimes {bad_r if self.regimes else ''}; known: {', '.join(REGIMES)}"),
            (not self.regimes, "at least one regime is needed"),
            (self.tuning not in TUNING_MODES, f"tuning must be one of {', '.join(TUNING_MODES)} (got {self.tuning!r})"),
            (self.n_trials < 1 or self.epochs < 1, "n_trials and epochs must be at least 1"),
            (self.workers < 0, f"workers must be 0 (automatic) or more (got {self.workers})"),
            (self.n_folds < 2, f"n_folds must be at least 2 (got {self.n_folds})"),
            (self.folds is not None and self.folds < 1, f"folds must be at least 1 (got {self.folds})"),
            ("'" in self.name, "the benchmark name cannot contain a quote"),
            (not self.label_fractions or not all(0 < f <= 1 for f in self.label_fractions),
             f"label_fractions must lie in (0, 1] (got {self.label_fractions})"),
            (not valid_device(self.device), f"unknown device {self.device!r}; use {DEVICE_HELP}"),
            *memory_problems(self),
            (bool(self.pretrain_data) and bool(self.checkpoint),
             "pretrain_data pretrains the demo backbone; it cannot be combined with checkpoint"),
        ]
        refuse(problems, "benchmark settings")

    @property
    def needs_backbone(self) -> bool:
        return any(get_strategy(s).needs_backbone for s in self.strategies)

    @property
    def folds_run(self) -> int:
        return self.n_folds if self.folds is None else min(self.folds, self.n_folds)

    def fold_numbers(self) -> list[int]:
        return list(range(self.folds_run))

    def fingerprint(self, checkpoint: str | Path | None) -> str:
        """Everything a cell's result depends on besides its dataset, split and strategy.

        Finished cells are found in MLflow by this value, so a rerun with the same settings
        skips them, a bigger matrix (more datasets, strategies, folds or fractions) only runs
        what is new, and changed settings never reuse a result made with other ones.
        """
        from scadapt.backbone.checkpoint import checkpoint_digest

        keep = {
            "n_folds": self.n_folds, "tuning": self.tuning, "n_trials": self.n_trials, "epochs": self.epochs,
            "seed": self.seed, **{name: {k: str(v) for k, v in sorted(getattr(self, name).items())}
                                  for name in ("data_options", "job_options")},
            "backbone": checkpoint_digest(checkpoint) if checkpoint else None,
            # the strategies' default settings: a release that changes one never reuses old cells
            "defaults": {name: get_strategy(name).config_class().to_params() for name in sorted(self.strategies)},
        }
        return hashlib.blake2b(json.dumps(keep, sort_keys=True).encode(), digest_size=8).hexdigest()

"""Settings of a benchmark, and the fingerprint that tells its finished cells apart from others'."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from scadapt.data.options import (
    BUNDLED_DATASETS,
    DEFAULT_LABEL_FRACTIONS,
    DEFAULT_N_FOLDS,
    REGIMES,
    DataOptions,
    required_cells_per_class,
)
from scadapt.infra.options import TUNING_MODES, MemoryOptions, internal, option, options_group
from scadapt.infra.parsers import NAME_RULE, bad_name, names, number_list, optional_count, optional_minutes
from scadapt.jobs.config import BackboneOptions, memory_problems, refuse
from scadapt.strategies import NAMES, get_strategy, strategy_names  # strategy classes load on first use
from scadapt.tracking.contract import BENCHMARK_EXPERIMENT

if TYPE_CHECKING:
    from scadapt.strategies.base import Strategy

PIPELINE_DATA = BUNDLED_DATASETS[0]  # the main job's dataset by default (`mlflow run .`)
PRETRAIN_DATA_HELP = ("pretrain the demo backbone on these unlabelled cells (comma-separated .h5ad paths or catalogued "
                      "names, read with --layer and --gene-column) instead of the bundled data, so its vocabulary "
                      "covers your genes")


@dataclass
class StudyOptions(BackboneOptions):
    """What the main job (the pipeline) and the benchmark share: the strategies and their studies'
    budget, the backbone, where studies and champions live, and where the work runs."""

    strategies: tuple[str, ...] = option(NAMES, "comma-separated (default: all)", parse=strategy_names)
    n_trials: int = option(3, "trials per study")
    epochs: int = option(10, "epochs per fit, for the strategies trained by gradient descent")
    pretrain_epochs: int = option(10, "epochs of the demo backbone's pretraining")
    pretrain_data: tuple[str, ...] = option((), PRETRAIN_DATA_HELP, parse=names)
    storage: str | None = option(None, "Optuna storage (default: sqlite:///optuna.db)")
    policy: str | None = option(None, "ranking and promotion rule (default: registry/policy.yaml)")
    force: bool = option(False, "promote each dataset's best runner even if it ranks below the current champion",
                         flag="force")
    seed: int = option(0, "seed of the splits, the models and the search")
    workers: int = option(0, "processes on this machine sharing the work (0: one per CPU core, up to 4 and 4 GB of "
                             "memory each; 1 on a GPU)")
    time_budget: float | None = option(None, "minutes the whole job may take (default: no limit): cheapest "
                                             "strategies first, the studies share the rest, and those cut short "
                                             "are named in the summary", parse=optional_minutes)
    progress: bool = internal(True)
    deadline: float | None = internal(None)  # time.time() when the budget ends: set as the job starts, given to helpers


@dataclass
class BenchmarkConfig(StudyOptions, MemoryOptions):
    """Which matrix to run and how (``reading``: how every dataset is read).

    The matrix is datasets x strategies x splits, where the splits are those of each regime:
    ``full`` (one per fold), ``low`` (one per label fraction and fold) and ``cross_study`` (one
    per held-out technology group; datasets without a batch key have none).

    ``tuning``:
        ``reuse``: one Optuna study per dataset and strategy on the first split of the full and
        low regimes (``full_fold0``), whose best settings train their other splits; every
        held-out technology split has its own study, on validation cells of the technologies it
        trains on (settings chosen where one technology is tested and reused where another is
        made a baseline fragile across technologies). Cheap, but fold 0's validation cells are
        test cells of other folds.
        ``per_fold``: one study per split (nested: each split's settings are chosen on its own
        validation cells only). ``n_trials`` times more fits.
    """

    datasets: tuple[str, ...] = option(BUNDLED_DATASETS, "comma-separated catalogued names or .h5ad paths", parse=names)
    reading: DataOptions = options_group(DataOptions)
    regimes: tuple[str, ...] = option(REGIMES, "comma-separated from full, low, cross_study (default: all; "
                                               "cross_study where there are batches)", parse=names)
    label_fractions: tuple[float, ...] = option(DEFAULT_LABEL_FRACTIONS, "training-label fractions of the low regime",
                                                parse=number_list)
    n_folds: int = option(DEFAULT_N_FOLDS, "K of the stratified folds")
    folds: int | None = option(3, "run the first F of the K folds (0: all K)", parse=optional_count)
    tuning: str = option("reuse", "reuse: one study per dataset and strategy, its settings reused on every full and "
                                  "low split (held-out technologies get a study each); per_fold: one study per split",
                         choices=TUNING_MODES)
    promote: bool = option(True, "do not register champions at the end", flag="no-promote")
    experiment: str = option(BENCHMARK_EXPERIMENT, "MLflow experiment of all its runs")
    output_dir: str = option("benchmark_results", "report, tables and figures")
    name: str = option("default", "shown in run names and the report")

    def __post_init__(self) -> None:
        if isinstance(self.reading, dict):  # a helper worker's settings, read back from JSON
            self.reading = DataOptions(**self.reading)
        self.datasets, self.strategies, self.regimes = tuple(self.datasets), tuple(self.strategies), tuple(self.regimes)
        self.label_fractions = tuple(float(f) for f in self.label_fractions)
        self.pretrain_data = tuple(self.pretrain_data)
        problems = [
            (not self.datasets, "at least one dataset is needed"),
            (not self.strategies, "at least one strategy is needed"),
            (bool(bad := [s for s in self.strategies if s not in NAMES]),
             f"unknown strategies {bad if self.strategies else ''}; known: {', '.join(NAMES)}"),
            (bool(bad_r := [r for r in self.regimes if r not in REGIMES]),
             f"unknown regimes {bad_r if self.regimes else ''}; known: {', '.join(REGIMES)}"),
            (not self.regimes, "at least one regime is needed"),
            (self.tuning not in TUNING_MODES, f"tuning must be one of {', '.join(TUNING_MODES)} (got {self.tuning!r})"),
            (self.n_trials < 1 or self.epochs < 1 or self.pretrain_epochs < 1,
             "n_trials, epochs and pretrain_epochs must be at least 1"),
            (self.workers < 0, f"workers must be 0 (automatic) or more (got {self.workers})"),
            (self.seed < 0, f"seed must be 0 or more (got {self.seed})"),
            (self.time_budget is not None and not self.time_budget > 0,
             f"time_budget is a number of minutes above 0 (got {self.time_budget}); leave it out for no limit"),
            (self.n_folds < 2, f"n_folds must be at least 2 (got {self.n_folds})"),
            (self.folds is not None and self.folds < 1, f"folds must be at least 1 (got {self.folds})"),
            ("'" in self.name, "the benchmark name cannot contain a quote"),
            (bad_name(self.experiment), f"experiment {self.experiment!r} {NAME_RULE}"),
            (not self.label_fractions or not all(0 < f <= 1 for f in self.label_fractions),
             f"label_fractions must lie in (0, 1] (got {self.label_fractions})"),
            *self.backbone_problems(),
            *memory_problems(self),
            (bool(self.pretrain_data) and bool(self.checkpoint),
             "pretrain_data pretrains the demo backbone; it cannot be combined with checkpoint"),
        ]
        refuse(problems, "benchmark settings")
        if self.reading.drop_rare_classes and not self.reading.min_cells_per_class:  # one class set for every regime
            self.reading = replace(self.reading, min_cells_per_class=max(required_cells_per_class(r, self.n_folds)
                                                                         for r in self.regimes))

    def own_study(self, regime: str) -> bool:
        """Whether a cell of ``regime`` is tuned on its own split's validation cells: always with
        ``per_fold``; with ``reuse``, the held-out technology splits (``cross_study``), so that no
        split's settings are chosen on cells of the technology it is tested on, nor one
        technology's settings judged on another."""
        return self.tuning == "per_fold" or regime == "cross_study"

    def tuned_on(self, cell, group: list):
        """The cell of ``group`` (one dataset and strategy, in run order) whose study gives
        ``cell`` its settings: itself when it has its own study, else the group's first cell
        that does not (``full_fold0`` when the full regime is in the matrix)."""
        if self.own_study(cell.regime):
            return cell
        return next(c for c in group if not self.own_study(c.regime))

    @functools.cached_property
    def methods(self) -> dict[str, Strategy]:
        """The chosen strategies with their default settings, by name (the one look-up of the names given)."""
        return {name: get_strategy(name)() for name in self.strategies}

    @property
    def needs_backbone(self) -> bool:
        return any(method.needs_backbone for method in self.methods.values())

    @property
    def folds_run(self) -> int:
        return self.n_folds if self.folds is None else min(self.folds, self.n_folds)

    def fold_numbers(self) -> list[int]:
        return list(range(self.folds_run))

    def fingerprint(self, backbone: str | None, precision: str) -> str:
        """Everything a cell's result depends on besides its data's content, split and strategy
        (:attr:`MatrixCell.identity`; ``backbone``: what identifies the backbone, a content digest or
        the pretraining job that makes it, None without one; ``precision``: the compute dtype).

        Finished cells are found in MLflow by this value and their identity, so a rerun with the
        same settings and data skips them, a bigger matrix (more datasets, strategies, folds or
        fractions) only runs what is new, and changed settings or data never reuse a result made
        with other ones.
        """
        keep = {
            "n_folds": self.n_folds, "n_trials": self.n_trials, "epochs": self.epochs,
            # held-out technologies have their own studies under reuse since 2026-12: older cells do not count
            "tuning": "reuse, held-out splits own" if self.tuning == "reuse" and "cross_study" in self.regimes
            else self.tuning,
            # as JSON sees them, so a helper worker reading the settings back from JSON (tuples as lists) agrees
            "seed": self.seed, "data_options": json.loads(json.dumps(self.reading.given(), default=str)),
            "job_options": {k: str(getattr(self, k)) for k in ("max_seq_len", "min_genes")
                            if getattr(self, k) != getattr(BackboneOptions, k)},
            "backbone": backbone, "precision": precision,
            # the strategies' default settings: a release that changes one never reuses old cells
            "defaults": {name: method.config.to_params() for name, method in sorted(self.methods.items())},
        }
        return hashlib.blake2b(json.dumps(keep, sort_keys=True).encode(), digest_size=8).hexdigest()

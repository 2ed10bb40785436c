"""The job's plan: what will run and about how long it will take, said before any heavy work and
refreshed as cells finish.

The estimate comes from a short calibration on the user's own cells, with the threads each worker
will have: one training step and one inference pass of the backbone at the cells' number of
tokens, and one logistic-regression fit on a sample of the expression matrix
(:class:`~scadapt.strategies.costs.Rates`). Each strategy turns those rates into the seconds of
its study (:meth:`~scadapt.strategies.base.Strategy.estimate_seconds`). As cells finish, the time
left is re-estimated from how long the finished ones took against their estimates. With a time
budget, the smallest budget that fits (every strategy without a backbone, one trial each) is
known here too, so a budget below it is refused before any work.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from scadapt.backbone.config import BackboneConfig
from scadapt.backbone.speed import time_cell_passes
from scadapt.benchmark.config import BenchmarkConfig
from scadapt.benchmark.matrix import MatrixCell, by_dataset_and_strategy
from scadapt.data import DatasetInfo
from scadapt.data.preprocess import log_normalized
from scadapt.fitting.linear import fit_linear
from scadapt.infra.errors import ScadaptError
from scadapt.strategies.costs import Rates, StudyWork
from scadapt.tokenization import GeneVocab
from scadapt.tokenization.tokenizer import mean_tokens

SAMPLE_CELLS = 1000  # cells of a dataset the logistic-regression fit is timed on
FINISH_SEC = 15.0  # the job's end: ranking, promotion, figures and report (8-20 s on the default matrix, 2 cores)


@dataclass(frozen=True)
class DataProbe:
    """What the plan needs of a dataset, taken while the matrix is planned."""

    tokens: float  # mean tokens per cell the backbone reads (0 without a backbone)
    sample: sp.csr_matrix  # log-normalised expression of up to SAMPLE_CELLS cells
    codes: np.ndarray  # their labels as class indices

    @classmethod
    def of(cls, adata: AnnData, vocab: GeneVocab | None, max_seq_len: int, seed: int = 0) -> DataProbe:
        picked = np.sort(np.random.default_rng(seed).permutation(adata.n_obs)[:SAMPLE_CELLS])
        labels = adata.obs[DatasetInfo.of(adata).label_key].astype(str).to_numpy()[picked]
        codes = np.unique(labels, return_inverse=True)[1]
        tokens = mean_tokens(adata.X, adata.var_names, vocab, max_seq_len) if vocab is not None else 0.0
        return cls(tokens, log_normalized(adata.X[picked]), codes)


@dataclass
class JobPlan:
    """Estimated seconds per matrix cell (a study, or one fit with settings tuned elsewhere) and
    for pretraining the demo backbone, for ``workers`` workers."""

    table: pd.DataFrame  # one row per (dataset, strategy): cells, trials, epochs, training cells, tokens, seconds
    seconds: dict[str, float]  # cell key -> estimated seconds (one worker)
    needs_backbone: dict[str, bool]  # cell key -> whether it runs on the backbone
    one_trial: dict[str, float]  # cell key -> estimated seconds of the cell with one trial (its least)
    pretrain_sec: float  # 0 when the backbone exists
    workers: int
    started: float = field(default_factory=time.time)
    measured: dict[str, float] = field(default_factory=dict)  # cell key -> seconds it took here

    def total_seconds(self) -> float:
        """Estimated wall time of the whole job from its start."""
        return self.pretrain_sec + sum(self.seconds.values()) / self.workers + FINISH_SEC

    def minimum_seconds(self) -> float:
        """The smallest time budget that fits: the strategies without a backbone still to run, one
        trial each, and the job's end. With none left any budget moves the job on: pretraining
        continues where it stopped, and a budget too small for it ends the job with that said."""
        return sum(self.one_trial[key] for key, backbone in self.needs_backbone.items() if not backbone) + FINISH_SEC

    def shown(self) -> pd.DataFrame:
        """The plan's table as printed and logged."""
        return self.table.rename(columns={"seconds": "estimated s"})

    def text(self) -> str:
        lines = ["Plan (estimated from a timed step of each family on your cells):",
                 self.shown().to_string(index=False, float_format=lambda v: f"{v:.0f}")]
        if self.pretrain_sec:
            lines.append(f"Pretraining the demo backbone first (before the first strategy with a backbone): "
                         f"about {_duration(self.pretrain_sec)}.")
        lines.append(f"{len(self.seconds)} cells on {self.workers} worker{'s' if self.workers > 1 else ''}: about "
                     f"{_duration(self.total_seconds())} in all; the strategies without a backbone answer first.")
        return "\n".join(lines)

    def finished(self, key: str, seconds: float) -> None:
        self.measured[key] = seconds

    def progress(self, done: set[str], pretrained: bool, budget_left: float = math.inf) -> str:
        """One line: cells done, time so far, time left re-estimated from the measured cells (at
        most ``budget_left``, the time budget's seconds left)."""
        left = sum(self.seconds[key] * self._ratio(self.needs_backbone[key]) for key in self.seconds if key not in done)
        left = min(left / self.workers + (0.0 if pretrained else self.pretrain_sec) + FINISH_SEC, budget_left)
        return (f"Progress: {len(done & set(self.seconds))} of {len(self.seconds)} cells done in "
                f"{_duration(time.time() - self.started)}; about {_duration(left)} left.")

    def _ratio(self, backbone: bool) -> float:
        """Measured against estimated seconds over the measured cells of the same kind (with or
        without a backbone; one kind's pace says little of the other's), else 1."""
        keys = [k for k in self.measured if self.needs_backbone[k] == backbone]
        estimated = sum(self.seconds[k] for k in keys)
        return sum(self.measured[k] for k in keys) / estimated if estimated > 0 else 1.0


def make_plan(cfg: BenchmarkConfig, cells: list[MatrixCell], probes: dict[str, DataProbe],
              backbone: BackboneConfig | None, pretraining: tuple[BackboneConfig, int, float] | None,
              workers: int, threads: int, device: str = "cpu") -> JobPlan:
    """Time one step per family with ``threads`` threads, and estimate every cell.

    ``backbone``: the shape of the job's backbone (None when no strategy uses it);
    ``pretraining``: the demo backbone's shape, its cells and their mean tokens, when it must be
    pretrained first (it runs on every core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rates = {name: _rates(probe, backbone, device) for name, probe in probes.items()}
    finally:
        torch.set_num_threads(before)
    pretrain_sec = 0.0
    if pretraining is not None:
        shape, n_cells, tokens = pretraining
        pretrain_sec = cfg.pretrain_epochs * n_cells * time_cell_passes(shape, round(tokens), device=device,
                                                                       decoders=True).train
    rows, seconds, needs, one_trial = [], {}, {}, {}
    for group in by_dataset_and_strategy(cells):
        dataset, strategy = group[0].dataset, group[0].strategy
        chosen = group[0].method
        trials = cfg.n_trials
        epochs = cfg.epochs if "epochs" in chosen.epoch_budget(cfg.epochs) else 0
        for cell in group:
            tuned = cfg.tuned_on(cell, group) == cell
            work = StudyWork(trials if tuned else 1, max(1, epochs), cell.n_train, cell.n_eval, cell.n_cells)
            seconds[cell.identity] = chosen.estimate_seconds(work, rates[dataset])
            one_trial[cell.identity] = chosen.estimate_seconds(replace(work, trials=1), rates[dataset])
            needs[cell.identity] = chosen.needs_backbone
        rows.append({"dataset": dataset, "strategy": strategy, "cells": len(group), "trials": trials,
                     "epochs": epochs or "-", "training cells": group[0].n_train,
                     "tokens/cell": round(probes[dataset].tokens) if chosen.needs_backbone else "-",
                     "seconds": sum(seconds[c.identity] for c in group)})
    return JobPlan(pd.DataFrame(rows), seconds, needs, one_trial, pretrain_sec, workers)


def refuse_small_budget(plan: JobPlan, budget_minutes: float, elapsed: float) -> None:
    """Refuse a time budget below the smallest that fits, naming that smallest budget."""
    needed = elapsed + plan.minimum_seconds()
    if budget_minutes * 60 >= needed:
        return
    smallest = math.ceil(needed / 30) / 2  # minutes, rounded up to half a minute
    raise ScadaptError(
        f"A time budget of {budget_minutes:g} min is too small for this job: even the strategies without a backbone "
        f"still to run, one trial each, need about {_duration(needed)} here (estimated from a timed fit on your cells, with the "
        f"{_duration(elapsed)} the job has taken so far). The smallest budget that fits: --time-budget {smallest:g} "
        "(-P time_budget=... with mlflow run).")


def _rates(probe: DataProbe, backbone: BackboneConfig | None, device: str) -> Rates:
    started = time.perf_counter()
    fit_linear(probe.sample, probe.codes, int(probe.codes.max()) + 1, 1.0, "l2", False, 100, 0)
    expression = (time.perf_counter() - started) / probe.sample.shape[0]
    if backbone is None or not probe.tokens:
        return Rates(0.0, 0.0, expression)
    passes = time_cell_passes(backbone, round(probe.tokens), device=device)
    return Rates(passes.train, passes.forward, expression)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"

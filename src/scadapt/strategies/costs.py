"""What a study of a strategy costs, in seconds, from rates timed on the user's cells.

A job's plan (``scadapt.benchmark.plan``) times one step per family on the user's cells (a
training step and an inference pass of the backbone, a logistic-regression fit on the expression
matrix) and asks each strategy, through :meth:`~scadapt.strategies.base.Strategy.estimate_seconds`,
what its study costs at those rates. The estimates are rough by design (early stopping and
pruning end trials sooner, the frozen-layer cache makes later epochs cheaper); the plan corrects
them with the times of the studies that finish.
"""

from __future__ import annotations

from dataclasses import dataclass

# per trial, whatever the strategy: scoring the validation and test cells, calibrating the novelty
# threshold, logging the run and saving its model (1-3 s per trial of the expression strategies on
# the default matrix, 2 cores; benchmarks/RESULTS.md "Time to an answer")
TRIAL_OVERHEAD_SEC = 2.0
# the share of their epoch budget that a study's fits run on average: early stopping (patience a
# third of the epochs) and median pruning end many sooner (``full``'s studies ran 0.53-0.54 of
# their trials x epochs on the bundled PBMC and the synthetic wide data of time_to_answer.py)
EPOCHS_RUN = 0.55


@dataclass(frozen=True)
class Rates:
    """Seconds per cell, timed on the user's cells with the job's threads per worker."""

    train_cell_sec: float  # one training step through every backbone layer
    embed_cell_sec: float  # one inference pass through the backbone
    expression_cell_sec: float  # one fit of a logistic regression on the expression matrix, per training cell
    trial_overhead_sec: float = TRIAL_OVERHEAD_SEC


@dataclass(frozen=True)
class StudyWork:
    """The work of one study (``trials`` fits) or of one fit with settings chosen elsewhere (1 trial)."""

    trials: int
    epochs: int
    n_train: int  # training cells
    n_eval: int  # validation and test cells, scored every epoch (validation) or once (test)
    n_cells: int  # every cell of the dataset (a frozen backbone embeds each once)

"""The job's time budget (``--time-budget MINUTES``): one deadline for the whole job, shared out
to the work still to do.

The deadline is a wall-clock time (``time.time()``), set once when the job starts and handed to
helper workers with the rest of the settings, so every process stops at the same moment. Work is
planned from what is left: pretraining the demo backbone may take half of the time left when it
starts, and each study the share of the time left (at least :data:`MIN_STUDY_SEC`) that its strategy's
:attr:`~scadapt.strategies.base.Strategy.relative_cost` is of the studies still to run (Optuna's
``timeout``: no trial starts after it). Past the deadline no study or trial starts, and a fit that
is running ends at its next epoch with its best epoch so far, as when it stops early.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

PRETRAIN_SHARE = 0.5  # of the time left when the demo backbone's pretraining starts
MIN_STUDY_SEC = 30.0  # a study's share is at least this (when that much is left): a trial costs seconds of
# logging and scoring whatever the strategy, so a share from relative costs alone would leave the
# cheapest strategies one trial


@dataclass(frozen=True)
class TimeBudget:
    deadline: float | None  # time.time() at which the job must end; None: no budget

    @classmethod
    def starting_now(cls, minutes: float | None) -> TimeBudget:
        return cls(time.time() + 60.0 * minutes if minutes is not None else None)

    def left(self) -> float:
        """Seconds left (infinite without a budget, 0 once spent)."""
        return math.inf if self.deadline is None else max(0.0, self.deadline - time.time())

    def spent(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def share(self, cost: float, cost_left: float) -> float | None:
        """Seconds for work of ``cost`` among work of ``cost_left`` (``cost`` included) still to
        do; None without a budget."""
        if self.deadline is None:
            return None
        left = self.left()
        return max(min(MIN_STUDY_SEC, left), left * cost / max(cost_left, cost), 1.0)

    def pretraining_deadline(self) -> float | None:
        """When pretraining the demo backbone must stop, if it starts now."""
        return None if self.deadline is None else time.time() + PRETRAIN_SHARE * self.left()

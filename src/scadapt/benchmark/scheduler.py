"""Which cell this worker runs next. Several workers (on one machine or many) share the matrix:
each cell is claimed through a lock in the study storage before it runs (a dead worker's claim
ends with it and the cell runs elsewhere), in the order of work, within the time budget.

The order: a cell whose settings come from another cell's study waits for that study (run by the
worker that claimed its cell, so its trials follow from the seed however many workers there are);
a cell that needs the backbone waits until every cell of its dataset without one is finished, so
the first answer comes before any backbone work. Once the time budget is spent, every cell no
worker runs is cut short, with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from scadapt.benchmark.cells import CellRunner, cell_finished, close_leftover_runs, finished_runs
from scadapt.benchmark.matrix import MatrixCell, by_dataset_and_strategy, progress_grid

log = logging.getLogger(__name__)

CLAIM_POLL_SEC = 5.0  # how often a worker with nothing to claim looks again


@dataclass
class Scheduler:
    """Claims the cells of ``cells`` this worker may run, one at a time, until the matrix is
    complete (here or on other workers); keeps what is finished and what was cut short."""

    cells: list[MatrixCell]
    runner: CellRunner
    experiment_id: str
    cut_short: dict[str, str] = field(default_factory=dict)  # cell key -> why the time budget left it unrun

    def __post_init__(self) -> None:
        self.finished = set(finished_runs(self.experiment_id, self.runner.fingerprint))
        self.groups = by_dataset_and_strategy(self.cells)
        self.bar = tqdm(total=len(self.cells), initial=len(self.identities & self.finished), desc="benchmark",
                        unit="cell", disable=not self.runner.cfg.progress)

    @property
    def identities(self) -> set[str]:
        return {c.identity for c in self.cells}

    def grid(self) -> str:
        return progress_grid(self.cells, self.finished).to_string()

    def claims(self) -> Iterator[tuple[MatrixCell, list[MatrixCell]]]:
        """Each cell this worker claims and may run, with its group, while its claim is held; the
        caller then says :meth:`done` or :meth:`cut`."""
        said_waiting = False
        while True:
            ran_one = False
            for group in self.groups:
                for cell in group:
                    if not self._may_claim(cell, group):
                        continue
                    with self.runner.board.hold(f"cell:{self.runner.fingerprint}/{cell.identity}", wait=False) as held:
                        if held and self._still_to_run(cell, group):
                            ran_one = True
                            yield cell, group
            if ran_one:  # look again at once; what other workers finished is found when claiming it
                continue
            if not (left := self._left_to_others()):
                self.bar.close()
                return
            if not said_waiting:  # a dead worker's claim ends with it
                log.info("%d cells run on other workers; waiting for them.", len(left))
                said_waiting = True
            time.sleep(CLAIM_POLL_SEC)

    def done(self, cell: MatrixCell, note: str) -> None:
        self.finished.add(cell.identity)
        self.bar.update(1)
        self.bar.set_postfix_str(f"{cell.key}: {note}")

    def cut(self, cell: MatrixCell, why: str) -> None:
        self.cut_short[cell.key] = why

    def cost_left(self) -> float:
        """Relative cost of the studies not yet finished (a group's first cell stands for its study)."""
        return sum(g[0].method.relative_cost for g in self.groups if g[0].identity not in self.finished)

    def _may_claim(self, cell: MatrixCell, group: list[MatrixCell]) -> bool:
        if cell.identity in self.finished or cell.key in self.cut_short:
            return False
        # once the budget is spent, every cell no worker runs is claimed to be cut short
        return self.runner.budget.spent() or (self._settings_ready(cell, group) and self._cheap_ones_done(cell))

    def _still_to_run(self, cell: MatrixCell, group: list[MatrixCell]) -> bool:
        """Under the claim: whether ``cell`` is still to run here (not finished by another worker
        since the last look, nor unrunnable in this call); the runs a dead worker left are closed."""
        runner = self.runner
        if cell_finished(self.experiment_id, runner.fingerprint, cell.identity):
            self.finished.add(cell.identity)
            self.bar.update(1)
            return False
        if (why := self._unrunnable(cell, group)) is not None:
            self.cut(cell, why)
            return False
        close_leftover_runs(self.experiment_id, runner.fingerprint, cell.identity)
        return True

    def _unrunnable(self, cell: MatrixCell, group: list[MatrixCell]) -> str | None:
        """Why ``cell`` cannot run in this call: the time budget is spent, it needs the backbone and
        the budget stopped the backbone's pretraining, or the study whose settings it reuses was cut short."""
        if self.runner.budget.spent():
            return "the time budget was spent before it started"
        if cell.method.needs_backbone and self.runner.no_backbone:
            return self.runner.no_backbone
        tuned_on = self.runner.cfg.tuned_on(cell, group)
        if tuned_on != cell and tuned_on.key in self.cut_short:
            return f"the study of {tuned_on.key}, whose settings it reuses, was cut short"
        return None

    def _settings_ready(self, cell: MatrixCell, group: list[MatrixCell]) -> bool:
        """With ``reuse`` tuning a cell's settings may come from the study on another cell of its
        group (:meth:`BenchmarkConfig.tuned_on`); the cells that reuse it wait for it."""
        tuned_on = self.runner.cfg.tuned_on(cell, group)
        return cell == tuned_on or tuned_on.identity in self.finished or tuned_on.key in self.runner.studies

    def _cheap_ones_done(self, cell: MatrixCell) -> bool:
        """A cell that needs the backbone waits until every cell of its dataset without one is finished."""
        if not cell.method.needs_backbone:
            return True
        return all(c.identity in self.finished or c.key in self.cut_short for c in self.cells
                   if c.dataset == cell.dataset and not c.method.needs_backbone)

    def _left_to_others(self) -> list[MatrixCell]:
        """Nothing is left to claim here: what the other workers finished (one search of the whole
        experiment, which grows with the matrix, so not after every cell), and what they still run."""
        now = set(finished_runs(self.experiment_id, self.runner.fingerprint)) | self.finished
        self.bar.update(len(self.identities & (now - self.finished)))
        self.finished = now
        return [c for c in self.cells if c.identity not in self.finished and c.key not in self.cut_short]

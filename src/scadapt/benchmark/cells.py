"""Running one cell of the matrix: its job (the study that tunes it, or a train run with the
settings of the study it reuses), adoption of a finished study's best trial as its result, and the
runs a dead worker left behind.

A cell's result is one finished MLflow run tagged with the benchmark's fingerprint and the cell's
identity (:attr:`~scadapt.benchmark.matrix.MatrixCell.identity`), which is how every worker finds it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Run

from scadapt.benchmark.budget import TimeBudget
from scadapt.benchmark.config import BenchmarkConfig
from scadapt.benchmark.local_workers import every_core
from scadapt.benchmark.matrix import MatrixCell
from scadapt.infra.coordination import Coordinator
from scadapt.infra.errors import BudgetSpent
from scadapt.infra.options import MemoryOptions, group_of
from scadapt.jobs import TuneJob, TuneResult, tune
from scadapt.jobs.config import PretrainConfig, TrainJob
from scadapt.jobs.demo_backbone import ensure_demo_backbone
from scadapt.jobs.study_setup import SETUP_PLACEHOLDER
from scadapt.jobs.train import train
from scadapt.tracking.contract import (
    BENCHMARK_TAG,
    CELL_TAG,
    CLOSED_BY_TAG,
    INTERRUPTED_TAG,
    TRIALS_ENDED_BY_TAG,
    TUNED_BY_TAG,
    WORKER_TAG,
)
from scadapt.tracking.runs import close_orphaned_runs, search_all_runs
from scadapt.tracking.workers import worker_id

log = logging.getLogger(__name__)


@dataclass
class CellRunner:
    """Runs the cells of one benchmark on this worker: the jobs share its backbone, studies and
    time budget."""

    cfg: BenchmarkConfig
    checkpoint: str | None
    fingerprint: str
    parent_id: str
    experiment: str
    board: Coordinator  # the workers' locks
    pretraining: PretrainConfig  # the demo backbone's pretraining job (used when no checkpoint is given)
    backbone_ready: bool = False  # the backbone's folder exists (pretrained, given or fetched)
    no_backbone: str = ""  # why the backbone is not there (the time budget stopped its pretraining)
    cost_left: float = 0.0  # relative cost of the studies not yet finished, the running one included
    tuning_sec: float = 0.0  # spent in studies by this call
    studies: dict[str, TuneResult] = field(default_factory=dict)  # by the key of the cell tuned on

    @property
    def budget(self) -> TimeBudget:
        return TimeBudget(self.cfg.deadline)

    def ensure_backbone(self) -> None:
        """Pretrain the demo backbone if it does not exist yet (once, by one worker; within half
        of the time left); a cut-short pretraining leaves every backbone cell unrun."""
        if self.backbone_ready:
            return
        try:
            with every_core():  # the other workers wait for it
                ensure_demo_backbone(self.pretraining, lock=self.board.hold,
                                     deadline=self.budget.pretraining_deadline())
        except BudgetSpent as spent:
            self.no_backbone = str(spent)
            raise
        self.backbone_ready = True

    def run(self, cell: MatrixCell, group: list[MatrixCell]) -> tuple[dict[str, float], bool]:
        """Run one cell; return its metrics and whether its result is a study's best trial."""
        tuned_on = self.cfg.tuned_on(cell, group)
        if self.cfg.tuning == "per_fold":
            return self._adopt(cell, self._tune(cell)), True
        study = self.study_of(tuned_on)  # joins the study if another worker is running it
        if cell == tuned_on:
            return self._adopt(cell, study), True
        settings = {**tuned_on.method.epoch_budget(self.cfg.epochs), **study.best_params}
        tags = {**self._tags(cell), TUNED_BY_TAG: study.parent_run_id}
        return train(self._job(cell, hparams=settings, run_tags=tags)).metrics, False

    def study_of(self, cell: MatrixCell) -> TuneResult:
        """The finished study of ``cell`` (run, joined or found finished once per process)."""
        if cell.key not in self.studies:
            self.studies[cell.key] = self._tune(cell)
        return self.studies[cell.key]

    def _job(self, cell: MatrixCell, job_class: type[TrainJob] = TrainJob, **fields) -> TrainJob:
        cfg = self.cfg
        return job_class(data=cell.data, regime=cell.regime, split=cell.split, n_folds=cfg.n_folds,
                         label_fractions=cfg.label_fractions, strategy=cell.strategy, checkpoint=self.checkpoint,
                         seed=cfg.seed, device=cfg.device, experiment=self.experiment, umap=False, progress=False,
                         parent_run_id=self.parent_id, **vars(group_of(cfg, MemoryOptions)), min_genes=cfg.min_genes,
                         max_seq_len=cfg.max_seq_len, deadline=cfg.deadline, reading=cfg.reading, **fields)

    def _tags(self, cell: MatrixCell) -> dict[str, str]:
        return {BENCHMARK_TAG: self.fingerprint, CELL_TAG: cell.identity, WORKER_TAG: worker_id()}

    def _tune(self, cell: MatrixCell) -> TuneResult:
        """The study of ``cell``'s strategy on ``cell``'s split."""
        name = f"benchmark-{self.fingerprint}/{cell.key}/{SETUP_PLACEHOLDER}"  # another setup (data content), another study
        started = time.perf_counter()
        try:
            timeout = self.budget.share(cell.method.relative_cost, self.cost_left)
            if timeout is not None:
                log.info("Study of %s: up to %.0f s of the %.0f s left in the time budget.", cell.key, timeout,
                         self.budget.left())
            return tune(self._job(cell, TuneJob, hparams=cell.method.epoch_budget(self.cfg.epochs),
                                  n_trials=self.cfg.n_trials, storage=self.cfg.storage, study_name=name,
                                  run_tags={BENCHMARK_TAG: self.fingerprint}, timeout=timeout))
        finally:
            self.tuning_sec += time.perf_counter() - started

    def _adopt(self, cell: MatrixCell, result: TuneResult) -> dict[str, float]:
        """Make a study's best trial the result of ``cell`` (it was tuned on the cell's own split)."""
        ended_by = "its share of the time budget" if result.ended_by == "timeout" else result.ended_by
        for key, value in {**self._tags(cell), TRIALS_ENDED_BY_TAG: ended_by}.items():
            if key != WORKER_TAG:
                MlflowClient().set_tag(result.best_run_id, key, value)
        return result.metrics


def cell_finished(experiment_id: str, fingerprint: str, identity: str) -> bool:
    """Whether one cell has a finished run (a search that stays fast however big the matrix)."""
    return bool(search_all_runs([experiment_id], f"tags.`{BENCHMARK_TAG}` = '{fingerprint}' and "
                                                 f"tags.`{CELL_TAG}` = '{identity}' and attributes.status = 'FINISHED'"))


def finished_runs(experiment_id: str, fingerprint: str) -> dict[str, Run]:
    """``{cell identity: run}`` of the benchmark's finished cells (the newest run where a cell has two)."""
    runs = search_all_runs([experiment_id], f"tags.`{BENCHMARK_TAG}` = '{fingerprint}' and attributes.status = 'FINISHED'")
    return {r.data.tags[CELL_TAG]: r for r in sorted(runs, key=lambda r: r.info.start_time) if CELL_TAG in r.data.tags}


def close_leftover_runs(experiment_id: str, fingerprint: str, identity: str) -> list[Run]:
    """End the RUNNING runs of a cell this worker has just claimed: their worker died (on any
    host), which released its claim, so they will never finish."""
    client = MlflowClient()
    leftovers = search_all_runs([experiment_id], f"tags.`{BENCHMARK_TAG}` = '{fingerprint}' and "
                                                 f"tags.`{CELL_TAG}` = '{identity}' and attributes.status = 'RUNNING'")
    for run in leftovers:
        client.set_tag(run.info.run_id, INTERRUPTED_TAG, "true")
        client.set_tag(run.info.run_id, CLOSED_BY_TAG, f"{worker_id()}: the claim of its worker on the cell ended with it")
        client.set_terminated(run.info.run_id, "FAILED")
        log.warning("Cell %s: run %s of worker %s never finished (the worker died); it runs again here.", identity,
                    run.info.run_id, run.data.tags.get(WORKER_TAG, "unknown"))
    return leftovers


def close_interrupted(experiment_id: str, fingerprint: str) -> None:
    """End the cell runs a killed benchmark process left RUNNING (their cells run again)."""
    for run in close_orphaned_runs(experiment_id, f"tags.`{BENCHMARK_TAG}` = '{fingerprint}'"):
        log.warning("Cell %s was interrupted (run %s); it runs again.", run.data.tags.get(CELL_TAG), run.info.run_id)

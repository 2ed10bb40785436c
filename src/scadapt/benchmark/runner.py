"""``benchmark``: the job's start and end around the matrix. The start checks every dataset against
the backbone, plans the cells, finds or creates the parent run and says the plan; the cells run
through :mod:`.scheduler` (which claims them) and :mod:`.cells` (which runs them); the end
aggregates, draws, reports and promotes (:mod:`.answers`).

Every cell's result is one finished MLflow run tagged ``scadapt.benchmark=<fingerprint>`` and
``scadapt.cell=<identity>``; a rerun with the same settings finds those runs and only does what is
missing. All runs of a benchmark live in one experiment, nested under the benchmark's parent run,
which ends up holding the tables, figures and report. Several workers started with the same
settings split the matrix, and each waits for the others' cells, then writes the tables, figures
and report (one worker at a time). On one machine, ``workers`` starts such helper processes
itself (:mod:`.local_workers`).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import pandas as pd
from anndata import AnnData
from mlflow import MlflowClient

from scadapt.artifacts.checkpoints import local_checkpoint
from scadapt.backbone.checkpoint import ARGS_FILE, checkpoint_digest
from scadapt.backbone.config import BackboneConfig
from scadapt.benchmark.answers import champion_per_class, champions, first_answer, log_outputs, promote_all
from scadapt.benchmark.budget import TimeBudget
from scadapt.benchmark.cells import CellRunner, close_interrupted, finished_runs
from scadapt.benchmark.config import BenchmarkConfig
from scadapt.benchmark.figures import draw_all
from scadapt.benchmark.local_workers import TIMING_COLUMNS, LocalWorkers, merge_timing, plan_workers, worker_share
from scadapt.benchmark.matrix import MatrixCell, plan_matrix
from scadapt.benchmark.plan import DataProbe, JobPlan, make_plan, refuse_small_budget
from scadapt.benchmark.report import write_report
from scadapt.benchmark.results import BenchmarkTables, results_table, summarise
from scadapt.benchmark.scheduler import Scheduler
from scadapt.infra.devices import compute_dtype, resolve_device
from scadapt.infra.errors import BudgetSpent
from scadapt.infra.notices import one_job
from scadapt.infra.storage import writable_dir
from scadapt.jobs.demo_backbone import demo_backbone_identity, demo_folder, demo_pretraining
from scadapt.jobs.preflight import GeneCoverage, backbone_shape, backbone_vocabulary, check_coverage, pretraining_size
from scadapt.jobs.study_storage import coordinator
from scadapt.registry import PromotionPolicy, PromotionResult
from scadapt.tokenization import GeneVocab
from scadapt.tracking import shared_run
from scadapt.tracking.contract import BENCHMARK_RUN_TAG, BENCHMARK_TAG, ENTRY_POINT_TAG, PLAN_ARTIFACT, REPORT_ARTIFACT
from scadapt.tracking.runs import resumed_run

log = logging.getLogger(__name__)

CUT_SHORT_WARNING = "The time budget cut short"


@dataclass
class BenchmarkResult:
    fingerprint: str
    parent_run_id: str
    tables: BenchmarkTables
    promotions: dict[str, PromotionResult]
    output_dir: Path
    timing: pd.DataFrame  # this call's seconds per dataset and strategy that had work: wall, in studies,
    # and training the fits of the cells outside the studies
    figures: list[Path] = field(default_factory=list)
    coverage: dict[str, GeneCoverage] = field(default_factory=dict)  # per dataset, when a strategy uses the backbone
    warnings: list[str] = field(default_factory=list)  # low gene coverage, champions kept or not promoted
    cut_short: dict[str, str] = field(default_factory=dict)  # cell key -> why the time budget left it unrun

    @property
    def cells_run(self) -> int:
        """Cells run by this call (the rest were found finished)."""
        return int(self.timing["cells_run"].sum())

    def closing_text(self) -> str:
        """What ``scadapt benchmark`` prints at the end: the ranking, the champions, the report."""
        ranking = self.tables.ranking
        shown = ranking[ranking["regime"] == "full"] if (ranking["regime"] == "full").any() else ranking
        lines = [shown.drop(columns=["regime", "label_fraction"]).to_string(index=False, float_format=lambda v: f"{v:.3f}")]
        lines += [f"{dataset}: champion {champion['strategy']} ({champion['model']}, run {champion['run_id']})"
                  for dataset, champion in self.tables.champions.items() if champion["model"]]
        if self.cut_short:
            lines.append(f"\nCut short by the time budget ({len(self.cut_short)} cells; run again with the same "
                         "settings to finish them): " + "; ".join(f"{k}: {why}" for k, why in self.cut_short.items()))
        lines.append(f"\n{self.cells_run} cells run now, {len(self.tables.runs) - self.cells_run} found finished. "
                     f"Report: {self.output_dir.resolve() / 'report.md'} (also {REPORT_ARTIFACT}/report.md on MLflow "
                     f"run {self.parent_run_id}).")
        return "\n".join(lines)


def run_benchmark(cfg: BenchmarkConfig) -> BenchmarkResult:
    """Run what is missing of the matrix, then aggregate, draw, report and promote."""
    with one_job():  # its helper processes too: each data warning is said once
        return _run_benchmark(cfg)


def _run_benchmark(cfg: BenchmarkConfig) -> BenchmarkResult:
    started = time.perf_counter()
    if cfg.time_budget is not None and cfg.deadline is None:  # helpers and the pipeline pass theirs on
        cfg = replace(cfg, deadline=TimeBudget.starting_now(cfg.time_budget).deadline)
    job, cells, coverage = _start(cfg)
    experiment_id = MlflowClient().get_run(job.runner.parent_id).info.experiment_id
    done_before = set(finished_runs(experiment_id, job.runner.fingerprint))
    todo = [c for c in cells if c.identity not in done_before]
    n_workers, threads = plan_workers(cfg.workers, cfg.device, cfg.storage, len(todo))
    helpers = None
    try:
        if todo:
            job.plan = _plan(job, todo, n_workers, threads)
        helpers = LocalWorkers(cfg, job.runner.parent_id, n_workers - 1, threads) if n_workers > 1 else None
        with worker_share(n_workers, threads) if helpers else nullcontext():
            timing = _fill_matrix(job, cells, experiment_id)
        if helpers:
            timing, helpers = merge_timing(timing, helpers.finish()), None
        with job.runner.board.hold(f"benchmark-report:{job.runner.fingerprint}"):  # one worker at a time
            result = _finish(job, cells, experiment_id, timing, coverage, n_workers, started)
    except BaseException as error:
        if helpers:
            helpers.stop()
        MlflowClient().set_terminated(job.runner.parent_id,
                                      "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    log.info("Benchmark report: %s/report.md on MLflow run %s (written to %s).", REPORT_ARTIFACT,
             job.runner.parent_id, result.output_dir / "report.md")
    return result


def _finish(job: _Job, cells: list[MatrixCell], experiment_id: str, timing: pd.DataFrame,
            coverage: dict[str, GeneCoverage], n_workers: int, started: float) -> BenchmarkResult:
    """The matrix is complete: tables, promotions, figures, the report and the parent run's outputs."""
    cfg, runner = job.cfg, job.runner
    done = finished_runs(experiment_id, runner.fingerprint)
    cut_short = {c.key: job.cut_short.get(c.key, "the time budget was spent") for c in cells if c.identity not in done}
    if len(cut_short) == len(cells):
        raise BudgetSpent(f"The time budget of {cfg.time_budget:g} min ended before any strategy finished "
                          f"({next(iter(cut_short.values()))}). Give it more minutes; a rerun with the same "
                          "settings continues where this one stopped.")
    if cut_short:
        job.warnings.append(f"{CUT_SHORT_WARNING} {len(cut_short)} of {len(cells)} cells: "
                            f"{', '.join(cut_short)}. Run again with the same settings to finish them.")
    table = results_table((cell, done[cell.identity]) for cell in cells if cell.identity in done)
    promotions = promote_all(cfg, dict.fromkeys(c.dataset for c in cells), runner.board, job.warnings,
                             job.no_champion) if cfg.promote else {}
    tables = summarise(table, PromotionPolicy.load(cfg.policy))
    tables.champions = champions(tables, promotions)
    tables.per_class = champion_per_class(tables)
    output_dir = Path(cfg.output_dir)
    figures = draw_all(tables, output_dir / "figures")
    seconds = time.perf_counter() - started
    write_report(output_dir, tables, figures, promotions, cfg, runner.fingerprint, runner.checkpoint, timing,
                 seconds, job.no_champion, coverage, workers=n_workers, cut_short=cut_short,
                 thin_classes={f"{c.dataset}/{c.split}": c.thin_classes for c in cells})
    log_outputs(runner, output_dir, tables, timing, seconds)
    warnings = [c.warning() for c in coverage.values() if c.low] + job.warnings
    return BenchmarkResult(runner.fingerprint, runner.parent_id, tables, promotions, output_dir, timing, figures,
                           coverage, warnings, cut_short)


def run_cells(cfg: BenchmarkConfig, parent_run_id: str) -> pd.DataFrame:
    """A helper worker's part: run the cells it can claim, under the benchmark's parent run
    ``parent_run_id``, until the matrix is complete; no report. Returns its timing (as
    :attr:`BenchmarkResult.timing`)."""
    job, cells, _ = _start(cfg, parent_run_id)
    return _fill_matrix(job, cells, MlflowClient().get_run(job.runner.parent_id).info.experiment_id)


def _start(cfg: BenchmarkConfig, parent_run_id: str | None = None
           ) -> tuple[_Job, list[MatrixCell], dict[str, GeneCoverage]]:
    """Check the data against the backbone, plan the matrix, find or create the parent run (a
    helper is given it: under ``mlflow run`` it is the launcher's, in the launcher's experiment)."""
    # under `mlflow run` the launcher's run becomes the parent run, and nothing before (pretraining) may take it
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    writable_dir(cfg.output_dir, "the benchmark report", "--output-dir")
    pretraining = demo_pretraining(cfg.pretrain_epochs, cfg.seed, cfg.device, cfg.pretrain_data,
                                   cfg.reading.layer, cfg.reading.gene_column)
    coverage: dict[str, GeneCoverage] = {}
    probes: dict[str, DataProbe] = {}  # the main worker's, for the plan
    given = str(local_checkpoint(cfg.checkpoint)) if cfg.checkpoint else None  # a runs:/ URI is fetched once
    # every dataset is checked against the backbone's genes before any work
    vocabulary = backbone_vocabulary(given, pretraining) if cfg.needs_backbone else None
    shape = backbone_shape(given, pretraining, len(vocabulary.vocab)) if vocabulary else None

    def inspect(adata: AnnData, name: str) -> None:
        if vocabulary is not None:
            coverage.setdefault(name, check_coverage(adata, name, vocabulary, cfg.min_genes))
        if parent_run_id is None:
            probes.setdefault(name, DataProbe.of(adata, vocabulary.vocab if vocabulary else None,
                                                 cfg.max_seq_len or (shape.max_seq_len if shape else 0), cfg.seed))

    cells = plan_matrix(cfg, inspect=inspect)
    board = coordinator(cfg.storage)
    # the demo backbone is pretrained (if it must be) only when the first backbone cell runs, after
    # the cheap strategies have answered; the fingerprint knows it by its pretraining job already
    checkpoint = given or (str(demo_folder(pretraining)) if cfg.needs_backbone else None)
    backbone = (checkpoint_digest(given) if given else demo_backbone_identity(pretraining)) \
        if cfg.needs_backbone else None
    fingerprint = cfg.fingerprint(backbone, str(compute_dtype(resolve_device(cfg.device))))
    if parent_run_id is not None:
        parent_id = parent_run_id
    else:
        with board.hold(f"benchmark-run:{fingerprint}"):
            parent_id, _ = shared_run(cfg.experiment, {BENCHMARK_TAG: fingerprint, BENCHMARK_RUN_TAG: "true"},
                                      f"benchmark {cfg.name}", {ENTRY_POINT_TAG: "benchmark"}, launcher=launcher)
    client = MlflowClient()
    experiment = client.get_experiment(client.get_run(parent_id).info.experiment_id).name
    runner = CellRunner(cfg, checkpoint, fingerprint, parent_id, experiment, board, pretraining,
                        backbone_ready=bool(given) or not cfg.needs_backbone)
    return _Job(cfg, runner, helper=parent_run_id is not None, probes=probes,
                vocabulary=vocabulary.vocab if vocabulary else None, backbone_shape=shape), cells, coverage


def _plan(job: _Job, todo: list[MatrixCell], workers: int, threads: int) -> JobPlan:
    """Say the plan of the cells still to run (with a timed step per family on the user's cells),
    log it on the parent run, and refuse a time budget below the smallest that fits."""
    cfg, runner, pretraining = job.cfg, job.runner, None
    if job.vocabulary is not None and not runner.backbone_ready and \
            not (demo_folder(runner.pretraining) / ARGS_FILE).is_file():
        pretraining = (runner.pretraining.backbone_config(len(job.vocabulary)),
                       *pretraining_size(runner.pretraining, job.vocabulary))
    plan = make_plan(cfg, todo, job.probes, job.backbone_shape, pretraining, workers, threads,
                     str(resolve_device(cfg.device)))
    log.info("%s", plan.text())
    with resumed_run(runner.parent_id):
        mlflow.log_text(plan.shown().to_csv(index=False), PLAN_ARTIFACT)
    if cfg.time_budget is not None and cfg.deadline is not None:
        refuse_small_budget(plan, cfg.time_budget, elapsed=time.time() - (cfg.deadline - 60 * cfg.time_budget))
    return plan


def _fill_matrix(job: _Job, cells: list[MatrixCell], experiment_id: str) -> pd.DataFrame:
    """Run the unfinished cells this worker can claim, with a progress bar over the whole matrix,
    until every cell is finished (here or on another worker); return this worker's wall time
    per dataset and strategy (one row per group it ran cells of)."""
    runner = job.runner
    close_interrupted(experiment_id, runner.fingerprint)
    schedule = Scheduler(cells, runner, experiment_id, job.cut_short)
    log.info("Benchmark %s (%s): %d cells, %d already finished (MLflow experiment %r, parent run %s).\n%s",
             job.cfg.name, runner.fingerprint, len(cells), len(schedule.identities & schedule.finished),
             runner.experiment, runner.parent_id, schedule.grid())
    timing: dict[tuple[str, str], dict] = {}
    for cell, group in schedule.claims():
        started, tuning_before = time.perf_counter(), runner.tuning_sec
        try:
            if cell.method.needs_backbone:
                if not job.answered and not job.helper:
                    job.answered = True
                    first_answer(runner, cells, experiment_id)
                runner.ensure_backbone()
                started = time.perf_counter()  # (pretraining is not the cell's time)
            runner.cost_left = schedule.cost_left()
            metrics, tuned = runner.run(cell, group)
        except BudgetSpent as spent:
            log.warning("%s: %s", cell.key, spent)
            schedule.cut(cell, str(spent))
            continue
        schedule.done(cell, f"test macro-F1 {metrics['test_macro_f1']:.3f}")
        row = timing.setdefault((cell.dataset, cell.strategy), dict.fromkeys(TIMING_COLUMNS, 0))
        row.update(dataset=cell.dataset, strategy=cell.strategy, cells_run=row["cells_run"] + 1,
                   wall_sec=row["wall_sec"] + time.perf_counter() - started,
                   tuning_sec=row["tuning_sec"] + runner.tuning_sec - tuning_before,  # a study's fits count as tuning
                   cell_fit_sec=row["cell_fit_sec"] + (0.0 if tuned else metrics["runtime_sec"]))
        if job.plan is not None:
            job.plan.finished(cell.identity, time.perf_counter() - started)
            log.info(job.plan.progress(schedule.finished, runner.backbone_ready, runner.budget.left()))
    log.info("Matrix complete.\n%s", schedule.grid())
    return pd.DataFrame(list(timing.values()), columns=TIMING_COLUMNS)


@dataclass
class _Job:
    """One call of the benchmark: its cells' runner, and what the job says at its start and end."""

    cfg: BenchmarkConfig
    runner: CellRunner
    helper: bool = False  # a helper worker: runs cells only
    answered: bool = False  # the first answer (the strategies without a backbone) was given
    cut_short: dict[str, str] = field(default_factory=dict)  # cell key -> why the time budget left it unrun
    no_champion: dict[str, str] = field(default_factory=dict)  # dataset -> why promotion failed
    warnings: list[str] = field(default_factory=list)  # promotion messages, for the caller
    plan: JobPlan | None = None  # the main worker's estimate of the work, refreshed as cells finish
    probes: dict[str, DataProbe] = field(default_factory=dict)  # the main worker's look at each dataset, for the plan
    vocabulary: GeneVocab | None = None  # the backbone's (None when no strategy uses one)
    backbone_shape: BackboneConfig | None = None

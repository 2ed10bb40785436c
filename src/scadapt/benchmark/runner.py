"""``benchmark``: run the matrix (resuming), aggregate it, draw it, report it, promote champions.

Every cell's result is one finished MLflow run tagged ``scadapt.benchmark=<fingerprint>`` and
``scadapt.cell=<dataset>/<split>/<strategy>``; a rerun with the same settings finds those runs
and only does what is missing. All runs of a benchmark live in one experiment, nested under the
benchmark's parent run, which ends up holding the tables, figures and report.

Several workers (on one machine or many, sharing the tracking store and the study storage)
started with the same settings split the matrix: each cell is claimed through a lock in the
study storage before it runs (a dead worker's claim ends with it and the cell runs elsewhere), a
study is run by the worker that claimed its cell while the others take other cells, and each
worker waits for the others' cells, then writes the tables, figures and report (one worker at a
time). On one machine, ``workers`` starts such helper processes itself (:mod:`.local_workers`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import pandas as pd
from anndata import AnnData
from mlflow import MlflowClient
from mlflow.entities import Run
from tqdm.auto import tqdm

from scadapt.artifacts.checkpoints import local_checkpoint
from scadapt.backbone.checkpoint import ARGS_FILE, checkpoint_digest
from scadapt.backbone.config import BackboneConfig
from scadapt.benchmark.budget import TimeBudget
from scadapt.benchmark.config import BenchmarkConfig
from scadapt.benchmark.figures import draw_all
from scadapt.benchmark.local_workers import (
    TIMING_COLUMNS,
    LocalWorkers,
    every_core,
    merge_timing,
    plan_workers,
    worker_share,
)
from scadapt.benchmark.matrix import MatrixCell, by_dataset_and_strategy, plan_matrix, progress_grid
from scadapt.benchmark.plan import DataProbe, JobPlan, make_plan, refuse_small_budget
from scadapt.benchmark.report import write_report
from scadapt.benchmark.results import BenchmarkTables, results_table, summarise
from scadapt.infra.coordination import Coordinator
from scadapt.infra.devices import compute_dtype, resolve_device
from scadapt.infra.errors import BudgetSpent, ScadaptError
from scadapt.infra.notices import one_job
from scadapt.infra.storage import writable_dir
from scadapt.jobs import TuneJob, TuneResult, tune
from scadapt.jobs.config import PretrainConfig, TrainJob
from scadapt.jobs.preflight import (
    GeneCoverage,
    backbone_shape,
    backbone_vocabulary,
    check_coverage,
    pretraining_size,
)
from scadapt.jobs.pretrain import demo_backbone_identity, demo_folder, demo_pretraining, ensure_demo_backbone
from scadapt.jobs.study_setup import SETUP_PLACEHOLDER
from scadapt.jobs.study_storage import coordinator
from scadapt.jobs.train import train
from scadapt.registry import DowngradeRefused, PromotionPolicy, PromotionResult, has_champion, promote
from scadapt.strategies import epoch_budget, get_strategy
from scadapt.tokenization import GeneVocab
from scadapt.tracking import log_params, shared_run
from scadapt.tracking.contract import (
    BENCHMARK_RUN_TAG,
    BENCHMARK_TAG,
    CELL_TAG,
    CLOSED_BY_TAG,
    ENTRY_POINT_TAG,
    FIRST_ANSWER_ARTIFACT,
    INTERRUPTED_TAG,
    PER_CLASS_TEST_TABLE,
    PLAN_ARTIFACT,
    REPORT_ARTIFACT,
    TRIALS_ENDED_BY_TAG,
    TUNED_BY_TAG,
    WORKER_TAG,
)
from scadapt.tracking.runs import close_orphaned_runs, quiet_artifact_downloads, resumed_run, search_all_runs
from scadapt.tracking.workers import worker_id

log = logging.getLogger(__name__)

CLAIM_POLL_SEC = 5.0  # how often a worker with nothing to claim looks again
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
    ctx, cells, coverage = _start(cfg)
    client = MlflowClient()
    experiment_id = client.get_run(ctx.parent_id).info.experiment_id
    done_before = set(finished_runs(experiment_id, ctx.fingerprint))
    todo = [c for c in cells if c.identity not in done_before]
    n_workers, threads = plan_workers(cfg.workers, cfg.device, cfg.storage, len(todo))
    helpers = None
    try:
        if todo:
            ctx.plan = _plan(ctx, todo, n_workers, threads)
        helpers = LocalWorkers(cfg, ctx.parent_id, n_workers - 1, threads) if n_workers > 1 else None
        with worker_share(n_workers, threads) if helpers else nullcontext():
            timing = _fill_matrix(ctx, cells, experiment_id)
        if helpers:
            timing = merge_timing(timing, helpers.finish())
            helpers = None
        with ctx.board.hold(f"benchmark-report:{ctx.fingerprint}"):  # promotions and the report, one worker at a time
            done = finished_runs(experiment_id, ctx.fingerprint)
            cut_short = {c.key: ctx.cut_short.get(c.key, "the time budget was spent") for c in cells
                         if c.identity not in done}
            if len(cut_short) == len(cells):
                raise BudgetSpent(f"The time budget of {cfg.time_budget:g} min ended before any strategy finished "
                                  f"({next(iter(cut_short.values()))}). Give it more minutes; a rerun with the same "
                                  "settings continues where this one stopped.")
            if cut_short:
                ctx.warnings.append(f"{CUT_SHORT_WARNING} {len(cut_short)} of {len(cells)} cells: "
                                    f"{', '.join(cut_short)}. Run again with the same settings to finish them.")
            table = results_table((cell, done[cell.identity]) for cell in cells if cell.identity in done)
            promotions = _promote_all(ctx, dict.fromkeys(c.dataset for c in cells)) if cfg.promote else {}
            tables = summarise(table, PromotionPolicy.load(cfg.policy))
            tables.champions = _champions(tables, promotions)
            tables.per_class = champion_per_class(tables)
            output_dir = Path(cfg.output_dir)
            figures = draw_all(tables, output_dir / "figures")
            seconds = time.perf_counter() - started
            write_report(output_dir, tables, figures, promotions, cfg, ctx.fingerprint, ctx.checkpoint, timing,
                         seconds, ctx.no_champion, coverage, workers=n_workers, cut_short=cut_short,
                         thin_classes={f"{c.dataset}/{c.split}": c.thin_classes for c in cells})
            _log_outputs(ctx, output_dir, tables, timing, seconds)
    except BaseException as error:
        if helpers:
            helpers.stop()
        client.set_terminated(ctx.parent_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    log.info("Benchmark report: %s/report.md on MLflow run %s (written to %s).", REPORT_ARTIFACT, ctx.parent_id,
             output_dir / "report.md")
    warnings = [c.warning() for c in coverage.values() if c.low] + ctx.warnings
    return BenchmarkResult(ctx.fingerprint, ctx.parent_id, tables, promotions, output_dir, timing, figures, coverage,
                           warnings, cut_short)


def run_cells(cfg: BenchmarkConfig, parent_run_id: str) -> pd.DataFrame:
    """A helper worker's part: run the cells it can claim, under the benchmark's parent run
    ``parent_run_id``, until the matrix is complete; no report. Returns its timing (as
    :attr:`BenchmarkResult.timing`)."""
    ctx, cells, _ = _start(cfg, parent_run_id)
    return _fill_matrix(ctx, cells, MlflowClient().get_run(ctx.parent_id).info.experiment_id)


def _start(cfg: BenchmarkConfig, parent_run_id: str | None = None
           ) -> tuple[_Context, list[MatrixCell], dict[str, GeneCoverage]]:
    """Check the data against the backbone, plan the matrix, find or create the parent run (a
    helper is given it: under ``mlflow run`` it is the launcher's, in the launcher's experiment)."""
    # under `mlflow run` the launcher's run becomes the parent run, and nothing before (pretraining) may take it
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    writable_dir(cfg.output_dir, "the benchmark report", "--output-dir")
    pretraining = demo_pretraining(cfg.pretrain_epochs, cfg.seed, cfg.device, cfg.pretrain_data,
                                   cfg.layer, cfg.gene_column)
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
    return _Context(cfg, checkpoint, fingerprint, parent_id, experiment, board, pretraining,
                    helper=parent_run_id is not None, backbone_ready=bool(given) or not cfg.needs_backbone,
                    probes=probes, vocabulary=vocabulary.vocab if vocabulary else None, backbone_shape=shape), \
        cells, coverage


def _plan(ctx: _Context, todo: list[MatrixCell], workers: int, threads: int) -> JobPlan:
    """Say the plan of the cells still to run (with a timed step per family on the user's cells),
    log it on the parent run, and refuse a time budget below the smallest that fits."""
    cfg = ctx.cfg
    pretraining = None
    if ctx.vocabulary is not None and not ctx.backbone_ready and not (demo_folder(ctx.pretraining) / ARGS_FILE).is_file():
        pretraining = (ctx.pretraining.backbone_config(len(ctx.vocabulary)),
                       *pretraining_size(ctx.pretraining, ctx.vocabulary))
    plan = make_plan(cfg, todo, ctx.probes, ctx.backbone_shape, pretraining, workers, threads,
                     str(resolve_device(cfg.device)))
    log.info("%s", plan.text())
    with resumed_run(ctx.parent_id):
        mlflow.log_text(plan.shown().to_csv(index=False), PLAN_ARTIFACT)
    if cfg.time_budget is not None and cfg.deadline is not None:
        refuse_small_budget(plan, cfg.time_budget, elapsed=time.time() - (cfg.deadline - 60 * cfg.time_budget))
    return plan


def _fill_matrix(ctx: _Context, cells: list[MatrixCell], experiment_id: str) -> pd.DataFrame:
    """Run the unfinished cells this worker can claim, with a progress bar over the whole matrix,
    until every cell is finished (here or on another worker); return this worker's wall time
    per dataset and strategy (one row per group it ran cells of)."""
    _close_interrupted(experiment_id, ctx.fingerprint)
    finished = set(finished_runs(experiment_id, ctx.fingerprint))
    already = len({c.identity for c in cells} & finished)
    log.info("Benchmark %s (%s): %d cells, %d already finished (MLflow experiment %r, parent run %s).\n%s",
             ctx.cfg.name, ctx.fingerprint, len(cells), already, ctx.experiment, ctx.parent_id,
             progress_grid(cells, finished).to_string())
    timing: dict[tuple[str, str], dict] = {}
    said_waiting = False
    groups = by_dataset_and_strategy(cells)
    with tqdm(total=len(cells), initial=already, desc="benchmark", unit="cell", disable=not ctx.cfg.progress) as bar:
        while True:
            ran_one = False
            for group in groups:
                for cell in group:
                    if cell.identity in finished or cell.key in ctx.cut_short:
                        continue
                    if not ctx.budget.spent() and not (_settings_ready(ctx, cell, group, finished)
                                                       and _cheap_ones_done(ctx, cell, cells, finished)):
                        continue  # (once the budget is spent, every cell no worker runs is cut short)
                    with ctx.board.hold(f"cell:{ctx.fingerprint}/{cell.identity}", wait=False) as claimed:
                        if not claimed:
                            continue
                        if cell_finished(experiment_id, ctx.fingerprint, cell.identity):  # by another worker since the last look
                            finished.add(cell.identity)
                            bar.update(1)
                            continue
                        if (why := ctx.unrunnable(cell, group)) is not None:
                            ctx.cut_short[cell.key] = why
                            continue
                        close_leftover_runs(experiment_id, ctx.fingerprint, cell.identity)
                        ran_one = True
                        started, tuning_before = time.perf_counter(), ctx.tuning_sec
                        try:
                            if get_strategy(cell.strategy).needs_backbone:
                                ctx.answer_early(cells, experiment_id)
                                ctx.ensure_backbone()
                                started = time.perf_counter()  # (pretraining is not the cell's time)
                            ctx.cost_left = sum(get_strategy(g[0].strategy).relative_cost for g in groups
                                                if g[0].identity not in finished)
                            metrics, tuned = _run_cell(ctx, cell, group)
                        except BudgetSpent as spent:
                            log.warning("%s: %s", cell.key, spent)
                            ctx.cut_short[cell.key] = str(spent)
                            continue
                    finished.add(cell.identity)
                    bar.update(1)
                    row = timing.setdefault((cell.dataset, cell.strategy), {
                        "dataset": cell.dataset, "strategy": cell.strategy, "cells_run": 0, "wall_sec": 0.0,
                        "tuning_sec": 0.0, "cell_fit_sec": 0.0})
                    row["cells_run"] += 1
                    row["wall_sec"] += time.perf_counter() - started
                    row["tuning_sec"] += ctx.tuning_sec - tuning_before
                    row["cell_fit_sec"] += 0.0 if tuned else metrics["runtime_sec"]  # a study's fits count as tuning
                    bar.set_postfix_str(f"{cell.key}: test macro-F1 {metrics['test_macro_f1']:.3f}")
                    if ctx.plan is not None:
                        ctx.plan.finished(cell.identity, time.perf_counter() - started)
                        log.info(ctx.plan.progress(finished, ctx.backbone_ready, ctx.budget.left()))
            if ran_one:  # look again at once; what other workers finished is found when claiming it
                continue
            # nothing was left to claim here: see what the other workers finished (one search of the whole
            # experiment, which grows with the matrix, so not after every cell)
            now = set(finished_runs(experiment_id, ctx.fingerprint)) | finished
            bar.update(len({c.identity for c in cells} & (now - finished)))
            finished = now
            left = [c for c in cells if c.identity not in finished and c.key not in ctx.cut_short]
            if not left:
                break
            # the rest are claimed by other workers: wait for them (a dead one's claim ends with it)
            if not said_waiting:
                log.info("%d cells run on other workers; waiting for them.", len(left))
                said_waiting = True
            time.sleep(CLAIM_POLL_SEC)
    log.info("Matrix complete.\n%s", progress_grid(cells, finished).to_string())
    return pd.DataFrame(list(timing.values()), columns=TIMING_COLUMNS)


def cell_finished(experiment_id: str, fingerprint: str, cell_key: str) -> bool:
    """Whether one cell has a finished run (a search that stays fast however big the matrix)."""
    return bool(search_all_runs([experiment_id], f"tags.`{BENCHMARK_TAG}` = '{fingerprint}' and "
                                                 f"tags.`{CELL_TAG}` = '{cell_key}' and attributes.status = 'FINISHED'"))


def finished_runs(experiment_id: str, fingerprint: str) -> dict[str, Run]:
    """``{cell identity: run}`` of the benchmark's finished cells (the newest run where a cell has two)."""
    runs = search_all_runs([experiment_id], f"tags.`{BENCHMARK_TAG}` = '{fingerprint}' and attributes.status = 'FINISHED'")
    return {r.data.tags[CELL_TAG]: r for r in sorted(runs, key=lambda r: r.info.start_time) if CELL_TAG in r.data.tags}


def _promote_all(ctx: _Context, datasets) -> dict[str, PromotionResult]:
    """Promote each dataset's champion among all its candidates (this benchmark's and any other
    experiment's). One whose candidates all fail the quality gates gets none (said in the log and
    the report), and the others still get theirs; a champion better than every cell stays."""
    promotions = {}
    for dataset in datasets:
        try:
            promotions[dataset] = promote(dataset, ctx.cfg.policy, force=ctx.cfg.force, lock=ctx.board.hold)
        except DowngradeRefused as refused:
            ctx.warnings.append(str(refused))
            log.warning("%s", refused)
            promotions[dataset] = refused.kept
        except ScadaptError as error:  # e.g. no runner passes the quality gates: the results stay
            ctx.warnings.append(f"No champion for {dataset}: {error}")
            log.warning(ctx.warnings[-1])
            ctx.no_champion[dataset] = str(error)
    return promotions


def _champions(tables: BenchmarkTables, promotions: dict[str, PromotionResult]) -> dict[str, dict[str, str]]:
    """Each dataset's champion: the promoted run, or without promotion the top full-label strategy."""
    champions = {}
    for dataset in dict.fromkeys(tables.runs["dataset"]):
        if dataset in promotions:
            promotion = promotions[dataset]
            champions[dataset] = {"strategy": promotion.strategy, "run_id": promotion.run_id,
                                  "model": f"{promotion.model_name}/{promotion.version}"}
        else:
            ranking = tables.ranking[tables.ranking["dataset"] == dataset]
            top = ranking[ranking["regime"] == "full"] if (ranking["regime"] == "full").any() else ranking
            champions[dataset] = {"strategy": str(top.iloc[0]["strategy"]), "run_id": "", "model": ""}
    return champions


def champion_per_class(tables: BenchmarkTables) -> pd.DataFrame:
    """Per-class test F1 (from each run's ``tables/per_class_test.csv``) of every cell of each
    dataset's champion strategy."""
    frames = []
    with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
        for dataset, champion in tables.champions.items():
            runs = tables.runs[(tables.runs["dataset"] == dataset) & (tables.runs["strategy"] == champion["strategy"])]
            for row in runs.itertuples():
                path = mlflow.artifacts.download_artifacts(run_id=row.run_id, artifact_path=PER_CLASS_TEST_TABLE,
                                                           dst_path=str(Path(tmp) / row.run_id))
                per_class = pd.read_csv(path)
                if "trained" not in per_class:  # runs logged before the column existed
                    per_class["trained"] = True
                frames.append(per_class[["class", "f1", "support", "trained"]].assign(
                    dataset=dataset, strategy=row.strategy, setting=row.setting, replicate=row.replicate))
    columns = ["dataset", "strategy", "setting", "replicate", "class", "f1", "support", "trained"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


@dataclass
class _Context:
    cfg: BenchmarkConfig
    checkpoint: str | None
    fingerprint: str
    parent_id: str
    experiment: str
    board: Coordinator  # the workers' locks
    pretraining: PretrainConfig  # the demo backbone's pretraining job (used when no checkpoint is given)
    helper: bool = False  # a helper worker: runs cells only
    backbone_ready: bool = False  # the backbone's folder exists (pretrained, given or fetched)
    answered: bool = False  # the first answer (the strategies without a backbone) was given
    cost_left: float = 0.0  # relative cost of the studies not yet finished, this one included
    cut_short: dict[str, str] = field(default_factory=dict)  # cell key -> why the time budget left it unrun
    no_backbone: str = ""  # why the backbone is not there (the time budget stopped its pretraining)
    tuning_sec: float = 0.0  # spent in studies by this call
    studies: dict[str, TuneResult] = field(default_factory=dict)  # by the key of the cell tuned on
    no_champion: dict[str, str] = field(default_factory=dict)  # dataset -> why promotion failed
    warnings: list[str] = field(default_factory=list)  # promotion messages, for the caller
    plan: JobPlan | None = None  # the main worker's estimate of the work, refreshed as cells finish
    probes: dict[str, DataProbe] = field(default_factory=dict)  # the main worker's look at each dataset, for the plan
    vocabulary: GeneVocab | None = None  # the backbone's (None when no strategy uses one)
    backbone_shape: BackboneConfig | None = None

    @property
    def budget(self) -> TimeBudget:
        return TimeBudget(self.cfg.deadline)

    def unrunnable(self, cell: MatrixCell, group: list[MatrixCell]) -> str | None:
        """Why ``cell`` cannot run in this call (None when it can): the time budget is spent, it
        needs the backbone and the budget stopped the backbone's pretraining, or the study whose
        settings it reuses was cut short."""
        if self.budget.spent():
            return "the time budget was spent before it started"
        if get_strategy(cell.strategy).needs_backbone and self.no_backbone:
            return self.no_backbone
        tuned_on = self.cfg.tuned_on(cell, group)
        if tuned_on != cell and tuned_on.key in self.cut_short:
            return f"the study of {tuned_on.key}, whose settings it reuses, was cut short"
        return None

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

    def answer_early(self, cells: list[MatrixCell], experiment_id: str) -> None:
        """Before the first backbone cell: rank the strategies without a backbone that finished,
        say it and log it on the parent run, and promote the best to ``@champion`` where a
        dataset has none yet (a later, better runner replaces it at the end)."""
        if self.answered or self.helper:
            return
        self.answered = True
        done = finished_runs(experiment_id, self.fingerprint)
        quick = [c for c in cells if c.identity in done and not get_strategy(c.strategy).needs_backbone]
        if not quick:
            return
        tables = summarise(results_table((c, done[c.identity]) for c in quick), PromotionPolicy.load(self.cfg.policy))
        shown = tables.ranking.drop(columns=["regime", "label_fraction"], errors="ignore")
        log.info("First answer, from the strategies without a backbone (those with one run next):\n%s",
                 shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        with resumed_run(self.parent_id):
            mlflow.log_text(tables.ranking.to_csv(index=False), FIRST_ANSWER_ARTIFACT)
        if not self.cfg.promote:
            return
        for dataset in dict.fromkeys(c.dataset for c in quick):
            if has_champion(dataset, self.cfg.policy):
                continue
            try:
                promotion = promote(dataset, self.cfg.policy, lock=self.board.hold)
                log.info("Provisional champion of %s: %s (%s version %s); a better runner replaces it at the end.",
                         dataset, promotion.strategy, promotion.model_name, promotion.version)
            except ScadaptError as error:
                log.info("No provisional champion for %s: %s", dataset, error)

    def job(self, cell: MatrixCell, job_class: type[TrainJob] = TrainJob, **fields) -> TrainJob:
        return job_class(data=cell.data, regime=cell.regime, split=cell.split, n_folds=self.cfg.n_folds,
                         label_fractions=self.cfg.label_fractions, strategy=cell.strategy, checkpoint=self.checkpoint,
                         seed=self.cfg.seed, device=self.cfg.device, experiment=self.experiment, umap=False,
                         progress=False, parent_run_id=self.parent_id, **vars(self.cfg.memory_options()),
                         min_genes=self.cfg.min_genes, max_seq_len=self.cfg.max_seq_len,
                         deadline=self.cfg.deadline, **vars(self.cfg.data_options()), **fields)

    def cell_tags(self, cell: MatrixCell) -> dict[str, str]:
        return {BENCHMARK_TAG: self.fingerprint, CELL_TAG: cell.identity, WORKER_TAG: worker_id()}

    def tune(self, cell: MatrixCell) -> TuneResult:
        """The study of ``cell``'s strategy on ``cell``'s split."""
        name = f"benchmark-{self.fingerprint}/{cell.key}/{SETUP_PLACEHOLDER}"  # another setup (data content), another study
        started = time.perf_counter()
        try:
            timeout = self.budget.share(get_strategy(cell.strategy).relative_cost, self.cost_left)
            if timeout is not None:
                log.info("Study of %s: up to %.0f s of the %.0f s left in the time budget.", cell.key, timeout,
                         self.budget.left())
            return tune(self.job(cell, TuneJob, hparams=epoch_budget(cell.strategy, self.cfg.epochs),
                             n_trials=self.cfg.n_trials, storage=self.cfg.storage, study_name=name,
                             run_tags={BENCHMARK_TAG: self.fingerprint}, timeout=timeout))
        finally:
            self.tuning_sec += time.perf_counter() - started

    def study_of(self, cell: MatrixCell) -> TuneResult:
        """The finished study of ``cell`` (run, joined or found finished once per process)."""
        if cell.key not in self.studies:
            self.studies[cell.key] = self.tune(cell)
        return self.studies[cell.key]

    def adopt(self, cell: MatrixCell, result: TuneResult) -> dict[str, float]:
        """Make a study's best trial the result of ``cell`` (it was tuned on the cell's own split)."""
        ended_by = "its share of the time budget" if result.ended_by == "timeout" else result.ended_by
        for key, value in {**self.cell_tags(cell), TRIALS_ENDED_BY_TAG: ended_by}.items():
            if key != WORKER_TAG:
                MlflowClient().set_tag(result.best_run_id, key, value)
        return result.metrics


def _settings_ready(ctx: _Context, cell: MatrixCell, group: list[MatrixCell], finished: set[str]) -> bool:
    """Whether ``cell`` can run now. With ``reuse`` tuning its settings may come from the study on
    another cell of its group (:meth:`BenchmarkConfig.tuned_on`); a study is run by the one worker
    that claimed that cell (so its trials follow from the seed, however many workers there are),
    and the cells that reuse it wait for it."""
    tuned_on = ctx.cfg.tuned_on(cell, group)
    return cell == tuned_on or tuned_on.identity in finished or tuned_on.key in ctx.studies


def _cheap_ones_done(ctx: _Context, cell: MatrixCell, cells: list[MatrixCell], finished: set[str]) -> bool:
    """Whether ``cell`` may run now as far as the order of work goes: a cell that needs the
    backbone waits until every cell of its dataset without one is finished (on any worker), so the
    first answer comes before any backbone work, pretraining included."""
    if not get_strategy(cell.strategy).needs_backbone:
        return True
    return all(c.identity in finished or c.key in ctx.cut_short for c in cells
               if c.dataset == cell.dataset and not get_strategy(c.strategy).needs_backbone)


def _run_cell(ctx: _Context, cell: MatrixCell, group: list[MatrixCell]) -> tuple[dict[str, float], bool]:
    """Run one cell; return its metrics and whether its result is a study's best trial."""
    tuned_on = ctx.cfg.tuned_on(cell, group)
    if ctx.cfg.tuning == "per_fold":
        return ctx.adopt(cell, ctx.tune(cell)), True
    study = ctx.study_of(tuned_on)  # joins the study if another worker is running it
    if cell == tuned_on:
        return ctx.adopt(cell, study), True
    settings = {**epoch_budget(tuned_on.strategy, ctx.cfg.epochs), **study.best_params}
    tags = {**ctx.cell_tags(cell), TUNED_BY_TAG: study.parent_run_id}
    return train(ctx.job(cell, hparams=settings, run_tags=tags)).metrics, False


def close_leftover_runs(experiment_id: str, fingerprint: str, cell_key: str) -> list[Run]:
    """End the RUNNING runs of a cell this worker has just claimed: their worker died (on any
    host), which released its claim, so they will never finish."""
    client = MlflowClient()
    leftovers = search_all_runs([experiment_id], f"tags.`{BENCHMARK_TAG}` = '{fingerprint}' and "
                                                 f"tags.`{CELL_TAG}` = '{cell_key}' and attributes.status = 'RUNNING'")
    for run in leftovers:
        client.set_tag(run.info.run_id, INTERRUPTED_TAG, "true")
        client.set_tag(run.info.run_id, CLOSED_BY_TAG, f"{worker_id()}: the claim of its worker on the cell ended with it")
        client.set_terminated(run.info.run_id, "FAILED")
        log.warning("Cell %s: run %s of worker %s never finished (the worker died); it runs again here.", cell_key,
                    run.info.run_id, run.data.tags.get(WORKER_TAG, "unknown"))
    return leftovers


def _close_interrupted(experiment_id: str, fingerprint: str) -> None:
    """End the cell runs a killed benchmark process left RUNNING (their cells run again)."""
    for run in close_orphaned_runs(experiment_id, f"tags.`{BENCHMARK_TAG}` = '{fingerprint}'"):
        log.warning("Cell %s was interrupted (run %s); it runs again.", run.data.tags.get(CELL_TAG), run.info.run_id)


def _log_outputs(ctx: _Context, output_dir: Path, tables: BenchmarkTables, timing: pd.DataFrame,
                 seconds: float) -> None:
    """Settings, totals and the report folder on the benchmark's parent run."""
    cfg = ctx.cfg
    with resumed_run(ctx.parent_id):
        # the settings behind the fingerprint are fixed for this run; the matrix may grow on a rerun (tags)
        log_params({"n_folds": cfg.n_folds, "tuning": cfg.tuning, "n_trials": cfg.n_trials, "epochs": cfg.epochs,
                    "checkpoint": ctx.checkpoint, "seed": cfg.seed, "fingerprint": ctx.fingerprint,
                    **{f"data.{k}": v for k, v in cfg.data_options().given().items()}})
        mlflow.set_tags({"matrix.datasets": ",".join(cfg.datasets), "matrix.strategies": ",".join(cfg.strategies),
                         "matrix.regimes": ",".join(cfg.regimes), "matrix.folds": str(cfg.folds_run),
                         "matrix.label_fractions": ",".join(map(str, cfg.label_fractions)),
                         **{f"champion.{d}": c["model"] for d, c in tables.champions.items() if c["model"]}})
        by_strategy = timing.groupby("strategy")["wall_sec"].sum()
        mlflow.log_metrics({"benchmark_sec": seconds, "cells": len(tables.runs), "cells_run": timing["cells_run"].sum(),
                            "fit_sec_total": float(tables.runs["runtime_sec"].sum()),
                            **{f"wall_sec_{strategy}": float(sec) for strategy, sec in by_strategy.items()}})
        mlflow.log_artifacts(str(output_dir), REPORT_ARTIFACT)

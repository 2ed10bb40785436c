"""``tune``: an Optuna study of one strategy on one split, as one MLflow parent run with a
child run per trial.

The objective is validation macro-F1; test cells are scored for the best trial only. A study is
its setup (:mod:`scadapt.jobs.study_setup`): another dataset, split, backbone or fixed setting starts
(or joins) a study of its own. Trials report validation macro-F1 after every epoch so that
hopeless ones are pruned (their child runs end KILLED). The study lives in a storage of its own
(see :mod:`scadapt.jobs.study_storage`): a second
``tune`` process with the same study joins it, and a killed study resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import mlflow
import optuna
import torch
from mlflow import MlflowClient
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from scadapt.artifacts.annotators import load_annotator
from scadapt.infra.coordination import Coordinator
from scadapt.infra.errors import BudgetSpent, ScadaptError, TrainingDiverged
from scadapt.jobs.config import TuneJob
from scadapt.jobs.context import TrainingContext, prepare
from scadapt.jobs.fit import fit_strategy
from scadapt.jobs.reporting import job_run_tags, log_dataset_input, log_fit, log_test, run_params, run_tags
from scadapt.jobs.study_setup import SETUP_PLACEHOLDER, claim_study, setup_digest, study_setup
from scadapt.jobs.study_storage import (
    WORKER_ATTR,
    coordinator,
    describe_storage,
    heartbeat_seconds,
    open_storage,
    recover_interrupted,
    trial_id,
)
from scadapt.strategies.hyperparameters import default_trial, search_space
from scadapt.tracking import CANDIDATE_TAG, experiment_name, log_params, shared_run, tracked_run
from scadapt.tracking.contract import (
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    CLOSED_BY_TAG,
    ENTRY_POINT_TAG,
    INTERRUPTED_TAG,
    PRUNED_AFTER_EPOCH_TAG,
    STUDY_RUN_TAG,
    STUDY_TAG,
    TRIAL_TAG,
)
from scadapt.tracking.runs import quiet_artifact_downloads
from scadapt.tracking.workers import worker_id

log = logging.getLogger(__name__)

RUN_ATTR = "mlflow_run_id"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class TuneResult:
    study_name: str
    parent_run_id: str
    best_run_id: str
    best_params: dict[str, object]  # the best trial's settings as its fit used them: searched and fixed
    metrics: dict[str, float]  # the best trial's validation and test metrics
    trial_states: dict[str, int] = field(default_factory=dict)
    ended_by: str = "n_trials"  # what ended this worker's trials: n_trials, timeout or the time budget


def tune(job: TuneJob) -> TuneResult:
    """Run (or join, or resume) the study; return the best trial with its test metrics.

    Any number of workers may run the same job at once (on one host with a journal or SQLite,
    on several with a database): together they finish exactly ``n_trials`` trials, under one
    parent run with one promotion candidate.
    """
    strategy = job.method  # with the fixed settings (hparams) and the defaults
    fixed = {name: getattr(strategy.config, name) for name in job.hparams}  # as the fit uses them (typed)
    storage = open_storage(job.storage, on_stale=_close_trial_run)  # a bad URL is refused before any work
    board = coordinator(job.storage)
    ctx = prepare(job, board=board)
    setup = study_setup(job, ctx, fixed)
    name = (job.study_name or f"{ctx.info.name}/{job.strategy}/{ctx.split.name}/{SETUP_PLACEHOLDER}").replace(
        SETUP_PLACEHOLDER, setup_digest(setup))
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                pruner=job.pruner(), sampler=WorkerSeededSampler(job.seed, name))
    with board.hold(f"study-setup:{name}"):
        claim_study(study, setup)  # another setup's study is refused, naming what differs
        if not study.get_trials(deepcopy=False):  # the defaults first (see default_trial)
            study.enqueue_trial(default_trial(strategy.config_class, strategy.config.to_params(), fixed))
    tags = {**run_tags(job, ctx), ENTRY_POINT_TAG: "tune", STUDY_TAG: name}
    with board.hold(f"study-run:{name}"):  # one parent run, however many workers start together
        parent_id, created = shared_run(job.experiment or experiment_name(ctx.info.name),
                                        {STUDY_TAG: name, STUDY_RUN_TAG: "true"},
                                        f"{job.strategy} study {ctx.info.name}/{ctx.split.name}", job_run_tags(job))
        log_params({**_fixed_params(job, ctx), "study_name": name, "storage": describe_storage(job.storage),
                    "n_trials": job.n_trials, "sampler": f"TPE(seed={job.seed}, per worker)",
                    "pruning": job.pruning}, run_id=parent_id)
    with tracked_run("", run_id=parent_id, tags=tags) as parent:
        if created:
            log_dataset_input(ctx)
        ended_by = _run_trials(study, storage, board, job, _objective(job, ctx, tags, fixed),
                               search_space(strategy.config_class, fixed))
        if ended_by == "the time budget" and not any(t.state == TrialState.COMPLETE for t in study.get_trials()):
            raise BudgetSpent(f"The time budget ended study {name} before any of its trials completed.")
        with board.hold(f"study-best:{name}"):  # one candidate
            result = _record_best(study, ctx, job, parent.info.run_id, fixed)
        result.ended_by = ended_by
        return result


class WorkerSeededSampler(optuna.samplers.BaseSampler):
    """TPE seeded from the job seed, the study and the number of this worker's first trial.

    Trial numbers are unique in a study, so workers that start together draw different
    suggestions, and a study run by one worker is reproducible from the job seed.
    """

    def __init__(self, seed: int, study_name: str):
        self.seed, self.study_name = seed, study_name
        self._tpe: optuna.samplers.TPESampler | None = None

    def _sampler(self, first_trial: int) -> optuna.samplers.TPESampler:
        if self._tpe is None:
            key = f"{self.seed}/{self.study_name}/{first_trial}".encode()
            seed = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little")
            self._tpe = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        return self._tpe

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler(trial.number).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler(trial.number).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler(trial.number).after_trial(study, trial, state, values)


def _run_trials(study: optuna.Study, storage: BaseStorage, board: Coordinator, job: TuneJob, objective,
                space: dict[str, BaseDistribution]) -> str:
    """Run trials until the study has ``n_trials`` finished ones, this worker's ``timeout`` has
    passed or the job's time budget is spent (``job.deadline``: no trial starts after it, and one
    running ends at its next epoch); return which of the three ended them.

    A trial starts only while finished plus running trials leave room in the budget (checked and
    created under the study's lock); when the rest are running on other workers, this worker
    waits for them, and fails those whose worker died (heartbeat, or a dead local process).
    Like ``study.optimize(n_trials=...)``, one worker starts at most ``n_trials`` trials, so
    failing trials (out of memory, diverged) end the job instead of looping. A trial asks for the
    declared search ``space`` (the strategy's searched hyperparameters that the job does not fix).
    """
    deadline = time.monotonic() + job.timeout if job.timeout else None
    said_waiting, started = False, 0
    while deadline is None or time.monotonic() < deadline:
        if job.deadline is not None and time.time() >= job.deadline:
            log.info("Study %s: the time budget is spent; it starts no new trial (%d started here).",
                     study.study_name, started)
            return "the time budget"
        if started >= job.n_trials:
            log.info("Study %s: this worker has started its %d trials.", study.study_name, started)
            return "n_trials"
        with board.hold(f"study-slots:{study.study_name}"):
            _fail_dead_workers(study, storage)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if finished >= job.n_trials:
                log.info("Study %s has %d finished trials (n_trials=%d).", study.study_name, finished, job.n_trials)
                return "n_trials"
            trial = None
            if finished + running < job.n_trials:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "heartbeat is supposed to be used with optimize"
                    trial = study.ask(space)
                trial.set_user_attr(WORKER_ATTR, worker_id())
        if trial is None:
            if not said_waiting:
                log.info("Study %s: the last %d trials run on other workers; waiting for them.", study.study_name,
                         running)
                said_waiting = True
            time.sleep(min(5.0, heartbeat_seconds()))
            continue
        said_waiting = False
        started += 1
        _run_trial(study, storage, trial, objective)
    log.info("Study %s: this worker's timeout has passed; it starts no new trial.", study.study_name)
    return "timeout"


def _fail_dead_workers(study: optuna.Study, storage: BaseStorage) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # other hosts: the heartbeat (database storages)
    for trial in recover_interrupted(study, storage):  # this host: the process is gone
        _close_trial_run(study, trial, "its process on this host is gone")


def _run_trial(study: optuna.Study, storage: BaseStorage, trial: optuna.Trial, objective) -> None:
    """Run one trial with a heartbeat (``storage``: the study's storage as opened, not Optuna's
    cache around it) and tell the study how it ended."""
    with _heartbeat(storage, trial_id(storage, study.study_name, trial.number)):
        try:
            value = objective(trial)
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("Trial %d pruned: %s", trial.number, pruned)
            return
        except (torch.OutOfMemoryError, TrainingDiverged) as error:
            study.tell(trial, state=TrialState.FAIL)
            log.warning("Trial %d failed: %s", trial.number, str(error).splitlines()[0][:300])
            return
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
    study.tell(trial, value)
    log.info("Trial %d finished: validation macro-F1 %.4f with %s.", trial.number, value, trial.params)


@contextmanager
def _heartbeat(storage, trial_id: int) -> Iterator[None]:
    """Beat for the trial while it runs (database storages), so that other workers can tell
    when this one died."""
    if not (isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval()):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as error:  # a blip of the database; the next beat may work
                log.warning("Heartbeat of trial %d failed: %s", trial_id, str(error).splitlines()[0][:200])
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"scadapt-heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _objective(job: TuneJob, ctx: TrainingContext, tags: dict[str, str], fixed: dict[str, object]):
    def objective(trial: optuna.Trial) -> float:
        config = job.method.config_class.from_params({"seed": job.seed, **trial.params, **fixed})
        with tracked_run("", f"{job.strategy} trial {trial.number}", {**tags, TRIAL_TAG: str(trial.number)},
                         nested=True, killed_by=(KeyboardInterrupt, optuna.TrialPruned)) as run:
            trial.set_user_attr(RUN_ATTR, run.info.run_id)
            log_params(run_params(job, ctx, config))

            def on_epoch(record: dict[str, float]) -> None:
                epoch = int(record["epoch"])
                mlflow.log_metrics({f"epoch_{k}": v for k, v in record.items() if k != "epoch"}, step=epoch)
                trial.report(record["val_macro_f1"], epoch)
                if trial.should_prune():
                    mlflow.set_tag(PRUNED_AFTER_EPOCH_TAG, str(epoch))
                    raise optuna.TrialPruned(f"validation macro-F1 {record['val_macro_f1']:.3f} after epoch {epoch}")

            outcome = fit_strategy(ctx, job.method.with_config(config), progress=job.progress, on_epoch=on_epoch)
            return log_fit(ctx, outcome)["val_macro_f1"]

    return objective


def _fixed_params(job: TuneJob, ctx: TrainingContext) -> dict[str, object]:
    """The parent's params: the data, split and backbone columns and every setting that is the
    same in all trials (not searched, or fixed by ``hparams``)."""
    searched = search_space(job.method.config_class, fixed=job.hparams)
    params = run_params(job, ctx, job.method.config)
    return {k: v for k, v in params.items() if k not in searched}


def _best_trial(trials: list[FrozenTrial]) -> FrozenTrial:
    """The completed trial with the best validation score; of equal ones the first (the defaults,
    when they are among them), whatever order a database returns them in."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    top = max(t.value for t in complete)
    return min((t for t in complete if t.value == top), key=lambda t: t.number)


def _close_trial_run(study: optuna.Study, trial: FrozenTrial, reason: str = "its heartbeat stopped") -> None:
    """End the child run of a trial that will never finish (Optuna's stale-trial callback)."""
    run_id = trial.user_attrs.get(RUN_ATTR)
    if run_id:
        client = MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, INTERRUPTED_TAG, "true")
            client.set_tag(run_id, CLOSED_BY_TAG, f"{worker_id()}: {reason}")
            client.set_terminated(run_id, "FAILED")
    log.warning("Trial %d of study %s failed: %s (worker %s).", trial.number, study.study_name, reason,
                trial.user_attrs.get(WORKER_ATTR, "unknown"))


def _record_best(study: optuna.Study, ctx: TrainingContext, job: TuneJob, parent_id: str,
                 fixed: dict[str, object]) -> TuneResult:
    """Score the best trial on the test cells (once), mark it as the study's promotion candidate
    and copy its settings (searched and ``fixed``, as the fit used them) and metrics to the parent run."""
    trials = study.get_trials(deepcopy=False)
    states = dict(Counter(t.state.name.lower() for t in trials))
    mlflow.log_metrics({f"trials_{state}": n for state, n in states.items()})
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise ScadaptError(
            f"No trial of study {study.study_name!r} completed ({', '.join(f'{n} {s}' for s, n in states.items())}). "
            "Loosen pruning (--pruning none) or check the failed child runs in MLflow."
        )
    best = _best_trial(trials)
    best_run = best.user_attrs[RUN_ATTR]
    client = MlflowClient()
    if "test_macro_f1" not in client.get_run(best_run).data.metrics:
        with quiet_artifact_downloads():
            annotator = load_annotator(best_run, device=str(ctx.device))
        with tracked_run("", run_id=best_run, nested=True):
            log_test(ctx, annotator, umap=job.umap)
    previous = client.get_run(parent_id).data.tags.get(BEST_RUN_TAG)
    if previous and previous != best_run:
        client.set_tag(previous, CANDIDATE_TAG, "false")
    client.set_tag(best_run, CANDIDATE_TAG, "true")
    metrics = {k: v for k, v in client.get_run(best_run).data.metrics.items() if not k.startswith("epoch_")}
    mlflow.log_metrics(metrics)
    settings = {**best.params, **fixed}
    mlflow.set_tags({BEST_RUN_TAG: best_run, BEST_TRIAL_TAG: str(best.number),
                     **{f"best.{k}": str(v) for k, v in settings.items()}})
    mlflow.log_dict({"trial": best.number, "run_id": best_run, "params": best.params, "value": best.value,
                     "fixed": fixed, "trial_states": states}, "best_trial.json")
    log.info("Study %s: best trial %d, validation macro-F1 %.3f, test macro-F1 %.3f (MLflow run %s).",
             study.study_name, best.number, metrics["val_macro_f1"], metrics["test_macro_f1"], best_run)
    return TuneResult(study.study_name, parent_id, best_run, settings, metrics, states)

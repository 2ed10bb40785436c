"""``tune``: an Optuna study of one strategy on one split, as one MLflow parent run with a
child run per trial.

The objective is validation macro-F1; test cells are scored for the best trial only. Trials
report validation macro-F1 after every epoch so that hopeless ones are pruned (their child runs
end KILLED). The study lives in a storage of its own (see :mod:`scadapt.tuning.storage`): a second
``tune`` process with the same study joins it, and a killed study resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field

import mlflow
import optuna
import torch
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from scadapt.errors import ScadaptError, TrainingDiverged
from scadapt.strategies import get_strategy
from scadapt.tracking import CANDIDATE_TAG, log_params, shared_run, tracked_run
from scadapt.tracking.contract import (
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    ENTRY_POINT_TAG,
    INTERRUPTED_TAG,
    PRUNED_AFTER_EPOCH_TAG,
    STUDY_RUN_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    load_annotator,
)
from scadapt.tracking.runs import quiet_artifact_downloads
from scadapt.tracking.workers import worker_id
from scadapt.training.config import TuneJob
from scadapt.training.context import TrainingContext, prepare
from scadapt.training.fit import fit_strategy
from scadapt.training.reporting import job_run_tags, log_dataset_input, log_fit, log_test, run_params, run_tags
from scadapt.tuning.storage import WORKER_ATTR, describe_storage, open_storage, recover_interrupted

log = logging.getLogger(__name__)

RUN_ATTR = "mlflow_run_id"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class TuneResult:
    study_name: str
    parent_run_id: str
    best_run_id: str
    best_params: dict[str, object]
    metrics: dict[str, float]  # the best trial's validation and test metrics
    trial_states: dict[str, int] = field(default_factory=dict)


def tune(job: TuneJob) -> TuneResult:
    """Run (or join, or resume) the study; return the best trial with its test metrics."""
    strategy = get_strategy(job.strategy)
    strategy.config_class.from_params({"seed": job.seed, **job.hparams})  # refuse bad fixed settings now
    ctx = prepare(job, needs_backbone=strategy.needs_backbone)
    name = job.study_name or f"{ctx.info.name}/{job.strategy}/{ctx.split.name}"
    storage = open_storage(job.storage, on_stale=_close_trial_run)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                pruner=job.pruner())
    # the job's seed makes a new study reproducible; a worker that joins or resumes one draws its own
    # suggestions (with the same seed it would repeat the first worker's)
    joined = len(study.get_trials(deepcopy=False)) > 0
    study.sampler = optuna.samplers.TPESampler(seed=_worker_seed(job.seed) if joined else job.seed, constant_liar=True)
    for trial in recover_interrupted(study, storage):
        log.warning("Trial %d of study %s was interrupted (its worker is gone); marked failed.", trial.number, name)
        _close_trial_run(study, trial)
    tags = {**run_tags(job, ctx), ENTRY_POINT_TAG: "tune", STUDY_TAG: name}
    # a worker that joins an existing study logs its trials under that study's parent run
    parent_id, created = shared_run(job.experiment or f"scadapt-{ctx.info.name}",
                                    {STUDY_TAG: name, STUDY_RUN_TAG: "true"},
                                    f"{job.strategy} study {ctx.info.name}/{ctx.split.name}",
                                    job_run_tags(job))
    with tracked_run("", run_id=parent_id, tags=tags) as parent:
        log_params({**_fixed_params(job, ctx), "study_name": name, "storage": describe_storage(job.storage),
                    "n_trials": job.n_trials, "sampler": f"TPE(seed={job.seed})", "pruning": job.pruning})
        if created:
            log_dataset_input(ctx)
        done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        if done < job.n_trials:
            log.info("Study %s: %d of %d trials finished; running the rest.", name, done, job.n_trials)
            study.optimize(
                _objective(job, ctx, tags), n_trials=job.n_trials, timeout=job.timeout,
                callbacks=[optuna.study.MaxTrialsCallback(job.n_trials, states=FINISHED)],
                catch=(torch.OutOfMemoryError, TrainingDiverged),
            )
        else:
            log.info("Study %s already has %d finished trials (n_trials=%d).", name, done, job.n_trials)
        return _record_best(study, ctx, job, parent.info.run_id)


def _objective(job: TuneJob, ctx: TrainingContext, tags: dict[str, str]):
    config_class = get_strategy(job.strategy).config_class

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_id())
        suggested = config_class.search_space(trial)
        config = config_class.from_params({"seed": job.seed, **suggested, **job.hparams})
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

            outcome = fit_strategy(ctx, job.strategy, config, progress=job.progress, on_epoch=on_epoch)
            return log_fit(ctx, outcome)["val_macro_f1"]

    return objective


def _worker_seed(seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{worker_id()}".encode(), digest_size=4).digest(), "little")


def _fixed_params(job: TuneJob, ctx: TrainingContext) -> dict[str, object]:
    """The parent's params: the data, split and backbone columns and every setting that is the
    same in all trials (not searched, or fixed by ``hparams``)."""
    config_class = get_strategy(job.strategy).config_class
    searched = set(config_class.search_space(_SearchedNames())) - set(job.hparams)
    params = run_params(job, ctx, config_class.from_params({"seed": job.seed, **job.hparams}))
    return {k: v for k, v in params.items() if k not in searched}


class _SearchedNames:
    """Stands in for a trial to learn which names a search space suggests."""

    def suggest_float(self, name: str, low: float, high: float, **_) -> float:
        return low

    def suggest_int(self, name: str, low: int, high: int, **_) -> int:
        return low

    def suggest_categorical(self, name: str, choices):
        return choices[0]


def _close_trial_run(study: optuna.Study, trial: FrozenTrial) -> None:
    """End the child run of a trial that will never finish."""
    run_id = trial.user_attrs.get(RUN_ATTR)
    if run_id:
        client = MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, INTERRUPTED_TAG, "true")
            client.set_terminated(run_id, "FAILED")


def _record_best(study: optuna.Study, ctx: TrainingContext, job: TuneJob, parent_id: str) -> TuneResult:
    """Score the best trial on the test cells (once), mark it as the study's promotion candidate
    and copy its settings and metrics to the parent run."""
    trials = study.get_trials(deepcopy=False)
    states = dict(Counter(t.state.name.lower() for t in trials))
    mlflow.log_metrics({f"trials_{state}": n for state, n in states.items()})
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise ScadaptError(
            f"No trial of study {study.study_name!r} completed ({', '.join(f'{n} {s}' for s, n in states.items())}). "
            "Loosen pruning (--pruning none) or check the failed child runs in MLflow."
        )
    best = study.best_trial
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
    mlflow.set_tags({BEST_RUN_TAG: best_run, BEST_TRIAL_TAG: str(best.number),
                     **{f"best.{k}": str(v) for k, v in best.params.items()}})
    mlflow.log_dict({"trial": best.number, "run_id": best_run, "params": best.params, "value": best.value,
                     "fixed": {k: str(v) for k, v in job.hparams.items()}, "trial_states": states}, "best_trial.json")
    log.info("Study %s: best trial %d, validation macro-F1 %.3f, test macro-F1 %.3f (MLflow run %s).",
             study.study_name, best.number, metrics["val_macro_f1"], metrics["test_macro_f1"], best_run)
    return TuneResult(study.study_name, parent_id, best_run, dict(best.params), metrics, states)

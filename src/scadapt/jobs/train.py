"""``train``: one strategy, one split, fixed hyperparameters, one MLflow run.

The work is split so tuning can reuse it: :func:`~scadapt.jobs.context.prepare` loads the
data, the split, the tokenized cells and (lazily, once) the frozen embeddings;
:func:`~scadapt.jobs.fit.fit_strategy` trains one configuration; the
:mod:`~scadapt.jobs.reporting` functions log it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow

from scadapt.infra.storage import writable_dir
from scadapt.jobs.config import TrainJob
from scadapt.jobs.context import prepare
from scadapt.jobs.fit import fit_strategy
from scadapt.jobs.reporting import job_run_tags, log_dataset_input, log_fit, log_test, run_params, run_tags
from scadapt.models.annotator import Annotator
from scadapt.tracking import CANDIDATE_TAG, ENTRY_POINT_TAG, experiment_name, log_params, tracked_run

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    annotator: Annotator
    metrics: dict[str, float]


def train(job: TrainJob) -> TrainResult:
    """Train one strategy on one split as one MLflow run in the dataset's experiment."""
    if job.output_dir:
        writable_dir(job.output_dir, "the trained annotator", "--output-dir")
    ctx = prepare(job)
    experiment = job.experiment or experiment_name(ctx.info.name)
    tags = {**run_tags(job, ctx), ENTRY_POINT_TAG: "train", **job_run_tags(job)}
    with tracked_run(experiment, run_name=f"{job.strategy}/{ctx.split.name}", tags=tags) as run:
        log_params(run_params(job, ctx, job.method.config))
        log_dataset_input(ctx)

        def on_epoch(record: dict[str, float]) -> None:
            mlflow.log_metrics({f"epoch_{k}": v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))

        outcome = fit_strategy(ctx, job.method, progress=job.progress, on_epoch=on_epoch)
        metrics = {**log_fit(ctx, outcome), **log_test(ctx, outcome.annotator, umap=job.umap)}
        if job.output_dir:
            outcome.annotator.save(job.output_dir)
        mlflow.set_tag(CANDIDATE_TAG, "true")  # a finished train run competes for promotion, as a study's best trial
        log.info("%s on %s: validation macro-F1 %.3f, test macro-F1 %.3f (MLflow run %s).", job.strategy,
                 ctx.split.name, metrics["val_macro_f1"], metrics["test_macro_f1"], run.info.run_id)
        return TrainResult(run.info.run_id, outcome.annotator, metrics)

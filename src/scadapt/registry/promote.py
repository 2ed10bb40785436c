"""``promote``: register the best runner of a dataset and point ``@champion`` at it.

Every finished candidate run of the dataset competes, in whichever experiment it was made
(``train``, ``tune``, the pipeline, the benchmark), ranked by the policy
(``registry/policy.yaml``). The current champion competes too, with the metrics recorded on its
model version, so the champion only ever moves to a better runner: a promotion that would lower
it is refused unless forced. A run is registered at most once: a winner that already has a
version gets the alias back on that version. The winner's served model (:mod:`scadapt.serving`)
is logged in its own run when it is first registered.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from scadapt.artifacts.annotators import download_annotator, download_serving_inputs, recorded_checkpoint
from scadapt.backbone.checkpoint import ARGS_FILE
from scadapt.infra.errors import ScadaptError
from scadapt.registry.policy import PromotionPolicy, invalid_model_name
from scadapt.serving import log_served_model
from scadapt.tracking.contract import (
    CANDIDATE_TAG,
    DATASET_TAG,
    GENES_FILE,
    INPUT_EXAMPLE_FILE,
    REGIME_TAG,
    SPLIT_TAG,
    STRATEGY_TAG,
)
from scadapt.tracking.runs import quiet_artifact_downloads, resumed_run, search_all_runs

log = logging.getLogger(__name__)

METRIC_TAG_PREFIX = "metric."  # version tags that record the metrics the version was ranked with


@dataclass
class PromotionResult:
    model_name: str
    version: str
    run_id: str
    changed: bool  # False when the champion already was this run
    ranking: pd.DataFrame  # every candidate with its rank metrics and gate failures
    strategy: str = ""
    note: str = ""  # what happened, in one sentence


class DowngradeRefused(ScadaptError):
    """The best candidate ranks below the current champion; ``kept`` describes the champion."""

    def __init__(self, message: str, kept: PromotionResult):
        super().__init__(message)
        self.kept = kept


def candidates(dataset: str, policy: PromotionPolicy, experiment: str | None = None) -> list[Run]:
    """Finished candidate runs of the dataset in the policy's regimes, from ``experiment`` or
    from every active experiment."""
    if "'" in dataset:
        raise ScadaptError(f"A dataset name cannot contain a quote: {dataset!r}.")
    client = MlflowClient()
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ScadaptError(f"No MLflow experiment {experiment!r}: train or tune on {dataset} first.")
        experiment_ids = [found.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                                                              max_results=50_000)]
    query = f"tags.`{CANDIDATE_TAG}` = 'true' and tags.`{DATASET_TAG}` = '{dataset}' and attributes.status = 'FINISHED'"
    runs = search_all_runs(experiment_ids, query) if experiment_ids else []
    return [run for run in runs if run.data.tags.get(REGIME_TAG) in policy.regimes]


def rank(runs: list[Run], policy: PromotionPolicy) -> pd.DataFrame:
    """One row per run, best first; ``gates_failed`` is empty for runs that may be promoted.

    A run that lacks a ranking metric (e.g. ``gene_coverage``, which expression baselines do not
    log) cannot be compared with the others: it is left out, with a warning naming it."""
    rows = []
    for run in runs:
        metrics = run.data.metrics
        if missing := policy.missing_rank_metrics(metrics):
            log.warning("Run %s (%s) is left out of the ranking: it has no %s, which the promotion policy ranks by.",
                        run.info.run_id, run.data.tags.get(STRATEGY_TAG, "?"), ", ".join(missing))
            continue
        rows.append({"run_id": run.info.run_id, "strategy": run.data.tags.get(STRATEGY_TAG, ""),
                     "split": run.data.tags.get(SPLIT_TAG, ""),
                     **{k.metric: metrics.get(k.metric) for k in policy.rank_by},
                     "test_macro_f1": metrics.get("test_macro_f1"),
                     "gates_failed": "; ".join(policy.failed_gates(metrics)), "_key": policy.standing(metrics)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values(["_key", "run_id"])
    return table.drop(columns=["_key"]).reset_index(drop=True)


def promote(dataset: str, policy_path: str | Path | None = None, experiment: str | None = None,
            force: bool = False, lock: Callable[[str], AbstractContextManager] | None = None) -> PromotionResult:
    """Make the best candidate of ``dataset`` its ``@champion`` unless the champion is as good.

    ``force``: move the alias to the best candidate even when it ranks below the current champion.
    ``lock``: the workers' lock by name (:meth:`scadapt.infra.coordination.Coordinator.hold`): two
    promotions of a dataset at once run one after the other, so each sees the other's champion.
    """
    with lock(f"promote:{dataset}") if lock else nullcontext():
        return _promote(dataset, policy_path, experiment, force)


def _promote(dataset: str, policy_path: str | Path | None, experiment: str | None, force: bool) -> PromotionResult:
    policy = PromotionPolicy.load(policy_path)
    if problem := invalid_model_name(policy.model_name(dataset)):
        raise ScadaptError(f"The registered model name {policy.model_name(dataset)!r} (from the policy's "
                           f"registered_model and the dataset {dataset!r}) is not a valid MLflow name: {problem}")
    runs = candidates(dataset, policy, experiment)
    table = rank(runs, policy)
    where = f"experiment {experiment!r}" if experiment else "any experiment"
    if table.empty:
        lacking = f" ({len(runs)} lack a metric the policy ranks by: {', '.join(k.metric for k in policy.rank_by)})" \
            if runs else ""
        raise ScadaptError(f"No candidate runs for {dataset} in regimes {', '.join(policy.regimes)} in {where}{lacking}: "
                           "run train or tune first, or rank by metrics every candidate logs.")
    if table.loc[0, "gates_failed"]:
        raise ScadaptError(f"No candidate for {dataset} passes the quality gates; the best: {table.loc[0, 'strategy']} "
                           f"(run {table.loc[0, 'run_id']}) fails {table.loc[0, 'gates_failed']}.")
    winner = next(r for r in runs if r.info.run_id == table.loc[0, "run_id"])
    name = policy.model_name(dataset)
    client = MlflowClient()
    current = _version_by_alias(client, name, policy.champion_alias)
    if current is not None:
        kept = PromotionResult(name, str(current.version), current.run_id, False, table,
                               current.tags.get(STRATEGY_TAG, ""))
        if current.run_id == winner.info.run_id:
            kept.note = f"{name}@{policy.champion_alias} already is the best runner (version {current.version})."
            log.info(kept.note)
            return kept
        recorded = recorded_metrics(client, current)
        if (missing := policy.missing_rank_metrics(recorded)) and not force:
            kept.note = (f"The champion {name} version {current.version} has no recorded {', '.join(missing)}, which "
                         f"the policy ranks by, so the best candidate (run {winner.info.run_id}) cannot be shown "
                         "better; the champion stays. Pass --force to promote the candidate anyway.")
            log.warning(kept.note)
            return kept
        ours, theirs = policy.standing(winner.data.metrics), policy.standing(recorded)
        if ours == theirs:
            kept.note = (f"The best candidate (run {winner.info.run_id}) ties with the champion, version "
                         f"{current.version}, under the policy; the champion stays.")
            log.info(kept.note)
            return kept
        if ours > theirs:
            message = (f"The best candidate for {dataset} ({winner.data.tags.get('strategy')}, run {winner.info.run_id}, "
                       f"from {where}) ranks below the current champion {name} version {current.version} "
                       f"({current.tags.get('strategy', '?')}, run {current.run_id}) under the policy "
                       f"({_compare(policy, winner.data.metrics, recorded_metrics(client, current))}).")
            if not force:
                kept.note = message + " The champion stays; pass --force to promote the candidate anyway."
                raise DowngradeRefused(kept.note, kept)
            log.warning("%s Promoting it anyway (--force).", message)
    version, registered = _version_of(client, winner, name)
    if current is not None:
        client.set_registered_model_alias(name, policy.previous_alias, current.version)
    client.set_registered_model_alias(name, policy.champion_alias, version.version)
    if registered:
        _describe(client, name, version.version, winner, policy)
    note = (f"Run {winner.info.run_id} {'registered as' if registered else 'already was'} {name} version "
            f"{version.version}; it is now @{policy.champion_alias}.")
    log.info(note)
    return PromotionResult(name, str(version.version), winner.info.run_id, True, table,
                           winner.data.tags.get(STRATEGY_TAG, ""), note)


def has_champion(dataset: str, policy_path: str | Path | None = None) -> bool:
    """Whether ``dataset``'s registered model has a ``@champion`` version."""
    policy = PromotionPolicy.load(policy_path)
    return _version_by_alias(MlflowClient(), policy.model_name(dataset), policy.champion_alias) is not None


def recorded_metrics(client: MlflowClient, version: ModelVersion) -> dict[str, float]:
    """The metrics a version was promoted with: its source run's, or, if that run is gone, the
    ones recorded on the version."""
    try:
        return dict(client.get_run(version.run_id).data.metrics)
    except MlflowException:
        return {k.removeprefix(METRIC_TAG_PREFIX): float(v) for k, v in version.tags.items()
                if k.startswith(METRIC_TAG_PREFIX)}


def _compare(policy: PromotionPolicy, ours: dict[str, float], theirs: dict[str, float]) -> str:
    return ", ".join(f"{k.metric} {_value(ours.get(k.metric))} vs {_value(theirs.get(k.metric))}"
                     for k in policy.rank_by[:2])


def _value(number: float | None) -> str:
    return "missing" if number is None or math.isnan(number) else f"{number:.4f}"


def _version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _version_of(client: MlflowClient, run: Run, name: str) -> tuple[ModelVersion, bool]:
    """The run's version of ``name``: the existing one, or a new registration (True)."""
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
    if existing:
        return min(existing, key=lambda v: int(v.version)), False
    return _register(run, name), True


def _register(run: Run, name: str) -> ModelVersion:
    """Log the served model in the winner's run and register it."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
        annotator = download_annotator(run_id, tmp)
        serving = download_serving_inputs(run_id, tmp)
        checkpoint = recorded_checkpoint(annotator)
        if checkpoint is not None and not (checkpoint / ARGS_FILE).is_file():
            raise ScadaptError(f"The winner's backbone checkpoint {checkpoint} is gone; it must be served with the model.")
        genes = json.loads((serving / GENES_FILE).read_text())
        example = pd.read_csv(serving / INPUT_EXAMPLE_FILE)
        with resumed_run(run_id, keep_status=True):
            info = log_served_model(annotator, genes, example, checkpoint)
    return mlflow.register_model(info.model_uri, name)


def _describe(client: MlflowClient, name: str, version: str, run: Run, policy: PromotionPolicy) -> None:
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    values = {
        "strategy": tags.get(STRATEGY_TAG, ""), "regime": tags.get(REGIME_TAG, ""), "split": tags.get(SPLIT_TAG, ""),
        "source_run": run.info.run_id, "backbone_weights_hash": params.get("backbone.weights_hash", ""),
        "trainable_parameters": str(int(metrics.get("trainable_parameters", 0))),
        **{k: f"{metrics[k]:.4f}" for k in ("val_macro_f1", "test_macro_f1", "test_balanced_accuracy", "test_accuracy")
           if k in metrics},
        **{f"{METRIC_TAG_PREFIX}{k}": repr(metrics[k]) for k in {*(r.metric for r in policy.rank_by), *policy.gates}
           if k in metrics},
    }
    for key, value in values.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=(
        f"{values['strategy']} on {tags.get(DATASET_TAG, '')} ({values['split']}): validation macro-F1 "
        f"{values.get('val_macro_f1', '?')}, test macro-F1 {values.get('test_macro_f1', '?')}, "
        f"{values['trainable_parameters']} trainable parameters; run {run.info.run_id}, "
        f"backbone {values['backbone_weights_hash'][:16] or 'none'}."))

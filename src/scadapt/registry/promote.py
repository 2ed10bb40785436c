"""``promote``: register the best runner of a dataset and point ``@champion`` at it.

Ranks the dataset's candidate runs with the policy (``registry/policy.yaml``), logs the winner's
served model (:mod:`scadapt.serving`) in the winner's own run, registers it as a new version of
the dataset's registered model, moves ``@champion`` to it and ``@previous`` to the version it
replaces. Running it again when the winner has not changed does nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from scadapt.errors import ScadaptError
from scadapt.registry.policy import PromotionPolicy
from scadapt.serving import log_served_model
from scadapt.tracking.runs import quiet_artifact_downloads

log = logging.getLogger(__name__)


@dataclass
class PromotionResult:
    model_name: str
    version: str
    run_id: str
    changed: bool  # False when the champion already was this run
    ranking: pd.DataFrame  # every candidate with its rank metrics and gate failures


def candidates(dataset: str, policy: PromotionPolicy, experiment: str | None = None) -> list[Run]:
    """Finished candidate runs of the dataset in the policy's regimes (an experiment may hold
    several datasets, e.g. a benchmark's)."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment or f"scadapt-{dataset}")
    if found is None:
        raise ScadaptError(f"No MLflow experiment {experiment or f'scadapt-{dataset}'!r}: train or tune on {dataset} first.")
    if "'" in dataset:
        raise ScadaptError(f"A dataset name cannot contain a quote: {dataset!r}.")
    query = f"tags.`scadapt.candidate` = 'true' and tags.dataset = '{dataset}' and attributes.status = 'FINISHED'"
    runs = client.search_runs([found.experiment_id], query, max_results=10_000)
    return [run for run in runs if run.data.tags.get("regime") in policy.regimes]


def rank(runs: list[Run], policy: PromotionPolicy) -> pd.DataFrame:
    """One row per run, best first; ``gates_failed`` is empty for runs that may be promoted."""
    rows = []
    for run in runs:
        metrics = run.data.metrics
        rows.append({"run_id": run.info.run_id, "strategy": run.data.tags.get("strategy", ""),
                     "split": run.data.tags.get("split", ""),
                     **{k.metric: metrics.get(k.metric) for k in policy.rank_by},
                     "test_macro_f1": metrics.get("test_macro_f1"),
                     "gates_failed": "; ".join(policy.failed_gates(metrics)), "_key": policy.sort_key(metrics)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_passes"] = table["gates_failed"] == ""
    table = table.sort_values(["_passes", "_key", "run_id"], ascending=[False, True, True], key=None)
    return table.drop(columns=["_key", "_passes"]).reset_index(drop=True)


def promote(dataset: str, policy_path: str | Path | None = None, experiment: str | None = None) -> PromotionResult:
    policy = PromotionPolicy.load(policy_path)
    runs = candidates(dataset, policy, experiment)
    table = rank(runs, policy)
    if table.empty:
        raise ScadaptError(f"No candidate runs for {dataset} in regimes {', '.join(policy.regimes)}: run train or tune first.")
    if table.loc[0, "gates_failed"]:
        raise ScadaptError(f"No candidate for {dataset} passes the quality gates; the best: {table.loc[0, 'strategy']} "
                           f"(run {table.loc[0, 'run_id']}) fails {table.loc[0, 'gates_failed']}.")
    winner = next(r for r in runs if r.info.run_id == table.loc[0, "run_id"])
    name = policy.model_name(dataset)
    client = MlflowClient()
    current = _version_by_alias(client, name, policy.champion_alias)
    if current is not None and current.run_id == winner.info.run_id:
        log.info("%s@%s is already run %s (version %s); nothing to do.", name, policy.champion_alias,
                 winner.info.run_id, current.version)
        return PromotionResult(name, str(current.version), winner.info.run_id, False, table)
    version = _register(client, winner, name)
    if current is not None:
        client.set_registered_model_alias(name, policy.previous_alias, current.version)
    client.set_registered_model_alias(name, policy.champion_alias, version.version)
    _describe(client, name, version.version, winner)
    log.info("Registered %s version %s (%s, run %s) as @%s.", name, version.version,
             winner.data.tags.get("strategy"), winner.info.run_id, policy.champion_alias)
    return PromotionResult(name, str(version.version), winner.info.run_id, True, table)


def _version_by_alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _register(client: MlflowClient, run: Run, name: str):
    """Log the served model in the winner's run and register it."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
        annotator = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="annotator", dst_path=tmp))
        serving = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="serving", dst_path=tmp))
        manifest = json.loads((annotator / "annotator.json").read_text())
        checkpoint = Path(manifest["backbone"]["source"]) if "backbone" in manifest else None
        if checkpoint is not None and not (checkpoint / "args.json").is_file():
            raise ScadaptError(f"The winner's backbone checkpoint {checkpoint} is gone; it must be served with the model.")
        genes = json.loads((serving / "genes.json").read_text())
        example = pd.read_csv(serving / "input_example.csv")
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = log_served_model(annotator, genes, example, checkpoint)
    return mlflow.register_model(info.model_uri, name)


def _describe(client: MlflowClient, name: str, version: str, run: Run) -> None:
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    values = {
        "strategy": tags.get("strategy", ""), "regime": tags.get("regime", ""), "split": tags.get("split", ""),
        "source_run": run.info.run_id, "backbone_weights_hash": params.get("backbone.weights_hash", ""),
        "trainable_parameters": str(int(metrics.get("trainable_parameters", 0))),
        **{k: f"{metrics[k]:.4f}" for k in ("val_macro_f1", "test_macro_f1", "test_balanced_accuracy", "test_accuracy")
           if k in metrics},
    }
    for key, value in values.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=(
        f"{values['strategy']} on {tags.get('dataset', '')} ({values['split']}): validation macro-F1 "
        f"{values.get('val_macro_f1', '?')}, test macro-F1 {values.get('test_macro_f1', '?')}, "
        f"{values['trainable_parameters']} trainable parameters; run {run.info.run_id}, "
        f"backbone {values['backbone_weights_hash'][:16] or 'none'}."))

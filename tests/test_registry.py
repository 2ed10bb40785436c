"""``promote`` and the served model: ranking with the policy file, aliases, idempotence, reloading
the champion as a pyfunc model, and bad requests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anndata
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from conftest import REPO
from mlflow.exceptions import MlflowException

from scadapt.artifacts.checkpoints import local_checkpoint
from scadapt.backbone import load_backbone
from scadapt.infra.errors import ScadaptError
from scadapt.jobs.config import TrainJob
from scadapt.jobs.train import train
from scadapt.registry import DowngradeRefused, PromotionPolicy, promote
from scadapt.registry.policy import DEFAULT_POLICY
from scadapt.serving.server import serving

POLICY = DEFAULT_POLICY.read_text()


def _train(checkpoint, strategy: str, **hparams):
    return train(TrainJob(data="pancreas_small", strategy=strategy, checkpoint=str(checkpoint), hparams=hparams,
                          max_seq_len=64, min_genes=50, progress=False, umap=False))


@pytest.fixture
def lenient_policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("val_macro_f1: 0.2", "val_macro_f1: 0.0").replace("test_macro_f1: 0.2",
                                                                                     "test_macro_f1: 0.0"))
    return path


def _cells(adata, n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(adata.X[:n].toarray(), columns=adata.var_names, index=adata.obs_names[:n])


def test_promotion_registers_the_best_candidate_moves_aliases_and_is_idempotent(tiny_checkpoint, lenient_policy,
                                                                                 pancreas):
    head = _train(tiny_checkpoint, "head", epochs=2)
    first = promote("pancreas_small", lenient_policy)
    assert first.changed and first.version == "1" and first.run_id == head.run_id
    assert not promote("pancreas_small", lenient_policy).changed  # nothing new: nothing registered

    pca = _train(tiny_checkpoint, "pca_logreg", n_components=20)
    assert pca.metrics["val_macro_f1"] > head.metrics["val_macro_f1"]
    second = promote("pancreas_small", lenient_policy)
    assert second.changed and second.version == "2" and second.run_id == pca.run_id
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("scadapt-pancreas_small", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("scadapt-pancreas_small", "previous").version) == "1"
    version = client.get_model_version("scadapt-pancreas_small", "2")
    assert version.tags["strategy"] == "pca_logreg" and version.tags["source_run"] == pca.run_id
    assert float(version.tags["test_macro_f1"]) == pytest.approx(pca.metrics["test_macro_f1"], abs=1e-4)
    assert "pca_logreg on pancreas_small" in version.description
    assert list(second.ranking["run_id"]) == [pca.run_id, head.run_id]

    # the champion reloads as a pyfunc model and predicts what the trained annotator predicts
    model = mlflow.pyfunc.load_model("models:/scadapt-pancreas_small@champion")
    cells = _cells(pancreas)
    served = model.predict(cells)
    direct = pca.annotator.predict(pancreas[:5])
    assert list(served["label"]) == list(direct["label"])
    np.testing.assert_allclose(served["confidence"], direct["confidence"], rtol=1e-5)
    proba = model.predict(cells, params={"output": "probabilities"})
    assert [c for c in proba.columns if c.startswith("p_")] == [f"p_{c}" for c in pca.annotator.classes]
    # the one resolver: the registered model, and the run's own annotator by its run id, give the same labels
    import scadapt

    for given in ("models:/scadapt-pancreas_small@champion", pca.run_id):
        assert list(scadapt.load_model(given).annotator.predict(pancreas[:5])["label"]) == list(direct["label"])


def test_served_backbone_model_matches_the_annotator_and_refuses_bad_requests(tiny_checkpoint, lenient_policy,
                                                                              pancreas):
    head = _train(tiny_checkpoint, "head", epochs=2)
    promote("pancreas_small", lenient_policy)
    tiny_checkpoint.rename(tiny_checkpoint.with_name("moved"))  # the model carries its own copy of the backbone
    model = mlflow.pyfunc.load_model("models:/scadapt-pancreas_small@champion")
    cells = _cells(pancreas, 8)
    served = model.predict(cells, params={"output": "embedding"})
    direct_embedding, direct_proba = head.annotator.outputs(pancreas[:8])
    np.testing.assert_allclose(served[[f"emb_{i}" for i in range(32)]].to_numpy(), direct_embedding, atol=1e-5)
    np.testing.assert_allclose(served["confidence"], direct_proba.max(axis=1), atol=1e-5)
    assert served["label"].tolist() == head.annotator.predict(pancreas[:8])["label"].tolist()

    with pytest.raises(MlflowException, match="genes this model reads"):
        model.predict(cells.iloc[:, :100])
    with pytest.raises(MlflowException, match="negative values"):
        model.predict(cells - 5.0)
    with pytest.raises(MlflowException, match="values up to 1e\\+30, beyond any count"):  # as train and predict
        model.predict(cells.assign(**{cells.columns[3]: 1e30}))
    z_scores = (cells - cells.mean()) / (cells.std() + 1e-6)
    with pytest.raises(MlflowException, match="of the expression values are zero.*shifted z-scores"):
        model.predict(z_scores - z_scores.min().min())
    with pytest.raises(MlflowException, match="Unknown output 'everything'"):
        model.predict(cells, params={"output": "everything"})
    with pytest.raises(MlflowException, match="None of the model's 2000 genes is among the 2 column"):
        model.predict(pd.DataFrame({"NOT_A_GENE": [1.0], "ALSO_NOT": [2.0]}))
    twice = pd.concat([cells, cells.iloc[:, :2]], axis=1)
    with pytest.raises(MlflowException, match="Gene columns appear more than once: .*Send each gene once"):
        model.predict(twice)
    with pytest.raises(MlflowException, match="must hold numbers"):
        model.predict(cells.astype(object).assign(**{cells.columns[0]: "high"}))

    # a cell that expresses none of the model's genes is flagged, not labelled with confidence
    silent = cells.copy()
    silent.iloc[0] = 0.0
    flagged = model.predict(silent)
    assert flagged.loc[0, "label"] == "Unassigned" and flagged.loc[0, "confidence"] == 0.0
    assert flagged["label"].iloc[1:].tolist() == served["label"].iloc[1:].tolist()


def test_gates_and_missing_candidates_are_explained(tiny_checkpoint, tmp_path):
    with pytest.raises(ScadaptError, match="No candidate runs for pancreas_small in regimes full in any experiment"):
        promote("pancreas_small")
    with pytest.raises(ScadaptError, match="No MLflow experiment 'elsewhere'"):
        promote("pancreas_small", experiment="elsewhere")
    _train(tiny_checkpoint, "head", epochs=1)
    strict = tmp_path / "strict.yaml"
    strict.write_text(POLICY.replace("val_macro_f1: 0.2", "val_macro_f1: 0.99"))
    with pytest.raises(ScadaptError, match="passes the quality gates.*val_macro_f1 0.* < 0.99"):
        promote("pancreas_small", strict)
    broken = tmp_path / "broken.yaml"
    broken.write_text(POLICY + "\nrank_on: test\n")
    with pytest.raises(ScadaptError, match="unknown policy keys \\['rank_on'\\]"):
        PromotionPolicy.load(broken)


@pytest.mark.integration
def test_mlflow_project_promote_entry_point(tiny_checkpoint, lenient_policy, monkeypatch):
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    pca = _train(tiny_checkpoint, "pca_logreg", n_components=20)
    submitted = mlflow.projects.run(str(REPO), entry_point="promote", env_manager="local", synchronous=True,
                                    parameters={"data": "pancreas_small", "policy": str(lenient_policy)})
    assert mlflow.get_run(submitted.run_id).info.status == "FINISHED"
    champion = mlflow.MlflowClient().get_model_version_by_alias("scadapt-pancreas_small", "champion")
    assert champion.run_id == pca.run_id


@pytest.mark.integration
def test_champion_served_by_the_mlflow_scoring_server(tiny_checkpoint, lenient_policy, pancreas, monkeypatch):
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    _train(tiny_checkpoint, "pca_logreg", n_components=20)
    promote("pancreas_small", lenient_policy)
    with serving("models:/scadapt-pancreas_small@champion") as base:
        cells = _cells(pancreas, 3)
        expected = mlflow.pyfunc.load_model("models:/scadapt-pancreas_small@champion").predict(cells)
        split = requests.post(f"{base}/invocations", json={"dataframe_split": cells.to_dict(orient="split")}, timeout=60)
        assert split.status_code == 200, split.text
        assert [row["label"] for row in split.json()["predictions"]] == list(expected["label"])
        records = requests.post(f"{base}/invocations", timeout=60, json={
            "dataframe_records": cells.to_dict(orient="records"), "params": {"output": "probabilities"}})
        assert records.status_code == 200 and "p_alpha" in records.json()["predictions"][0]
        bad = requests.post(f"{base}/invocations", json={"dataframe_split": cells.iloc[:, :10].to_dict(orient="split")},
                            timeout=60)
        assert bad.status_code == 400 and "genes this model reads" in bad.json()["message"]
        unknown = requests.post(f"{base}/invocations", timeout=60,
                                json={"dataframe_split": {"columns": ["NOPE1", "NOPE2"], "data": [[1.0, 2.0]]}})
        assert unknown.status_code == 400 and "None of the model's" in unknown.json()["message"]
        twice = pd.concat([cells, cells.iloc[:, :1]], axis=1)
        split_twice = {"columns": list(twice.columns), "data": twice.to_numpy().tolist()}
        duplicated = requests.post(f"{base}/invocations", json={"dataframe_split": split_twice}, timeout=60)
        assert duplicated.status_code == 400 and "appear more than once" in duplicated.json()["message"]
        garbage = requests.post(f"{base}/invocations", data="not json", headers={"Content-Type": "application/json"},
                                timeout=60)
        assert 400 <= garbage.status_code < 500
        assert requests.get(f"{base}/ping", timeout=5).status_code == 200  # still serving


@pytest.mark.integration
def test_mlflow_project_predict_entry_point_annotates_an_h5ad(tiny_checkpoint, lenient_policy, pancreas, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    pca = _train(tiny_checkpoint, "pca_logreg", n_components=20)
    promote("pancreas_small", lenient_policy)
    query = pancreas[:40].copy()
    query.obs["kept"] = "yes"
    query.write_h5ad(tmp_path / "query.h5ad")
    submitted = mlflow.projects.run(str(REPO), entry_point="predict", env_manager="local", synchronous=True,
                                    parameters={"model": "models:/scadapt-pancreas_small@champion",
                                                "data": str(tmp_path / "query.h5ad"), "output": str(tmp_path / "out.h5ad")})
    run = mlflow.get_run(submitted.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["n_cells"] == 40
    annotated = anndata.read_h5ad(tmp_path / "out.h5ad")
    assert list(annotated.obs["kept"]) == ["yes"] * 40  # the user's data is kept
    assert list(annotated.obs["scadapt_label"]) == list(pca.annotator.predict(query)["label"])
    assert annotated.obsm["X_scadapt"].shape == (40, 20)


def test_predict_refuses_data_without_the_models_genes(tiny_checkpoint, lenient_policy, pancreas, tmp_path):
    from scadapt.serving.predict import predict_h5ad

    _train(tiny_checkpoint, "pca_logreg", n_components=20)
    promote("pancreas_small", lenient_policy)
    other = pancreas[:20, :300].copy()
    other.write_h5ad(tmp_path / "few_genes.h5ad")
    with pytest.raises(ScadaptError, match="300 of the 2000 genes this model reads"):
        predict_h5ad("models:/scadapt-pancreas_small@champion", tmp_path / "few_genes.h5ad")
    with pytest.raises(ScadaptError, match="Cannot load model models:/nothing@champion"):
        predict_h5ad("models:/nothing@champion", tmp_path / "few_genes.h5ad")


def test_champion_only_moves_up_across_experiments_and_each_run_is_registered_once(tiny_checkpoint, lenient_policy):
    pca = _train(tiny_checkpoint, "pca_logreg", n_components=20)  # experiment scadapt-pancreas_small
    assert promote("pancreas_small", lenient_policy).version == "1"
    worse = train(TrainJob(data="pancreas_small", strategy="head", checkpoint=str(tiny_checkpoint), hparams={"epochs": 1},
                           max_seq_len=64, min_genes=50, progress=False, umap=False, experiment="elsewhere"))
    assert worse.metrics["val_macro_f1"] < pca.metrics["val_macro_f1"]

    kept = promote("pancreas_small", lenient_policy)  # every experiment competes: the champion stays
    assert not kept.changed and kept.version == "1" and kept.run_id == pca.run_id
    assert set(kept.ranking["run_id"]) == {pca.run_id, worse.run_id}
    with pytest.raises(DowngradeRefused, match="ranks below the current champion .* pass --force"):
        promote("pancreas_small", lenient_policy, experiment="elsewhere")
    forced = promote("pancreas_small", lenient_policy, experiment="elsewhere", force=True)
    assert forced.changed and forced.version == "2" and forced.run_id == worse.run_id

    back = promote("pancreas_small", lenient_policy)  # the better run's version 1 is reused, not registered again
    assert back.changed and back.version == "1" and "already was" in back.note
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name = 'scadapt-pancreas_small'")
    assert sorted(v.run_id for v in versions) == sorted([pca.run_id, worse.run_id])
    assert str(client.get_model_version_by_alias("scadapt-pancreas_small", "previous").version) == "2"
    # the version records what it was ranked with, for comparisons after its run is gone
    assert float(client.get_model_version("scadapt-pancreas_small", "1").tags["metric.val_macro_f1"]) == \
        pytest.approx(pca.metrics["val_macro_f1"])


def test_a_candidate_that_ties_with_the_champion_leaves_the_champion_in_place(tiny_checkpoint, lenient_policy,
                                                                             tmp_path):
    """The same fit run again ranks equal under a policy without runtime: a tie keeps the champion
    (no new version, no alias moved), while the champion's own rank is compared by value."""
    no_runtime = tmp_path / "no_runtime.yaml"
    no_runtime.write_text(lenient_policy.read_text().replace("  - {metric: runtime_sec, higher_is_better: false}\n", ""))
    first = _train(tiny_checkpoint, "pca_logreg", n_components=20)
    assert promote("pancreas_small", no_runtime).run_id == first.run_id
    again = train(TrainJob(data="pancreas_small", strategy="pca_logreg", checkpoint=str(tiny_checkpoint),
                           hparams={"n_components": 20}, max_seq_len=64, min_genes=50, progress=False, umap=False,
                           experiment="elsewhere"))
    assert again.run_id != first.run_id
    assert {k: again.metrics[k] for k in ("val_macro_f1", "val_balanced_accuracy", "val_accuracy")} == \
        {k: first.metrics[k] for k in ("val_macro_f1", "val_balanced_accuracy", "val_accuracy")}
    kept = promote("pancreas_small", no_runtime, experiment="elsewhere")
    assert not kept.changed and kept.run_id == first.run_id and "ties with the champion" in kept.note
    versions = mlflow.MlflowClient().search_model_versions("name = 'scadapt-pancreas_small'")
    assert [v.run_id for v in versions] == [first.run_id]


def test_promote_command_refuses_a_downgrade_with_a_message(tiny_checkpoint, lenient_policy, capsys):
    from scadapt.cli import main

    _train(tiny_checkpoint, "pca_logreg", n_components=20)
    promote("pancreas_small", lenient_policy)
    train(TrainJob(data="pancreas_small", strategy="head", checkpoint=str(tiny_checkpoint), hparams={"epochs": 1},
                   max_seq_len=64, min_genes=50, progress=False, umap=False, experiment="elsewhere"))
    code = main(["promote", "--data", "pancreas_small", "--policy", str(lenient_policy), "--experiment", "elsewhere"])
    assert code == 2 and "The champion stays; pass --force" in capsys.readouterr().err
    assert main(["promote", "--data", "pancreas_small", "--policy", str(lenient_policy), "--experiment", "elsewhere",
                 "--force"]) == 0


def _candidate(experiment_id: str, dataset: str = "d", **metrics) -> str:
    """A finished candidate run with the given metrics (what train/tune leave behind)."""
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, tags={"scadapt.candidate": "true", "dataset": dataset, "regime": "full",
                                                 "strategy": f"s{len(metrics)}"})
    for name, value in metrics.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_ranking_rules_gates_rounding_missing_metrics_and_the_dataset_filter(caplog):
    from scadapt.registry.promote import candidates, rank

    experiment = mlflow.MlflowClient().create_experiment("shared")
    policy = PromotionPolicy.load()
    base = {"val_balanced_accuracy": 0.5, "val_accuracy": 0.5, "trainable_parameters": 10, "runtime_sec": 1.0,
            "test_macro_f1": 0.5}
    best_but_fails_test_gate = _candidate(experiment, **{**base, "val_macro_f1": 0.9, "test_macro_f1": 0.1})
    lower_that_passes = _candidate(experiment, **{**base, "val_macro_f1": 0.7})
    tie_more_params = _candidate(experiment, **{**base, "val_macro_f1": 0.70004, "trainable_parameters": 99})
    no_validation_metric = _candidate(experiment, **base)
    _candidate(experiment, dataset="other", **{**base, "val_macro_f1": 0.99})  # another dataset, same experiment

    runs = candidates("d", policy, "shared")
    assert len(runs) == 4  # the dataset filter keeps the other dataset's run out
    table = rank(runs, policy)
    # passing the gates comes first; 0.70004 ties 0.7 after rounding to 3 decimals, so fewer parameters win;
    # a run without a ranking metric is left out (never ranked as NaN), and the log names it
    assert list(table["run_id"]) == [lower_that_passes, tie_more_params, best_but_fails_test_gate]
    assert table.loc[2, "gates_failed"] == "test_macro_f1 0.100 < 0.2"
    assert f"Run {no_validation_metric} (s5) is left out of the ranking: it has no val_macro_f1" in caplog.text


def test_gates_follow_the_metrics_direction_and_bad_gates_or_model_names_are_refused(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("gates:\n", "gates:\n  runtime_sec: {max: 5}\n  trainable_parameters: {min: 1, max: 100}\n"))
    loaded = PromotionPolicy.load(policy)
    fast, slow = {"val_macro_f1": 0.5, "test_macro_f1": 0.5, "runtime_sec": 2.0, "trainable_parameters": 10}, \
        {"val_macro_f1": 0.5, "test_macro_f1": 0.5, "runtime_sec": 50.0, "trainable_parameters": 10}
    assert loaded.failed_gates(fast) == []
    assert loaded.failed_gates(slow) == ["runtime_sec 50.000 > 5"]
    assert loaded.failed_gates({**fast, "trainable_parameters": 500}) == ["trainable_parameters 500.000 > 100"]
    assert loaded.failed_gates({"val_macro_f1": 0.5, "test_macro_f1": 0.5, "trainable_parameters": 10}) == \
        ["runtime_sec missing (gate <= 5)"]
    policy.write_text(POLICY.replace("gates:\n", "gates:\n  runtime_sec: 5\n"))
    with pytest.raises(ScadaptError, match=r"runtime_sec is lower-is-better, so a bare number would be a minimum; "
                                           r"write runtime_sec: \{max: 5\}"):
        PromotionPolicy.load(policy)
    policy.write_text(POLICY.replace("gates:\n", "gates:\n  runtime_sec: {most: 5}\n"))
    with pytest.raises(ScadaptError, match=r"the gate of 'runtime_sec' must be a number \(a minimum\) or \{min: X"):
        PromotionPolicy.load(policy)
    policy.write_text(POLICY.replace('registered_model: "scadapt-{dataset}"', 'registered_model: "team/{dataset}"'))
    with pytest.raises(ScadaptError, match=r"registered_model 'team/\{dataset\}' is not a valid MLflow model name: "
                                           r".*cannot contain '/'"):
        PromotionPolicy.load(policy)


def test_a_champion_without_a_ranking_metric_is_not_replaced_by_a_worse_model(tiny_checkpoint, lenient_policy,
                                                                                tmp_path):
    head = _train(tiny_checkpoint, "head", epochs=1)
    pca = _train(tiny_checkpoint, "pca_logreg", n_components=20)  # an expression baseline: no gene_coverage
    assert pca.metrics["val_macro_f1"] > head.metrics["val_macro_f1"]
    assert promote("pancreas_small", lenient_policy).run_id == pca.run_id
    coverage_first = tmp_path / "coverage.yaml"
    coverage_first.write_text(lenient_policy.read_text().replace(
        "rank_by:\n", "rank_by:\n  - {metric: gene_coverage, higher_is_better: true}\n"))
    kept = promote("pancreas_small", coverage_first)
    assert not kept.changed and kept.run_id == pca.run_id and "has no recorded gene_coverage" in kept.note
    assert list(kept.ranking["run_id"]) == [head.run_id]  # the baseline is left out of the ranking, not last as NaN


def test_custom_aliases_and_a_missing_backbone_checkpoint(tiny_checkpoint, tmp_path):
    policy = tmp_path / "aliases.yaml"
    policy.write_text(POLICY.replace("champion: champion", "champion: production").replace(
        "previous: previous", "previous: rollback").replace("val_macro_f1: 0.2", "val_macro_f1: 0.0").replace(
        "test_macro_f1: 0.2", "test_macro_f1: 0.0"))
    head = _train(tiny_checkpoint, "head", epochs=1)
    tiny_checkpoint.rename(tmp_path / "moved_away")  # the runner's backbone is no longer where it was trained
    published = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   filter_string="tags.`scadapt.backbone_hash` != ''")[0]
    stored = Path(published.info.artifact_uri.removeprefix("file://"))
    stored.rename(tmp_path / "stored_away")  # ... and its copy in the artifact store is gone too
    with pytest.raises(ScadaptError, match="Cannot download the backbone checkpoint runs:/"):
        promote("pancreas_small", policy)
    (tmp_path / "stored_away").rename(stored)  # the copy in the artifact store is enough
    first = promote("pancreas_small", policy)
    assert first.run_id == head.run_id and "@production" in first.note
    (tmp_path / "moved_away").rename(tiny_checkpoint)
    # a registered model is also a checkpoint URI: its backbone, fetched once into the cache by its hash
    fetched = local_checkpoint("models:/scadapt-pancreas_small@production")
    assert fetched.parent.name == "by-hash" and fetched.name == load_backbone(tiny_checkpoint).weights_hash
    pca = _train(tiny_checkpoint, "pca_logreg", n_components=20)
    second = promote("pancreas_small", policy)
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias("scadapt-pancreas_small", "production").run_id == pca.run_id == second.run_id
    assert client.get_model_version_by_alias("scadapt-pancreas_small", "rollback").run_id == head.run_id


@pytest.mark.integration
def test_a_port_taken_before_the_server_binds_it_is_retried(tiny_checkpoint, lenient_policy, monkeypatch):
    import socket

    from scadapt.serving import server as server_module

    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    _train(tiny_checkpoint, "pca_logreg", n_components=20)
    promote("pancreas_small", lenient_policy)
    with socket.socket() as squatter:  # another process got the "free" port first
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, server_module.free_port()])
        monkeypatch.setattr(server_module, "free_port", lambda: next(ports))
        with serving("models:/scadapt-pancreas_small@champion") as base:
            assert not base.endswith(f":{taken}")
            assert requests.get(f"{base}/ping", timeout=5).status_code == 200


# -- promotion that holds ------------------------------------------------------------------------------------------

def test_a_winner_in_another_experiment_than_the_active_one_is_promoted(tiny_checkpoint, lenient_policy, tmp_path):
    """A ``train`` run promoted from a process whose active experiment is another (a benchmark's):
    MLflow refused to resume it ("active experiment ID does not match environment run ID")."""
    from scadapt.benchmark import BenchmarkConfig, run_benchmark

    trained = _train(tiny_checkpoint, "pca_logreg", n_components=20)
    mlflow.set_experiment("scadapt-benchmark")
    promoted = promote("pancreas_small", lenient_policy)
    assert promoted.changed and promoted.run_id == trained.run_id
    assert mlflow.get_run(trained.run_id).info.status == "FINISHED"
    result = run_benchmark(BenchmarkConfig(datasets=("pancreas_small",), strategies=("logreg",), regimes=("full",),
                                           folds=1, n_trials=1, policy=str(lenient_policy), progress=False, workers=1,
                                           output_dir=str(tmp_path / "out"), storage=f"sqlite:///{tmp_path / 'o.db'}"))
    assert "pancreas_small" in result.promotions and not result.tables.champions["pancreas_small"]["run_id"] == ""


def test_an_interrupted_promotion_leaves_the_run_finished_and_a_rerun_promotes(tiny_checkpoint, lenient_policy,
                                                                               monkeypatch):
    import importlib

    promote_module = importlib.import_module("scadapt.registry.promote")  # the module, not the function
    trained = _train(tiny_checkpoint, "pca_logreg", n_components=20)
    real = promote_module.log_served_model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the served model is logged (about 1.5 s)

    monkeypatch.setattr(promote_module, "log_served_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        promote("pancreas_small", lenient_policy)
    assert mlflow.get_run(trained.run_id).info.status == "FINISHED"  # it was FAILED: no candidate any more
    monkeypatch.setattr(promote_module, "log_served_model", real)
    assert promote("pancreas_small", lenient_policy).run_id == trained.run_id


@pytest.mark.integration
def test_two_promotions_at_once_give_one_champion_and_no_false_no_candidates(tiny_checkpoint, lenient_policy,
                                                                            tmp_path):
    import subprocess

    _train(tiny_checkpoint, "pca_logreg", n_components=20)
    command = [sys.executable, "-m", "scadapt.cli", "promote", "--data", "pancreas_small", "--policy",
               str(lenient_policy), "--storage", f"sqlite:///{tmp_path / 'locks.db'}"]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert not any("No candidate" in o for o in outputs)
    versions = mlflow.MlflowClient().search_model_versions("name = 'scadapt-pancreas_small'")
    assert len(versions) == 1  # registered once; the second promotion found it the champion already

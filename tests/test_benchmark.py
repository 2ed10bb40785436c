"""``benchmark``: the matrix completes, resumes without redoing cells, is ranked by the policy,
compared with the baselines, drawn, reported and ends with a champion."""

from __future__ import annotations

import json
import os
import socket
import sys

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import REPO
from mlflow import MlflowClient

from scadapt.benchmark import BenchmarkConfig, paired_comparison, rank_strategies, run_benchmark, summary_table
from scadapt.benchmark import cells as benchmark_cells
from scadapt.benchmark.local_workers import helper_settings, plan_workers, worker_share
from scadapt.benchmark.matrix import MatrixCell, progress_grid
from scadapt.benchmark.results import METRICS
from scadapt.cli import main
from scadapt.data.options import DataOptions
from scadapt.infra.errors import ScadaptError
from scadapt.registry import PromotionPolicy

FIGURES = ("full_label_macro_f1", "low_label_curves", "efficiency_pareto", "champion_per_class_f1")


def _config(checkpoint, tmp_path, **overrides) -> BenchmarkConfig:
    settings = dict(datasets=("pancreas_small",), strategies=("pca_logreg", "head"), regimes=("full", "low"),
                    label_fractions=(0.1,), n_folds=2, folds=2, n_trials=1, epochs=1, checkpoint=str(checkpoint) if checkpoint else None,
                    storage=f"sqlite:///{tmp_path / 'optuna.db'}", output_dir=str(tmp_path / "out"), progress=False,
                    max_seq_len=64, min_genes=50, workers=1)
    settings.update(overrides)
    return BenchmarkConfig(**settings)


def _runs(rows: list[dict]) -> pd.DataFrame:
    """A run table of made-up numbers; every metric not given is 0."""
    base = {"dataset": "d", "regime": "full", "setting": "full", "label_fraction": np.nan, "fold": np.nan,
            "held_out": "", "split": "", **dict.fromkeys(METRICS, 0.0), "run_id": ""}
    return pd.DataFrame([{**base, **row} for row in rows])


# -- the matrix, end to end ----------------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_two_by_two_by_two_matrix_completes_with_tables_figures_report_and_champion(tiny_checkpoint, tmp_path):
    result = run_benchmark(_config(tiny_checkpoint, tmp_path))

    runs = result.tables.runs
    assert len(runs) == 8 and result.cells_run == 8  # 2 strategies x (2 full + 2 low-10% folds)
    assert sorted(runs["split"].unique()) == ["full_fold0", "full_fold1", "low_10pct_fold0", "low_10pct_fold1"]
    assert set(runs.groupby(["setting", "strategy"]).size()) == {2}
    assert runs["test_macro_f1"].between(0, 1).all() and runs["run_id"].is_unique
    assert (runs.loc[runs["strategy"] == "head", "trainable_parameters"] > 0).all()

    summary = result.tables.summary
    assert len(summary) == 4 and (summary["n"] == 2).all()
    row = summary[(summary["setting"] == "full") & (summary["strategy"] == "pca_logreg")].iloc[0]
    values = runs[(runs["setting"] == "full") & (runs["strategy"] == "pca_logreg")]["test_macro_f1"]
    assert row["test_macro_f1_mean"] == pytest.approx(values.mean())
    assert row["test_macro_f1_std"] == pytest.approx(values.std(ddof=1))
    assert all(ranks == [1, 2] for ranks in result.tables.ranking.groupby("setting")["rank"].apply(list))
    paired = result.tables.paired
    assert set(zip(paired["strategy"], paired["baseline"], strict=True)) == {("head", "pca_logreg")}
    assert (paired["n_pairs"] == 2).all()

    # every cell run is nested under the benchmark's parent run, in one experiment
    parent = mlflow.get_run(result.parent_run_id)
    for run_id in runs["run_id"]:
        cell = mlflow.get_run(run_id)
        assert cell.info.experiment_id == parent.info.experiment_id and cell.info.status == "FINISHED"
    nested = {mlflow.get_run(r).data.tags.get("mlflow.parentRunId") for r in runs["run_id"]}
    assert result.parent_run_id in nested  # train runs; tuned cells are children of their study run
    assert parent.info.status == "FINISHED" and parent.data.metrics["cells"] == 8

    for stem in FIGURES:
        for suffix in ("png", "svg"):
            path = result.output_dir / "figures" / f"{stem}.{suffix}"
            assert path.is_file() and path.stat().st_size > 2000, path
    report = (result.output_dir / "report.md").read_text()
    assert "## pancreas_small" in report and "### low 10%" in report and "pca_logreg" in report
    assert "beat `pca_logreg`" in report
    assert pd.read_csv(result.output_dir / "tables" / "runs.csv").shape[0] == 8
    logged = {a.path for a in MlflowClient().list_artifacts(result.parent_run_id, "report")}
    assert {"report/report.md", "report/figures", "report/tables"} <= logged

    champion = MlflowClient().get_model_version_by_alias("scadapt-pancreas_small", "champion")
    assert champion.run_id in set(runs.loc[runs["regime"] == "full", "run_id"])
    assert result.tables.champions["pancreas_small"]["run_id"] == champion.run_id
    per_class = result.tables.per_class
    assert set(per_class["setting"]) == {"full", "low 10%"} and per_class["f1"].between(0, 1).all()


@pytest.mark.integration
def test_an_interrupted_benchmark_resumes_without_redoing_finished_cells(tiny_checkpoint, tmp_path, monkeypatch):
    cfg = _config(tiny_checkpoint, tmp_path, strategies=("pca_logreg",), regimes=("full", "low"), promote=False)
    trained = []
    real_train = benchmark_cells.train

    def train_then_interrupt(job):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(job.split)
        return real_train(job)

    monkeypatch.setattr(benchmark_cells, "train", train_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg)
    parent = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("scadapt-benchmark").experiment_id], "tags.`scadapt.benchmark_run` = 'true'")
    assert len(parent) == 1 and parent[0].info.status == "KILLED"
    # 3 cells finished: full_fold0 (the tuned trial) and two trained ones
    assert trained == ["full_fold1", "low_10pct_fold0"]

    # a cell run left RUNNING by a killed process is closed and its cell run again
    experiment_id = parent[0].info.experiment_id
    fingerprint = parent[0].data.tags["scadapt.benchmark"]
    stale = MlflowClient().create_run(experiment_id, tags={
        "scadapt.benchmark": fingerprint, "scadapt.cell": "pancreas_small/low_10pct_fold1/pca_logreg",
        "scadapt.worker": f"{socket.gethostname()}:999999999:0"}).info.run_id  # a pid that does not exist

    trained.clear()
    monkeypatch.setattr(benchmark_cells, "train", lambda job: (trained.append(job.split), real_train(job))[1])
    result = run_benchmark(cfg)
    assert trained == ["low_10pct_fold1"] and result.cells_run == 1
    assert result.parent_run_id == parent[0].info.run_id
    assert len(result.tables.runs) == 4 and result.tables.runs["run_id"].is_unique
    assert mlflow.get_run(stale).info.status == "FAILED"
    assert mlflow.get_run(result.parent_run_id).info.status == "FINISHED"

    again = run_benchmark(cfg)  # nothing left to do
    assert again.cells_run == 0 and trained == ["low_10pct_fold1"]
    # other settings are another benchmark: nothing is reused from this one
    other = run_benchmark(_config(tiny_checkpoint, tmp_path, strategies=("pca_logreg",), regimes=("full",),
                                  promote=False, n_trials=2))
    assert other.cells_run == 2 and other.fingerprint != result.fingerprint


def test_a_file_changed_under_the_same_path_is_a_new_result_and_an_unchanged_one_is_reused(pancreas, tmp_path):
    """A finished cell is found by its data's content, not its file name: one label, one value or one
    gene name changed in ``cells.h5ad`` runs the cell again (it printed the old scores before)."""
    path = tmp_path / "cells.h5ad"
    cfg = _config(None, tmp_path, datasets=(str(path),), strategies=("pca_logreg",), regimes=("full",), folds=1,
                  promote=False, reading=DataOptions(label_key="celltype"))

    def relabel(cells):
        cells.obs["celltype"] = cells.obs["celltype"].astype(str)
        cells.obs.iloc[0, cells.obs.columns.get_loc("celltype")] = "beta" if cells.obs["celltype"].iloc[0] != "beta" else "alpha"

    def revalue(cells):
        cells.X = cells.X.copy()
        cells.X.data[0] += 1.0

    def rename(cells):
        cells.var_names = ["NEWGENE1", *cells.var_names[1:]]

    pancreas.write_h5ad(path)
    assert run_benchmark(cfg).cells_run == 1
    assert run_benchmark(cfg).cells_run == 0  # the same content: reused
    for change in (relabel, revalue, rename):
        cells = pancreas.copy()
        change(cells)
        cells.write_h5ad(path)
        assert run_benchmark(cfg).cells_run == 1, change.__name__
    assert run_benchmark(cfg).cells_run == 0


def test_per_fold_tuning_gives_every_cell_its_own_study(tiny_checkpoint, tmp_path):
    cfg = _config(tiny_checkpoint, tmp_path, strategies=("pca_logreg",), regimes=("full",), tuning="per_fold",
                  n_trials=2, promote=False)
    result = run_benchmark(cfg)
    runs = [mlflow.get_run(r) for r in result.tables.runs["run_id"]]
    assert len(runs) == 2 and all("scadapt.trial" in r.data.tags for r in runs)
    studies = {mlflow.get_run(r.data.tags["mlflow.parentRunId"]).data.tags["scadapt.study"] for r in runs}
    assert len(studies) == 2 and all(s.rsplit("/", 1)[0].endswith(("full_fold0/pca_logreg", "full_fold1/pca_logreg"))
                                     for s in studies)  # the study name ends with the digest of its setup


@pytest.mark.integration
def test_helper_workers_share_the_matrix_and_give_the_results_of_one_worker(tiny_checkpoint, tmp_path):
    """Two processes on this machine split the cells; each study is run by one of them, so the
    chosen settings and the scores are those of a one-worker run."""
    # enough work that a helper, which needs seconds to start (imports, data, tokens), always gets some
    settings = dict(strategies=("lora", "head", "pca_logreg"), n_folds=3, folds=3, n_trials=2, epochs=12, promote=False)
    two = run_benchmark(_config(tiny_checkpoint, tmp_path / "two", workers=2, experiment="two", **settings))
    _, threads = plan_workers(2, "cpu", None, n_cells=18)
    with worker_share(1, threads):  # the same arithmetic: each of the two workers ran with this many torch threads
        one = run_benchmark(_config(tiny_checkpoint, tmp_path / "one", workers=1, experiment="one", **settings))

    assert two.cells_run == one.cells_run == 18  # every cell once, the helper's counted in the timing
    cells = mlflow.search_runs(experiment_names=["two"], output_format="list",
                               filter_string=f"tags.`scadapt.benchmark` = '{two.fingerprint}' and tags.`scadapt.cell` != ''")
    trials = [t for s in optuna.get_all_study_names(f"sqlite:///{tmp_path / 'two' / 'optuna.db'}")
              for t in optuna.load_study(study_name=s, storage=f"sqlite:///{tmp_path / 'two' / 'optuna.db'}").trials]
    workers = {r.data.tags["scadapt.worker"] for r in cells if "scadapt.worker" in r.data.tags}  # cells outside studies
    assert len(workers | {t.user_attrs["scadapt_worker"] for t in trials}) == 2  # both processes ran some
    columns = ["dataset", "strategy", "setting", "replicate", "test_macro_f1", "val_macro_f1", "test_accuracy"]
    tables = [r.tables.runs[columns].sort_values(columns[:4]).reset_index(drop=True) for r in (two, one)]
    pd.testing.assert_frame_equal(*tables, atol=1e-6, rtol=0)
    report = (tmp_path / "two" / "out" / "report.md").read_text()
    assert "2 worker processes on this machine shared the cells" in report


def test_a_helper_worker_reading_its_settings_from_json_joins_the_same_benchmark():
    """A helper reads the settings back from its JSON spec (tuples become lists); the fingerprint,
    which names the benchmark's cells and studies, must not change with it, or the helper runs
    every cell and study a second time under another name."""
    cfg = BenchmarkConfig(datasets=("pancreas_small",), regimes=("cross_study",), strategies=("pca_logreg",),
                          reading=DataOptions(study_groups={"celseq_family": ("celseq", "celseq2"), "rest": ("indrop",)}))
    helper = BenchmarkConfig(**json.loads(json.dumps(helper_settings(cfg))))
    assert helper.fingerprint("backbone", "torch.float32") == cfg.fingerprint("backbone", "torch.float32")
    assert BenchmarkConfig(**{**helper_settings(cfg), "reading": DataOptions(study_groups={"rest": ("indrop",)})}).fingerprint(
        "backbone", "torch.float32") != cfg.fingerprint("backbone", "torch.float32")  # the groups still count


def test_workers_are_planned_from_the_cores_the_device_and_the_work(monkeypatch):
    from scadapt.benchmark import local_workers

    monkeypatch.setattr(local_workers, "usable_cores", lambda: 8)
    monkeypatch.setattr(local_workers, "available_memory", lambda: 64 * 2**30)
    assert local_workers.plan_workers(0, "cpu", None, n_cells=100) == (4, 2)  # one per core, at most 4
    assert local_workers.plan_workers(0, "cpu", None, n_cells=3) == (3, 2)  # no more than there are cells
    assert local_workers.plan_workers(0, "cuda", None, n_cells=100) == (1, 8)  # they would share one GPU
    assert local_workers.plan_workers(6, "cuda:1", None, n_cells=100) == (6, 1)  # asked for
    assert local_workers.plan_workers(0, "cpu", "sqlite:///:memory:", n_cells=100) == (1, 8)  # cannot be shared
    assert local_workers.plan_workers(0, "cpu", None, n_cells=1) == (1, 8)
    monkeypatch.setattr(local_workers, "available_memory", lambda: 9 * 2**30)
    assert local_workers.plan_workers(0, "cpu", None, n_cells=100) == (2, 4)  # what the memory holds
    monkeypatch.setenv("SCADAPT_FROZEN_CACHE_MB", "3000")  # the frozen-layer cache's budget is shared out
    assert local_workers.share_env(3, 2)["SCADAPT_FROZEN_CACHE_MB"] == "1000"
    with pytest.raises(ScadaptError, match="workers must be 0"):
        BenchmarkConfig(workers=-1)


def test_cross_study_cells_come_only_from_datasets_with_technologies(tmp_path):
    cfg = _config(None, tmp_path, datasets=("pbmc68k_reduced", "pancreas_small"), strategies=("pca_logreg",),
                  regimes=("cross_study",))
    result = run_benchmark(cfg)  # expression-only: no backbone is made
    runs = result.tables.runs
    assert set(runs["dataset"]) == {"pancreas_small"} and set(runs["held_out"]) == {
        "plate_like", "celseq_family", "droplet_c1"}
    assert (result.output_dir / "figures" / "cross_study_heatmap.svg").stat().st_size > 2000
    # the policy promotes full-label runners only: the benchmark still ends, and says why there is no champion
    assert result.promotions == {}
    report = (result.output_dir / "report.md").read_text()
    assert "**No champion**: No candidate runs for pancreas_small in regimes full" in report
    # the report names only what ran, and no finished-before cells when there were none
    assert "x splits of cross_study (held-out technology groups)" in report and "label fractions" not in report
    assert "running all 3 cells" in report and "finished before" not in report
    untrained = result.tables.per_class[~result.tables.per_class["trained"]]
    if not untrained.empty:  # a class only the held-out technologies have is marked, not silently 0
        assert "Classes absent from the training cells of some splits" in report
        assert f"`{untrained['class'].iloc[0]}`" in report
    with pytest.raises(ScadaptError, match="matrix is empty"):  # no dataset here has technologies
        run_benchmark(_config(None, tmp_path, datasets=("pbmc68k_reduced",), strategies=("pca_logreg",),
                              regimes=("cross_study",)))


def test_bad_benchmark_settings_are_refused_with_a_message(tmp_path, capsys):
    code = main(["benchmark", "--datasets", "pancreas_small", "--strategies", "pca_logreg,head", "--regimes", "full",
                 "--n-folds", "2", "--output-dir", str(tmp_path / "cli"), "--checkpoint", str(tmp_path / "missing")])
    assert code == 2 and "missing does not exist" in capsys.readouterr().err
    for bad in (dict(tuning="grid"), dict(strategies=("nope",)), dict(n_folds=1), dict(regimes=())):
        with pytest.raises(ScadaptError, match="Bad benchmark settings"):
            BenchmarkConfig(**bad)


@pytest.mark.integration
def test_mlflow_project_benchmark_entry_point_makes_the_launcher_the_parent_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    submitted = mlflow.projects.run(
        str(REPO), entry_point="benchmark", env_manager="local", synchronous=True,
        parameters={"datasets": "pancreas_small", "strategies": "pca_logreg", "regimes": "full", "n_folds": 2,
                    "folds": 2, "n_trials": 1, "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
                    "output_dir": str(tmp_path / "out")},
    )
    parent = mlflow.get_run(submitted.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["scadapt.benchmark_run"] == "true"
    assert parent.data.metrics["cells"] == 2 and parent.data.metrics["cells_run"] == 2
    children = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.`mlflow.parentRunId` = '{submitted.run_id}'")
    assert any(c.data.tags.get("scadapt.cell", "").startswith("pancreas_small/full_fold1/pca_logreg@")
               for c in children)  # the cell's key and its data's content
    assert any(c.data.tags.get("scadapt.study_run") == "true" for c in children)
    assert (tmp_path / "out" / "report.md").is_file()
    assert MlflowClient().get_model_version_by_alias("scadapt-pancreas_small", "champion").run_id


# -- aggregation on made-up numbers -------------------------------------------------------------------------------
def test_ranking_follows_the_policy_and_its_tie_breaks():
    policy = PromotionPolicy.load()  # macro-F1, balanced accuracy, accuracy, fewer parameters, runtime; 3 decimals
    runs = _runs([
        {"strategy": "a", "test_macro_f1": 0.8001, "test_balanced_accuracy": 0.70},
        {"strategy": "b", "test_macro_f1": 0.8004, "test_balanced_accuracy": 0.75},  # equal F1 after rounding
        {"strategy": "c", "test_macro_f1": 0.8, "test_balanced_accuracy": 0.75, "test_accuracy": 0.9},
        {"strategy": "d", "test_macro_f1": 0.8, "test_balanced_accuracy": 0.75, "test_accuracy": 0.9,
         "trainable_parameters": 10, "runtime_sec": 5.0},
        {"strategy": "e", "test_macro_f1": 0.8, "test_balanced_accuracy": 0.75, "test_accuracy": 0.9,
         "trainable_parameters": 10, "runtime_sec": 1.0},
        {"strategy": "f", "test_macro_f1": 0.9, "val_macro_f1": 0.1},  # ranked on test, not validation
        {"strategy": "g", "test_macro_f1": 0.8, "test_balanced_accuracy": 0.75, "test_accuracy": 0.9,
         "trainable_parameters": 10, "runtime_sec": 1.0},  # identical to e: the name decides
    ])
    ranking = rank_strategies(summary_table(runs), policy)
    assert list(ranking["strategy"]) == ["f", "c", "e", "g", "d", "b", "a"]
    assert list(ranking["rank"]) == [1, 2, 3, 4, 5, 6, 7]


def test_summary_and_paired_comparison_over_folds():
    rows = []
    for fold, (pca, probe, lora) in enumerate([(0.70, 0.60, 0.75), (0.72, 0.62, 0.71), (0.68, 0.64, 0.80)]):
        for strategy, f1 in (("pca_logreg", pca), ("frozen_probe", probe), ("lora", lora)):
            rows.append({"strategy": strategy, "replicate": f"fold{fold}", "fold": fold, "test_macro_f1": f1})
    runs = _runs(rows)
    summary = summary_table(runs).set_index("strategy")
    assert summary.loc["lora", "test_macro_f1_mean"] == pytest.approx(np.mean([0.75, 0.71, 0.80]))
    assert summary.loc["lora", "test_macro_f1_std"] == pytest.approx(np.std([0.75, 0.71, 0.80], ddof=1))
    assert (summary["n"] == 3).all()

    paired = paired_comparison(runs).set_index(["strategy", "baseline"])
    vs_pca = paired.loc[("lora", "pca_logreg")]
    assert vs_pca["mean_diff"] == pytest.approx(np.mean([0.05, -0.01, 0.12]))
    assert (vs_pca["wins"], vs_pca["ties"], vs_pca["losses"]) == (2, 0, 1) and not vs_pca["beats"]
    vs_probe = paired.loc[("lora", "frozen_probe")]
    assert vs_probe["beats"] and vs_probe["wins"] == 3
    assert paired.loc[("frozen_probe", "pca_logreg"), "losses"] == 3
    assert ("pca_logreg", "pca_logreg") not in paired.index


def test_progress_grid_shows_the_matrix_filling():
    cells = [MatrixCell("d", "d", "full", f"full_fold{f}", s, fold=f) for s in ("x", "y") for f in (0, 1)]
    cells.append(MatrixCell("d", "d", "low", "low_1pct_fold0", "x", fold=0, label_fraction=0.01))
    grid = progress_grid(cells, {"d/full_fold0/x", "d/full_fold1/x", "d/full_fold0/y"})
    assert list(grid.columns) == ["full", "low 1%"]
    assert grid.loc[("d", "x"), "full"] == "2/2" and grid.loc[("d", "y"), "full"] == "1/2"
    assert grid.loc[("d", "x"), "low 1%"] == "0/1" and grid.loc[("d", "y"), "low 1%"] == "-"


@pytest.mark.integration
def test_benchmark_then_promote_then_benchmark_keeps_one_champion_without_duplicate_versions(tiny_checkpoint,
                                                                                               tmp_path):
    from scadapt.registry import promote
    from scadapt.registry.promote import recorded_metrics

    client = MlflowClient()
    policy = PromotionPolicy.load()
    first = run_benchmark(_config(None, tmp_path, strategies=("pca_logreg",), regimes=("full",)))
    champion = client.get_model_version_by_alias("scadapt-pancreas_small", "champion")
    assert first.promotions["pancreas_small"].version == str(champion.version)

    again = promote("pancreas_small")  # the promote command ranks the benchmark's cells too: nothing changes
    assert not again.changed and again.version == str(champion.version)

    second = run_benchmark(_config(None, tmp_path, strategies=("pca_logreg",), regimes=("full",), seed=1,
                                   output_dir=str(tmp_path / "second")))
    assert second.fingerprint != first.fingerprint and second.cells_run == 2
    final = client.get_model_version_by_alias("scadapt-pancreas_small", "champion")
    versions = client.search_model_versions("name = 'scadapt-pancreas_small'")
    assert len({v.run_id for v in versions}) == len(versions)  # no run registered twice
    assert len(versions) <= 2
    # the champion only moved if the new runner ranks better under the policy
    assert policy.standing(recorded_metrics(client, final)) <= policy.standing(recorded_metrics(client, champion))
    assert second.tables.champions["pancreas_small"]["run_id"] == final.run_id


def test_classes_a_split_never_trained_on_are_marked_in_the_report_and_figure(tmp_path):
    from conftest import synthetic_adata

    labels = ["a", "b"] * 30 + ["c"] * 10
    batches = ["x", "y", "z"] * 20 + ["z"] * 10  # class c only in technology z
    synthetic_adata(labels, batches, n_genes=60).write_h5ad(tmp_path / "toy.h5ad")
    result = run_benchmark(_config(None, tmp_path, datasets=(str(tmp_path / "toy.h5ad"),), strategies=("pca_logreg",),
                                   regimes=("cross_study",), reading=DataOptions(label_key="cell_type", batch_key="batch")))
    per_class = result.tables.per_class
    untrained = per_class[~per_class["trained"]]
    assert set(zip(untrained["class"], untrained["replicate"], strict=True)) == {("c", "z")}
    report = (result.output_dir / "report.md").read_text()
    assert "Classes absent from the training cells of some splits" in report and "`c` (held out with z)" in report
    assert (result.output_dir / "figures" / "champion_per_class_f1.png").stat().st_size > 2000


def test_a_claimed_cell_ends_the_runs_a_dead_worker_left_running():
    """A worker on another host died inside a cell, which released its claim; the worker that claims
    the cell ends that run (FAILED, with who closed it) and runs the cell again."""
    client = MlflowClient()
    experiment_id = client.create_experiment("bench-leftovers")
    tags = {"scadapt.benchmark": "abc", "scadapt.cell": "d/full_fold0/head", "scadapt.worker": "gpu-node-7:12:1.000"}
    left = client.create_run(experiment_id, tags=tags).info.run_id
    other = client.create_run(experiment_id, tags={**tags, "scadapt.cell": "d/full_fold1/head"}).info.run_id
    closed = benchmark_cells.close_leftover_runs(experiment_id, "abc", "d/full_fold0/head")
    assert [r.info.run_id for r in closed] == [left]
    run = client.get_run(left)
    assert run.info.status == "FAILED" and "claim" in run.data.tags["scadapt.closed_by"]
    assert client.get_run(other).info.status == "RUNNING"  # another cell's run is not touched

"""The console command and the MLflow project entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from conftest import REPO

from scadapt.backbone import load_backbone


def _scadapt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scadapt.cli", *args], capture_output=True, text=True, timeout=300)


def test_bad_checkpoint_gives_a_message_not_a_traceback(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "args.json").write_text("{}")
    result = _scadapt("pretrain", "--checkpoint", str(tmp_path / "ckpt"), "--epochs", "1")
    assert result.returncode == 2
    assert "scadapt: error: Model directory" in result.stderr and "lacks vocab.json, best_model.pt" in result.stderr
    assert "Traceback" not in result.stderr


def test_negative_values_give_a_message_not_a_traceback(tmp_path):
    adata = AnnData(np.random.default_rng(0).normal(size=(20, 300)).astype(np.float32))
    adata.var_names = [f"G{i}" for i in range(300)]
    adata.write_h5ad(tmp_path / "scaled.h5ad")
    result = _scadapt("pretrain", "--data", str(tmp_path / "scaled.h5ad"), "--epochs", "1")
    assert result.returncode == 2 and "negative values" in result.stderr and "Traceback" not in result.stderr


def test_truncated_h5ad_gives_a_message(tmp_path):
    blob = (REPO / "src/scadapt/data/bundled/pancreas_panc8_small.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(blob[:5000])
    result = _scadapt("pretrain", "--data", str(tmp_path / "cut.h5ad"), "--epochs", "1")
    assert result.returncode == 2 and "cut.h5ad" in result.stderr and "Traceback" not in result.stderr


def _project_python(monkeypatch) -> None:
    """`mlflow run` starts `python ...`: make that the interpreter running the tests."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.integration
def test_mlflow_project_main_entry_point_runs_the_pipeline(tmp_path, monkeypatch):
    _project_python(monkeypatch)
    submitted = mlflow.projects.run(str(REPO), env_manager="local", synchronous=True, parameters={
        "data": "pancreas_small", "strategies": "pca_logreg,head", "n_trials": 1, "epochs": 2, "pretrain_epochs": 1,
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}"})
    run = mlflow.get_run(submitted.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["champion_model"] == "scadapt-pancreas_small"
    demo = tmp_path / "cache" / "backbones" / "demo"  # SCADAPT_CACHE is the test's temp dir
    assert (demo / "args.json").is_file()  # pretrained on first use
    champion = mlflow.MlflowClient().get_model_version_by_alias("scadapt-pancreas_small", "champion")
    assert champion.run_id == run.data.tags["champion_run_id"]
    summary = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/summary/summary.csv"))
    assert set(summary["strategy"]) == {"pca_logreg", "head"} and summary["champion"].eq("*").sum() == 1
    studies = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                 filter_string="tags.`scadapt.study_run` = 'true'")
    assert {r.data.tags["strategy"] for r in studies} == {"pca_logreg", "head"}


@pytest.mark.integration
def test_mlflow_project_pretrain_entry_point(tmp_path, monkeypatch):
    _project_python(monkeypatch)
    out = tmp_path / "backbone"
    submitted = mlflow.projects.run(
        str(REPO), entry_point="pretrain", env_manager="local", synchronous=True,
        experiment_name="project-test",
        parameters={"data": "pancreas_small", "epochs": 1, "d_model": 16, "nlayers": 1, "nhead": 2,
                    "d_hid": 16, "max_seq_len": 64, "min_genes": 50, "output_dir": str(out)},
    )
    run = mlflow.get_run(submitted.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["d_model"] == "16" and "val_loss" in run.data.metrics
    assert load_backbone(out).config.d_model == 16


@pytest.mark.integration
def test_mlflow_project_train_entry_point_logs_a_comparable_run(tmp_path, monkeypatch):
    _project_python(monkeypatch)
    submitted = mlflow.projects.run(str(REPO), entry_point="train", env_manager="local", synchronous=True,
                                    parameters={"strategy": "pca_logreg", "hparams": "n_components=20"})
    run = mlflow.get_run(submitted.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dataset"] == "pancreas_small" and run.data.tags["strategy"] == "pca_logreg"
    assert run.data.params["n_components"] == "20" and run.data.tags["split"] == "full_fold0"
    # what was resolved is logged beside what the launcher logged as typed (label_key='', split='')
    assert run.data.params["data.label_key"] == "celltype" and run.data.params["split.name"] == "full_fold0"
    assert run.data.params["split.n_folds"] == "5" and run.data.params["seed"] in ("0", "0.0")
    for name in ("val_macro_f1", "test_macro_f1", "test_balanced_accuracy", "trainable_parameters", "runtime_sec",
                 "peak_rss_mb", "runner_size_bytes"):
        assert name in run.data.metrics
    artifacts = {f.path for f in mlflow.artifacts.list_artifacts(run_id=run.info.run_id)}
    assert {"annotator", "figures", "tables", "splits"} <= artifacts
    figures = {f.path for f in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="figures")}
    assert {"figures/confusion_test.png", "figures/umap_test.png"} <= figures


def test_unknown_hyperparameter_is_a_message(tmp_path):
    result = _scadapt("train", "--strategy", "pca_logreg", "--hparams", "n_components=10,depth=3")
    assert result.returncode == 2 and "Unknown hyperparameter(s) depth" in result.stderr


def test_hparams_help_lists_each_hyperparameter_with_its_meaning_range_and_search(tmp_path):
    result = _scadapt("tune", "--strategy", "lora", "--hparams", "help")
    assert result.returncode == 0, result.stderr
    assert "r = 8: rank of each update. Allowed: >= 1; searched: one of 4, 8, 16." in result.stdout
    assert "epochs = 10: most passes over the training cells. Allowed: >= 1; searched: fixed." in result.stdout


def test_mlproject_is_written_from_the_command_options():
    from mlproject import MLPROJECT, mlproject_text

    assert MLPROJECT.read_text() == mlproject_text(), "MLproject is out of date: run python tools/mlproject.py"
    spec = mlflow.projects._project_spec.load_project(str(REPO))
    for entry in ("main", "benchmark", "train", "tune"):  # one definition of the data options everywhere
        assert {"label_key", "batch_key", "layer", "gene_column", "drop_rare_classes", "study_groups"} <= \
            set(spec.get_entry_point(entry).parameters)


def test_every_strategy_name_is_a_module_registering_that_strategy_and_all_means_all():
    from mlproject import mlproject_text

    from scadapt.strategies import NAMES, all_strategies, baselines, get_strategy

    assert [cls.name for cls in all_strategies().values()] == list(NAMES)
    assert {n for n in NAMES if not get_strategy(n).needs_backbone} == {"pca_logreg", "logreg", "mlp"}
    assert set(baselines()) == {"pca_logreg", "logreg", "mlp", "frozen_probe"}
    text = mlproject_text()
    assert ",".join(NAMES) in text  # the MLproject's "all strategies" is the registry's list


def test_options_are_parsed_before_any_heavy_import():
    probe = ("import sys; from scadapt.cli import build_parser\n"
             "for argv in (['pipeline', '--data', 'x.h5ad', '--label-key', 'y'], ['benchmark'], ['tune'], ['pretrain']):\n"
             "    build_parser().parse_args(argv)\n"
             "print(sorted(m for m in ('torch', 'anndata', 'mlflow', 'optuna', 'scanpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_undeclared_mlflow_parameters_reach_the_options_too():
    from scadapt.cli import build_parser
    from scadapt.infra.options import dashed_option_names

    # `mlflow run -P name=value` passes a parameter the entry point does not declare as --name value
    argv = dashed_option_names(["pipeline", "--label_key", "cell_type", "--drop_rare_classes", "true",
                                "--study_groups=a:x_1;b:y_2"])
    args = build_parser().parse_args(argv)
    assert args.label_key == "cell_type" and args.drop_rare_classes is True
    assert args.study_groups == {"a": ("x_1",), "b": ("y_2",)}  # values keep their underscores

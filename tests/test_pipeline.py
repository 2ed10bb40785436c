"""The main job on a user's own ``.h5ad``: its keys through ``mlflow run``, checks before any work,
gene coverage that is visible and fixable, diverging fits that never become candidates."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anndata as ad
import mlflow
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import REPO

from scadapt.data.options import DataOptions
from scadapt.infra.errors import ScadaptError, TrainingDiverged
from scadapt.jobs import tune
from scadapt.jobs.config import TrainJob, TuneJob
from scadapt.jobs.train import train
from scadapt.pipeline import pipeline_config, run_pipeline


def _user_file(pancreas, path: Path, extra_genes: int = 0) -> Path:
    """The pancreas cells as a user would bring them: counts in a layer, log values in X, Ensembl
    ids as var_names with symbols in a column, labels and technologies under other names."""
    counts = pancreas.X.toarray()
    symbols = list(pancreas.var_names)
    if extra_genes:  # genes no vocabulary here knows, expressed like the others
        rng = np.random.default_rng(0)
        counts = np.hstack([counts, rng.poisson(0.3, (pancreas.n_obs, extra_genes))]).astype(np.float32)
        symbols += [f"NOVEL{i}" for i in range(extra_genes)]
    logged = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4)
    user = ad.AnnData(sp.csr_matrix(logged.astype(np.float32)), layers={"counts": sp.csr_matrix(counts)})
    user.obs_names = pancreas.obs_names
    user.var_names = [f"ENSG{i:011d}" for i in range(len(symbols))]
    user.var["symbol"] = symbols
    source = ad.read_h5ad(REPO / "src/scadapt/data/bundled/pancreas_panc8_small.h5ad")
    user.obs["cell_label"] = source.obs["celltype"].astype(str).to_numpy()
    user.obs["platform"] = source.obs["tech"].astype(str).to_numpy()
    user.write_h5ad(path)
    return path


KEYS = {"label_key": "cell_label", "batch_key": "platform", "layer": "counts", "gene_column": "symbol"}


@pytest.mark.integration
def test_main_entry_point_on_a_user_h5ad_with_its_keys(pancreas, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    data = _user_file(pancreas, tmp_path / "my_islets.h5ad")
    submitted = mlflow.projects.run(str(REPO), env_manager="local", synchronous=True, parameters={
        "data": str(data), **KEYS, "strategies": "pca_logreg", "n_trials": 1,
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}"})
    run = mlflow.get_run(submitted.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["champion_model"] == "scadapt-my_islets"
    assert run.data.params["data.label_key"] == "cell_label" and run.data.params["data.gene_column"] == "symbol"
    assert not (tmp_path / "cache" / "backbones").exists()  # no strategy needs a backbone: none pretrained
    study = mlflow.search_runs(search_all_experiments=True, output_format="list",
                               filter_string="tags.`scadapt.study_run` = 'true'")[0]
    assert study.info.run_name.startswith("pca_logreg study my_islets")  # the strategy leads the run name
    assert study.data.params["data.layer"] == "counts" and study.data.params["data.n_classes"] == "6"
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs


def test_low_gene_coverage_is_logged_and_warned_with_the_remedies(pancreas, tiny_checkpoint, tmp_path):
    data = _user_file(pancreas, tmp_path / "wide.h5ad", extra_genes=3000)
    policy = tmp_path / "strict.yaml"  # gates no runner on a random backbone can pass
    policy.write_text((REPO / "registry" / "policy.yaml").read_text().replace("val_macro_f1: 0.2", "val_macro_f1: 0.99"))
    result = run_pipeline(pipeline_config(
        data=str(data), **KEYS, strategies=("head",), n_trials=1, epochs=1, checkpoint=str(tiny_checkpoint),
        min_genes=50, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False, policy=str(policy),
        max_seq_len=64))
    assert result.promotion is None  # no runner passes the quality gates: said, not a crash
    assert "No champion for wide" in result.warnings[-1] and "quality gates" in result.warnings[-1]
    assert result.coverage.n_matched == 2000 and result.coverage.fraction == pytest.approx(0.4)
    assert len(result.warnings) == 2 and "Low gene coverage: only wide: 2000 of 5000 genes (40.0%)" in result.warnings[0]
    assert "--checkpoint DIR" in result.warnings[0] and "--pretrain-data cells.h5ad" in result.warnings[0]
    assert result.summary.loc[0, "gene_coverage"] == pytest.approx(0.4)
    best = mlflow.get_run(result.summary.set_index("strategy").loc["head", "run_id"])  # the study's best trial
    assert best.data.metrics["gene_coverage"] == pytest.approx(0.4)
    pipeline = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="tags.`scadapt.entry_point` = 'main'")[0]
    assert "Low gene coverage" in pipeline.data.tags["scadapt.warnings"]
    assert pipeline.data.metrics["gene_coverage"] == pytest.approx(0.4)
    warnings = mlflow.artifacts.download_artifacts(f"runs:/{pipeline.info.run_id}/summary/warnings.txt")
    assert "pretrain" in Path(warnings).read_text()


@pytest.mark.integration
def test_pretrain_data_gives_the_demo_backbone_the_users_genes(pancreas, tmp_path):
    data = _user_file(pancreas, tmp_path / "wide.h5ad", extra_genes=300)
    result = run_pipeline(pipeline_config(
        data=str(data), **KEYS, strategies=("head",), n_trials=1, epochs=1, pretrain_epochs=1,
        pretrain_data=(str(data),), storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False))
    assert result.coverage.fraction == 1.0 and not any("coverage" in w for w in result.warnings)
    backbones = list((tmp_path / "cache" / "backbones").iterdir())
    assert [b.name[:5] for b in backbones] == ["demo-"]  # its own folder: the bundled demo backbone is untouched
    pipeline = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="tags.`scadapt.entry_point` = 'main'")[0]
    assert pipeline.data.params["backbone.pretrained_on"] == str(data)
    assert pipeline.data.params["backbone.pretrained_on_labelled_data"] == "True"


def test_checks_fail_before_any_pretraining(pancreas, tmp_path):
    data = _user_file(pancreas, tmp_path / "cells.h5ad")
    with pytest.raises(ScadaptError, match="Label key 'celltype' is not a column"):
        run_pipeline(pipeline_config(data=str(data), reading=DataOptions(label_key="celltype", layer="counts", gene_column="symbol"),
                                    strategies=("head",), progress=False))
    with pytest.raises(ScadaptError, match="negative values"):  # bad pretraining data is read and checked first
        bad = ad.AnnData(np.full((20, 300), -1.0, dtype=np.float32), layers={"counts": np.full((20, 300), -1.0)})
        bad.var["symbol"] = [f"G{i}" for i in range(300)]
        bad.write_h5ad(tmp_path / "scaled.h5ad")
        run_pipeline(pipeline_config(data=str(data), **KEYS, strategies=("head",), pretrain_data=(str(tmp_path / "scaled.h5ad"),),
                                    progress=False))
    assert not (tmp_path / "cache" / "backbones").exists()
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_a_diverging_fit_fails_and_is_never_a_candidate(tiny_checkpoint, tmp_path):
    settings = dict(data="pancreas_small", strategy="head", checkpoint=str(tiny_checkpoint), max_seq_len=64,
                    min_genes=50, progress=False, umap=False)
    explosive = {"lr": 1e30, "max_grad_norm": 1e30, "epochs": 3}
    with pytest.raises(TrainingDiverged, match="loss became nan .* never a candidate"):
        train(TrainJob(**settings, hparams=explosive))
    failed = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    assert failed.info.status == "FAILED" and "scadapt.candidate" not in failed.data.tags
    with pytest.raises(ScadaptError, match="No trial of study .* completed \\(2 fail\\)"):
        tune(TuneJob(**settings, hparams=explosive, n_trials=2, storage=f"sqlite:///{tmp_path / 'optuna.db'}"))
    trials = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.`scadapt.trial` != ''")
    assert len(trials) == 2 and {t.info.status for t in trials} == {"FAILED"}


def test_clamped_settings_are_logged_as_used(tmp_path):
    result = train(TrainJob(data="pancreas_small", strategy="pca_logreg", hparams={"n_components": 5000},
                            progress=False, umap=False))
    params = mlflow.get_run(result.run_id).data.params
    assert params["n_components"] == "5000" and int(params["used.n_components"]) < 5000


def test_summary_has_the_measured_columns(pancreas, tmp_path):
    result = run_pipeline(pipeline_config(data="pancreas_small", strategies=("pca_logreg",), n_trials=1,
                                         storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False))
    assert list(result.summary.columns[:9]) == ["strategy", "test_macro_f1", "test_balanced_accuracy", "test_accuracy",
                                                "val_macro_f1", "trainable_parameters", "runtime_sec", "peak_rss_mb",
                                                "gene_coverage"]
    assert result.coverage is None and pd.isna(result.summary.loc[0, "gene_coverage"])  # no backbone, no coverage


def test_a_lone_nan_loss_is_skipped_and_a_persistent_one_is_divergence():
    import torch

    from scadapt.fitting.classifier import fit_classifier
    from scadapt.fitting.sources import EmbeddingSource
    from scadapt.models.head import BackboneClassifier, ClassifierHead
    from scadapt.strategies import get_strategy

    rng = np.random.default_rng(0)
    codes = np.repeat([0, 1], 40)
    embeddings = rng.normal(size=(80, 8)).astype(np.float32) + codes[:, None] * 2.0
    train_idx, val_idx = np.arange(0, 80, 2), np.arange(1, 80, 2)
    config = get_strategy("head").config_class(epochs=5, batch_size=8, patience=10, lr=0.05)
    device = torch.device("cpu")

    def fit(values: np.ndarray):
        model = BackboneClassifier(torch.nn.Identity(), ClassifierHead(8, 2, n_layers=1))
        return model, fit_classifier(EmbeddingSource(model.head, values, device), codes, train_idx, val_idx, 2, config,
                                     device, progress=False)

    one_bad_cell = embeddings.copy()
    one_bad_cell[train_idx[0]] = np.nan  # its batch's loss is NaN once per epoch: skipped, not fatal
    model, result = fit(one_bad_cell)
    assert all(torch.isfinite(p).all() for p in model.parameters()) and result.best_val_macro_f1 > 0.8
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        fit(np.full_like(embeddings, np.nan))


@pytest.mark.integration
def test_a_data_warning_is_said_once_per_job_and_the_report_is_named_where_it_lasts(pancreas, tmp_path):
    """Two worker processes prepare the same data for every fit: the dropped class is still
    reported once, and the closing lines name the report on its MLflow run (the folder it was
    written to is temporary)."""
    import subprocess

    data = _user_file(pancreas, tmp_path / "islets.h5ad")
    cells = ad.read_h5ad(data)
    labels = cells.obs["cell_label"].astype(str).to_numpy()
    labels[np.flatnonzero(labels == labels[0])[:3]] = "rare_type"  # 3 cells: too few for 5 folds
    cells.obs["cell_label"] = labels
    cells.write_h5ad(data)
    done = subprocess.run(
        [sys.executable, "-m", "scadapt.cli", "pipeline", "--data", str(data), "--label-key", "cell_label",
         "--batch-key", "platform", "--layer", "counts", "--gene-column", "symbol", "--drop-rare-classes",
         "--strategies", "pca_logreg,logreg,mlp", "--n-trials", "2", "--epochs", "2", "--workers", "2",
         "--storage", f"journal:{tmp_path / 'studies.journal'}"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "SCADAPT_CACHE": str(tmp_path / "cache")})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "helper worker" in output.lower()  # a second process ran cells
    assert output.count("Dropped 3 cells of 1 rare class(es)") == 1, output[-6000:]
    closing = [line for line in done.stdout.splitlines() if line.startswith("Report:")]
    assert len(closing) == 1 and str(tmp_path) not in closing[0] and "/tmp/" not in closing[0]
    run_id = closing[0].split("MLflow run ")[1].split()[0]
    assert "report.md" in {Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(run_id, "report")}


def test_the_main_job_preset_refuses_unknown_or_fixed_settings():
    with pytest.raises(ScadaptError, match=r"Unknown pipeline settings n_trail; known: .*n_trials"):
        pipeline_config(n_trail=5)
    with pytest.raises(ScadaptError, match="sets folds, regimes itself"):
        pipeline_config(regimes=("low",), folds=3)
    cfg = pipeline_config("pancreas_small", n_trials=2, max_seq_len=64)
    assert (cfg.datasets, cfg.regimes, cfg.folds, cfg.n_trials, cfg.max_seq_len) == (("pancreas_small",), ("full",), 1, 2, 64)
    assert cfg.experiment == "scadapt-pancreas_small"

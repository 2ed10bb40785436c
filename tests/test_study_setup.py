"""A study is its setup: a tune call with another data content, split, backbone, fixed setting,
layers, seed or precision never reuses another setup's trials; the same setup reuses them; a
study joined by name with another setup is refused, naming the difference; fixed settings are
not sampled, and what is logged is what the fits used."""

from __future__ import annotations

import shutil

import anndata as ad
import mlflow
import numpy as np
import optuna
import pytest
from conftest import random_backbone

from scadapt.backbone import save_backbone
from scadapt.data import CATALOG
from scadapt.data.options import DataOptions
from scadapt.infra.errors import ScadaptError
from scadapt.jobs import TuneJob, tune
from scadapt.tokenization import GeneVocab


@pytest.fixture
def own_file(tmp_path):
    """The bundled pancreas cells as a user's own .h5ad."""
    path = tmp_path / "cells.h5ad"
    shutil.copy(CATALOG["pancreas_small"].source.path, path)
    return path


def _job(data, checkpoint, **overrides) -> TuneJob:
    settings = dict(data=str(data), reading=DataOptions(label_key="celltype", batch_key="tech"), strategy="head",
                    checkpoint=str(checkpoint), hparams={"epochs": 1, "batch_size": 64}, n_trials=1,
                    storage="sqlite:///optuna.db", max_seq_len=64, min_genes=50, progress=False, umap=False,
                    pruning="none")
    settings.update(overrides)
    return TuneJob(**settings)


def _trials(storage: str = "sqlite:///optuna.db") -> dict[str, int]:
    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}


def test_each_setting_that_changes_a_result_starts_a_study_of_its_own(own_file, tiny_checkpoint, tmp_path,
                                                                        monkeypatch, pancreas):
    first = tune(_job(own_file, tiny_checkpoint))
    again = tune(_job(own_file, tiny_checkpoint))  # the same setup twice: the study and its result are reused
    assert (again.study_name, again.parent_run_id, again.best_run_id) == \
           (first.study_name, first.parent_run_id, first.best_run_id)
    assert _trials() == {first.study_name: 1}

    other_backbone = tmp_path / "other_ckpt"
    save_backbone(random_backbone(GeneVocab.from_genes(pancreas.var_names), seed=1), GeneVocab.from_genes(
        pancreas.var_names), other_backbone)
    changes = {
        "backbone weights": lambda: _job(own_file, other_backbone),
        "split": lambda: _job(own_file, tiny_checkpoint, split="full_fold1"),
        "fixed hyperparameters": lambda: _job(own_file, tiny_checkpoint, hparams={"epochs": 2, "batch_size": 64}),
        "seed": lambda: _job(own_file, tiny_checkpoint, seed=1),
        "tokens per cell": lambda: _job(own_file, tiny_checkpoint, max_seq_len=48),
    }
    seen = {first.study_name}
    for what, job in changes.items():
        result = tune(job())
        assert result.study_name not in seen, what
        assert result.parent_run_id != first.parent_run_id, what
        seen.add(result.study_name)
    with monkeypatch.context() as env:
        env.setenv("SCADAPT_PRECISION", "bf16")
        assert tune(_job(own_file, tiny_checkpoint)).study_name not in seen
    seen = set(_trials())

    cells = ad.read_h5ad(own_file)  # the same file name, other values in it
    cells.X = cells.X.copy()
    cells.X[0] = cells.X[0] * 2
    cells.write_h5ad(own_file)
    changed = tune(_job(own_file, tiny_checkpoint))
    assert changed.study_name not in seen and changed.best_run_id != first.best_run_id
    assert all(n == 1 for n in _trials().values())  # no study got another setup's trial


def test_the_layers_of_a_strategy_are_part_of_its_setup(own_file, tiny_checkpoint):
    one = tune(_job(own_file, tiny_checkpoint, strategy="lora", hparams={"epochs": 1, "layers": 1}))
    two = tune(_job(own_file, tiny_checkpoint, strategy="lora", hparams={"epochs": 1, "layers": 2}))
    assert one.study_name != two.study_name and one.parent_run_id != two.parent_run_id


def test_joining_a_named_study_with_another_setup_is_refused_naming_the_difference(own_file, tiny_checkpoint):
    tune(_job(own_file, tiny_checkpoint, study_name="mine"))
    with pytest.raises(ScadaptError, match=r"Study 'mine' was run with another setup.*seed: 0 in the study, 1 now"):
        tune(_job(own_file, tiny_checkpoint, study_name="mine", seed=1))
    with pytest.raises(ScadaptError, match=r"another setup.*hparams: .*\"epochs\": 1.* in the study, .*\"epochs\": 2"):
        tune(_job(own_file, tiny_checkpoint, study_name="mine", hparams={"epochs": 2, "batch_size": 64}))
    assert _trials() == {"mine": 1}
    tune(_job(own_file, tiny_checkpoint, study_name="mine", n_trials=2))  # the same setup joins
    assert _trials() == {"mine": 2}


def test_a_named_study_without_a_recorded_setup_is_not_trusted(own_file, tiny_checkpoint):
    study = optuna.create_study(storage="sqlite:///optuna.db", study_name="old", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.99, params={}, distributions={}))
    with pytest.raises(ScadaptError, match="has trials but no recorded setup"):
        tune(_job(own_file, tiny_checkpoint, study_name="old"))


def test_fixed_settings_are_not_sampled_and_the_logged_settings_are_the_ones_used(own_file, tiny_checkpoint):
    result = tune(_job(own_file, tiny_checkpoint, n_trials=2, hparams={"epochs": 1, "batch_size": 64, "lr": 0.004}))
    study = optuna.load_study(study_name=result.study_name, storage="sqlite:///optuna.db")
    assert all("lr" not in t.params and "weight_decay" in t.params for t in study.trials)
    assert result.best_params["lr"] == 0.004 and result.best_params["epochs"] == 1
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.data.tags["best.lr"] == "0.004" and parent.data.tags["best.epochs"] == "1"
    assert parent.data.tags["best.weight_decay"] == str(study.best_trial.params["weight_decay"])
    children = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert len(children) == 2 and all(float(c.data.params["lr"]) == 0.004 for c in children)
    assert np.isclose(float(mlflow.get_run(result.best_run_id).data.params["weight_decay"]),
                      study.best_trial.params["weight_decay"])

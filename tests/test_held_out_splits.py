"""Held-out technologies judged fairly: the ``mlp`` baseline clips its standardised genes; with
``--tuning reuse`` every held-out split is tuned on its own validation cells (never with settings
chosen where another technology was held out); ``--drop-rare-classes`` drops the same classes in
every regime of a run (the most any regime needs); the report names, per held-out split, the test
classes that its training cells lack or hold fewer than the regime's minimum of."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from scadapt.benchmark import run_benchmark
from scadapt.benchmark.config import BenchmarkConfig
from scadapt.benchmark.matrix import dataset_splits
from scadapt.benchmark.report import _thin_classes
from scadapt.data import load_expression
from scadapt.data.options import DataOptions
from scadapt.tracking.contract import TUNED_BY_TAG


@pytest.fixture
def with_rare_classes(tmp_path):
    """pancreas_small with a 3-cell class (too small for 5 folds, enough for cross_study) and a
    class found in one technology only."""
    adata = load_expression("pancreas_small").copy()
    labels = adata.obs["celltype"].astype(str).to_numpy().copy()
    tech = adata.obs["tech"].astype(str).to_numpy()
    labels[np.flatnonzero(tech == "celseq")[:3]] = "rare"
    labels[np.flatnonzero(tech == "smartseq2")[:6]] = "smartseq_only"
    adata.obs["celltype"] = pd.Categorical(labels)
    path = tmp_path / "rare.h5ad"
    adata.write_h5ad(path)
    return str(path)


def _classes(path: str, cfg: BenchmarkConfig) -> dict[str, set[str]]:
    """The classes of every split of the run (of the cells as loaded for it)."""
    loaded = []
    splits = dataset_splits(path, cfg, inspect=lambda adata, name: loaded.append(adata))
    labels = loaded[0].obs["celltype"].astype(str).to_numpy()
    assert all(split.train.max() < len(labels) for _, split, _, _, _ in splits)  # one loading serves every regime
    return {split.name: set(labels[np.concatenate([split.train, split.validation, split.test])])
            for _, split, _, _, _ in splits}


def test_dropping_rare_classes_leaves_one_class_set_in_every_regime(with_rare_classes):
    cfg = BenchmarkConfig(datasets=(with_rare_classes,), regimes=("full", "cross_study"), folds=1,
                          reading=DataOptions(label_key="celltype", batch_key="tech", drop_rare_classes=True))
    assert cfg.reading.min_cells_per_class == 5  # the full regime's need, for cross_study too
    classes = _classes(with_rare_classes, cfg)
    assert {"full_fold0", "cross_study_smartseq2"} <= set(classes)
    assert len({frozenset(c) for c in classes.values()}) == 1  # the same classes in every split of the run
    assert "rare" not in classes["full_fold0"]

    # a run of cross_study alone needs 2 cells per class: the 3-cell class stays
    alone = BenchmarkConfig(datasets=(with_rare_classes,), regimes=("cross_study",),
                            reading=DataOptions(label_key="celltype", batch_key="tech", drop_rare_classes=True))
    assert all("rare" in c for c in _classes(with_rare_classes, alone).values())


def test_the_report_names_the_classes_a_held_out_split_never_trained_on(with_rare_classes):
    cfg = BenchmarkConfig(datasets=(with_rare_classes,), regimes=("full", "cross_study"), folds=1,
                          reading=DataOptions(label_key="celltype", batch_key="tech", drop_rare_classes=True))
    thin = {f"{name}/{split.name}": classes for name, split, _, classes, _ in dataset_splits(with_rare_classes, cfg)}
    name = next(iter(thin)).split("/")[0]
    assert thin[f"{name}/full_fold0"] == ()  # only held-out splits are looked at
    assert any(c.startswith("smartseq_only (0 training, 6 test cells)") for c in thin[f"{name}/cross_study_smartseq2"])
    assert not any("smartseq_only" in c for key, classes in thin.items() if "smartseq2" not in key for c in classes)
    lines = "\n".join(_thin_classes(thin, name, cfg.reading.min_cells_per_class))
    assert "`cross_study_smartseq2`: smartseq_only (0 training, 6 test cells)" in lines
    assert "fewer than 5 cells" in lines


def test_with_reuse_each_held_out_split_has_its_own_study_and_the_folds_share_one(tmp_path):
    result = run_benchmark(BenchmarkConfig(
        datasets=("pancreas_small",), strategies=("logreg",), regimes=("full", "cross_study"), n_folds=2, folds=2,
        n_trials=2, tuning="reuse", storage=f"sqlite:///{tmp_path / 'optuna.db'}", output_dir=str(tmp_path / "out"),
        progress=False, workers=1))
    runs = result.tables.runs.set_index("split")
    tuned_by = {split: mlflow.get_run(run_id).data.tags.get(TUNED_BY_TAG) for split, run_id in runs["run_id"].items()}
    held_out = [s for s in tuned_by if s.startswith("cross_study_")]
    assert len(held_out) == 3 and all(tuned_by[s] is None for s in held_out)  # each a study's own best trial
    assert tuned_by["full_fold0"] is None and tuned_by["full_fold1"]  # fold 1 reuses fold 0's study
    parents = {mlflow.get_run(runs.loc[s, "run_id"]).data.tags.get("mlflow.parentRunId") for s in held_out}
    assert len(parents) == 3  # three studies, one per held-out technology group


def test_the_mlp_clips_standardised_genes_so_one_gene_cannot_decide_alone():
    from scadapt.models.expression import NetworkExpressionAnnotator
    from scadapt.strategies.mlp import MLPConfig

    # one layer: the network's features are its standardised inputs
    clipped = NetworkExpressionAnnotator.make_network(3, 2, 1, 4, input_clip=MLPConfig().max_scaled)
    unclipped = NetworkExpressionAnnotator.make_network(3, 2, 1, 4)
    training = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0], [2.0, 2.0, 0.001]])  # gene 3 nearly constant
    for network in (clipped, unclipped):
        network.set_standardization(training)
    other_technology = torch.tensor([[2.0, 2.0, 5.0], [2.0, 2.0, -5.0]])  # gene 3: thousands of standard deviations
    assert unclipped.features(other_technology)[:, 2].abs().min() > 1000
    assert clipped.features(other_technology)[:, 2].tolist() == [10.0, -10.0]
    assert torch.equal(clipped.features(training), unclipped.features(training))  # within the clip, unchanged

"""Evaluation regimes: sizes, no leakage, low-label counts, held-out technologies, determinism."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_adata

from scadapt.data import load_dataset, load_splits, make_splits, save_splits
from scadapt.infra.errors import InputDataError


@pytest.fixture(scope="module")
def pbmc_data():
    return load_dataset("pbmc68k_reduced")


@pytest.fixture(scope="module")
def pancreas_data():
    return load_dataset("pancreas_small")


def _labels(adata, indices):
    return pd.Series(adata.obs["bulk_labels" if "bulk_labels" in adata.obs else "celltype"].to_numpy()[indices])


def _assert_disjoint(split):
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])


def test_full_folds_partition_the_cells_and_are_stratified(pbmc_data):
    splits = make_splits(pbmc_data, "full")
    assert [s.name for s in splits] == [f"full_fold{k}" for k in range(5)]
    tests = np.concatenate([s.test for s in splits])
    assert sorted(tests) == list(range(pbmc_data.n_obs))  # every cell is tested exactly once
    totals = _labels(pbmc_data, np.arange(pbmc_data.n_obs)).value_counts()
    for split in splits:
        _assert_disjoint(split)
        assert sum(split.sizes().values()) == pbmc_data.n_obs
        per_class = _labels(pbmc_data, split.test).value_counts().reindex(totals.index, fill_value=0)
        assert (abs(per_class - totals / 5) <= 1).all()
        rest = totals - per_class
        val = _labels(pbmc_data, split.validation).value_counts().reindex(totals.index, fill_value=0)
        assert (abs(val - rest * 0.2) <= 1).all() and (val >= 1).all()


def test_splits_are_deterministic_in_the_seed(pbmc_data):
    first, again = make_splits(pbmc_data, "low", seed=3), make_splits(pbmc_data, "low", seed=3)
    for a, b in zip(first, again, strict=True):
        assert a.name == b.name
        for part in ("train", "validation", "test"):
            assert np.array_equal(a.part(part), b.part(part))
    other = make_splits(pbmc_data, "full", seed=4)
    assert not np.array_equal(make_splits(pbmc_data, "full", seed=3)[0].test, other[0].test)


def test_low_label_counts_nesting_and_unchanged_evaluation(pbmc_data):
    full = {s.fold: s for s in make_splits(pbmc_data, "full", folds=[0, 2])}
    low = make_splits(pbmc_data, "low", folds=[0, 2], label_fractions=(0.1, 0.01, 0.05))
    assert [s.name for s in low] == [f"low_{p}pct_fold{f}" for f in (0, 2) for p in (1, 5, 10)]
    previous: set[int] = set()
    for split in low:
        base = full[split.fold]
        assert np.array_equal(split.test, base.test) and np.array_equal(split.validation, base.validation)
        assert set(split.train) <= set(base.train)
        fraction = split.label_fraction
        expected = _labels(pbmc_data, base.train).value_counts().map(lambda n, f=fraction: max(1, round(n * f)))
        assert _labels(pbmc_data, split.train).value_counts().sort_index().equals(expected.sort_index())
        if split.label_fraction > 0.01:
            assert previous <= set(split.train)  # 1% within 5% within 10%
        previous = set(split.train)


def test_cross_study_holds_out_whole_technologies(pancreas_data):
    splits = make_splits(pancreas_data, "cross_study")
    tech = pancreas_data.obs["tech"].to_numpy()
    assert [s.name for s in splits] == ["cross_study_plate_like", "cross_study_celseq_family", "cross_study_droplet_c1"]
    for split in splits:
        _assert_disjoint(split)
        held = np.isin(tech, split.held_out)
        assert np.array_equal(split.test, np.flatnonzero(held))
        assert not held[split.train].any() and not held[split.validation].any()
        assert len(split.train) + len(split.validation) == (~held).sum()


def test_cross_study_leave_one_batch_out_and_unseen_classes():
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 4
    batches = ["x"] * 8 + ["y"] * 2 + ["x"] * 5 + ["y"] * 5 + ["z"] * 4
    adata = load_dataset(synthetic_adata(labels, batches), label_key="cell_type", batch_key="batch", min_cells_per_class=2)
    splits = make_splits(adata, "cross_study")
    assert [s.held_out for s in splits] == [("x",), ("y",), ("z",)]
    by_name = {s.name: s for s in splits}
    assert any("4 test cells belong to classes absent from training (c)" in n for n in by_name["cross_study_z"].notes)


def test_single_training_cell_is_noted_as_not_stratified():
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 3
    batches = ["x"] * 10 + ["y"] * 10 + ["x", "y", "y"]
    adata = load_dataset(synthetic_adata(labels, batches), label_key="cell_type", batch_key="batch", min_cells_per_class=2)
    split = make_splits(adata, "cross_study", study_groups={"held": ["y"]})[0]
    assert any("not stratified" in note and ": c" in note for note in split.notes)
    assert np.flatnonzero(adata.obs["cell_type"].to_numpy() == "c")[0] in split.train


def test_rare_classes_are_refused_or_left_out_when_allowed():
    adata = synthetic_adata(["a"] * 10 + ["b"] * 10 + ["rare"] * 3)
    with pytest.raises(InputDataError, match="'rare' \\(3 cells\\).*drop_rare_classes=True"):
        make_splits(adata, "full", label_key="cell_type")
    splits = make_splits(adata, "full", label_key="cell_type", drop_rare_classes=True)
    rare = set(np.flatnonzero(adata.obs["cell_type"].to_numpy() == "rare"))
    for split in splits:
        assert not rare & (set(split.train) | set(split.validation) | set(split.test))
        assert "left out 3 cells of classes below 5 cells: rare" in split.notes[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"regime": "random"}, "Unknown regime 'random'"),
        ({"regime": "full", "folds": [7]}, "Fold numbers must be in 0..4"),
        ({"regime": "full", "validation_fraction": 1.0}, "validation_fraction must be between 0 and 1"),
        ({"regime": "low", "label_fractions": (0.0,)}, "label_fractions must be in"),
        ({"regime": "cross_study"}, "cross_study holds out technology/batch groups and needs"),
    ],
)
def test_bad_split_settings(pbmc_data, kwargs, message):
    regime = kwargs.pop("regime")
    with pytest.raises(InputDataError, match=message):
        make_splits(pbmc_data, regime, **kwargs)


def test_cross_study_groups_must_name_existing_batches(pancreas_data):
    with pytest.raises(InputDataError, match="names inDrop1, which do not occur in obs\\['tech'\\]"):
        make_splits(pancreas_data, "cross_study", study_groups={"droplet": ["inDrop1"]})
    with pytest.raises(InputDataError, match="'celseq' is in two cross-study groups"):
        make_splits(pancreas_data, "cross_study", study_groups={"a": ["celseq"], "b": ["celseq", "celseq2"]})


def test_saved_splits_reload_by_cell_name(tmp_path, pancreas_data):
    splits = make_splits(pancreas_data, "low", folds=[1], seed=7)
    save_splits(splits, pancreas_data, tmp_path / "splits", seed=7, regime="low")
    table = pd.read_csv(tmp_path / "splits" / "splits.csv")
    assert list(table.columns[:2]) == ["obs_name", "celltype"] and len(table) == pancreas_data.n_obs
    shuffled = pancreas_data[np.random.default_rng(0).permutation(pancreas_data.n_obs)].copy()
    reloaded = load_splits(tmp_path / "splits", shuffled)
    for original, again in zip(splits, reloaded, strict=True):
        assert (original.name, original.fold, original.label_fraction) == (again.name, again.fold, again.label_fraction)
        for part in ("train", "validation", "test"):
            assert set(pancreas_data.obs_names[original.part(part)]) == set(shuffled.obs_names[again.part(part)])
    with pytest.raises(InputDataError, match="500 cells of the saved splits are not in this AnnData"):
        load_splits(tmp_path / "splits", synthetic_adata(["a"] * 5 + ["b"] * 5))


def _scadapt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scadapt.cli", *args], capture_output=True, text=True, timeout=300)


def test_splits_command_writes_the_files(tmp_path):
    result = _scadapt("splits", "--regime", "cross_study", "--study-groups", "plate:smartseq2;cel:celseq,celseq2",
                      "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "cross_study_plate: " in result.stdout and "held out: celseq, celseq2" in result.stdout
    assert (tmp_path / "out" / "splits.csv").is_file() and (tmp_path / "out" / "splits.json").is_file()
    bad = _scadapt("splits", "--regime", "cross_study", "--study-groups", "plate:smartseq2;nothing")
    assert bad.returncode == 2 and "name:value,value;name:value" in bad.stderr
    unknown = _scadapt("splits", "--regime", "cross_study", "--study-groups", "x:smarter")
    assert unknown.returncode == 2 and "names smarter, which do not occur" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_datasets_command_lists_the_catalogue():
    result = _scadapt("datasets")
    assert result.returncode == 0
    for name in ("pbmc68k_reduced", "pancreas_small", "human_pancreas"):
        assert name in result.stdout
    assert "not downloaded yet" in result.stdout

"""Every bad input is one message that says what is wrong and what to do, never a traceback.

Table-driven: each case builds its inputs in the test's temp dir, runs the console command
in-process and asserts the exit status and the message (not just that it failed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import REPO, synthetic_adata

from scadapt.cli import main

POLICY = (REPO / "registry" / "policy.yaml").read_text()


def _write(adata: ad.AnnData, name: str = "cells.h5ad") -> str:
    adata.write_h5ad(name)
    return str(Path(name).resolve())


def _labelled(n_per_class: int = 8, n_genes: int = 40, **changes) -> ad.AnnData:
    adata = synthetic_adata(["a"] * n_per_class + ["b"] * n_per_class, batches=["x", "y"] * n_per_class,
                            n_genes=n_genes)
    for key, value in changes.items():
        setattr(adata, key, value)
    return adata


def _file(name: str, content: bytes) -> str:
    Path(name).write_bytes(content)
    return str(Path(name).resolve())


def _blocked_dir() -> str:
    """A path under a regular file: no process, root included, can create it."""
    Path("plain_file").write_text("not a folder")
    return str(Path("plain_file").resolve() / "sub")


def _predict(data: str, *options: str) -> list[str]:
    options = ("--model", "models:/x@champion", *options) if "--model" not in options else options
    return ["predict", "--data", data, *options]


def _truncated(path: str) -> str:
    content = Path(path).read_bytes()
    Path(path).write_bytes(content[: len(content) // 2])
    return path


def _sklearn_model() -> str:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    mlflow.sklearn.save_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), "sk_model")
    return str(Path("sk_model").resolve())


def _policy(old: str, new: str) -> str:
    assert old in POLICY
    Path("policy.yaml").write_text(POLICY.replace(old, new))
    return "policy.yaml"


def _empty_cells(fraction: float) -> str:
    adata = _labelled()
    X = adata.X.toarray()
    X[: int(fraction * adata.n_obs)] = 0
    adata.X = sp.csr_matrix(X)
    return _write(adata)


def _zero_cells() -> str:
    adata = _labelled()
    return _write(ad.AnnData(sp.csr_matrix(adata.shape, dtype=np.float32), obs=adata.obs, var=adata.var))


def _values(value: float) -> str:
    adata = _labelled()
    X = adata.X.toarray()
    X[0, 0] = value
    return _write(ad.AnnData(X, obs=adata.obs, var=adata.var))


def _labels(values: list) -> str:
    adata = _labelled()
    adata.obs["cell_type"] = pd.Series(values, index=adata.obs_names, dtype=object)
    return _write(adata)


def _var_names(names: list[str]) -> str:
    adata = _labelled()
    adata.var_names = names
    return _write(adata)


def _tiny_checkpoint() -> str:
    """A tiny random backbone whose vocabulary holds none of the synthetic GENE* symbols."""
    from conftest import random_backbone

    from scadapt.backbone import save_backbone
    from scadapt.tokenization import GeneVocab

    vocab = GeneVocab.from_genes([f"OTHER{i}" for i in range(300)])
    save_backbone(random_backbone(vocab), vocab, "ckpt")
    return str(Path("ckpt").resolve())


@dataclass
class Case:
    name: str
    argv: Callable[[], list[str]]  # built inside the test's temp dir
    message: str  # must appear in stderr
    status: int = 2


def _user_data(*more: str, data: Callable[[], str] = lambda: _write(_labelled())) -> Callable[[], list[str]]:
    return lambda: ["train", "--data", data(), "--label-key", "cell_type", "--strategy", "pca_logreg", *more]


def _tune(*more: str) -> list[str]:
    return ["tune", "--data", _write(_labelled()), "--label-key", "cell_type", "--strategy", "pca_logreg", *more]


CASES = [
    # -- options: refused while parsing, before anything is loaded --------------------------------
    Case("unknown strategy", lambda: ["pipeline", "--strategies", "pca_logreg,foo"], "unknown strategies foo"),
    Case("no strategy", lambda: ["pipeline", "--strategies", ","], "name at least one strategy"),
    Case("non-integer trials", lambda: ["pipeline", "--n-trials", "x"], "--n-trials: expected an integer, got 'x'"),
    Case("fractional epochs", lambda: ["benchmark", "--epochs", "2.5"], "expected an integer, got '2.5'"),
    Case("unknown pruner", lambda: ["tune", "--pruning", "hyperband"], "invalid choice: 'hyperband'"),
    Case("nan learning rate for pretraining", lambda: ["pretrain", "--lr", "nan"], "expected a finite number"),
    Case("yes/no option", lambda: ["pipeline", "--drop-rare-classes", "maybe"], "expected true or false, got 'maybe'"),
    Case("study groups syntax", lambda: ["splits", "--study-groups", "plate"], "study groups are written"),
    Case("unknown regime", lambda: ["benchmark", "--regimes", "full,lowish"], "unknown regimes ['lowish']"),
    Case("label fraction above 1", lambda: ["benchmark", "--label-fractions", "0.1,2"],
         "label_fractions must lie in (0, 1]"),
    Case("unknown device", lambda: ["pipeline", "--device", "tpu"], "unknown device 'tpu'"),
    Case("pretrain data with a checkpoint", lambda: ["pipeline", "--pretrain-data", "a.h5ad", "--checkpoint", "x"],
         "pretrain_data pretrains the demo backbone; it cannot be combined with checkpoint"),
    Case("nan hyperparameter", _user_data("--hparams", "C=nan"), "C='nan' is refused (expected a finite number"),
    Case("unknown hyperparameter", _user_data("--hparams", "depth=3"), "Unknown hyperparameter(s) depth"),
    Case("negative sequence length", _user_data("--max-seq-len", "-5"), "max_seq_len must be at least 2"),
    Case("validation fraction", _user_data("--validation-fraction", "1.5"), "validation_fraction must lie between"),
    Case("pretraining shape", lambda: ["pretrain", "--d-model", "30", "--nhead", "4"], "d_model a multiple of nhead"),
    # -- data ----------------------------------------------------------------------------------------
    Case("a directory as data", _user_data(data=lambda: str(Path.cwd())), "is a directory, not an .h5ad file"),
    Case("missing file", _user_data(data=lambda: str(Path("nothing.h5ad").resolve())), "nothing.h5ad does not exist"),
    Case("not HDF5", _user_data(data=lambda: _file("text.h5ad", b"cell,gene\n")), "is not an HDF5 file"),
    Case("no cells", _user_data(data=lambda: _write(_labelled()[:0].copy())), "The dataset has no cells"),
    Case("no genes", _user_data(data=lambda: _write(_labelled()[:, :0].copy())), "The dataset has no genes"),
    Case("all cells zero", _user_data(data=_zero_cells), "All 16 cells have zero expression"),
    Case("most cells empty", _user_data(data=lambda: _empty_cells(0.75)), "12 of 16 cells have zero expression"),
    Case("scaled values", _user_data(data=lambda: _values(-1.5)), "negative values (min -1.5)"),
    Case("NaN values", _user_data(data=lambda: _values(np.nan)), "1 NaN or infinite values"),
    Case("label key typo", lambda: ["train", "--data", _write(_labelled()), "--label-key", "celltype"],
         "Label key 'celltype' is not a column of adata.obs (columns: cell_type, batch)"),
    Case("user file without label key", lambda: ["pipeline", "--data", _write(_labelled()), "--strategies", "pca_logreg"],
         "say which obs column holds the cell types with label_key=... (--label-key)"),
    Case("no labelled cell", _user_data(data=lambda: _labels(["nan", "None", "", "NA"] * 4)),
         "None of the 16 cells has a label"),
    Case("one class", _user_data(data=lambda: _labels(["a"] * 16)), "same label ('a'"),
    Case("class too small", _user_data(data=lambda: _labels(["a"] * 13 + ["b"] * 3)),
         "fewer than the 5 cells a split needs: 'b' (3 cells)"),
    Case("Ensembl ids", _user_data(data=lambda: _var_names([f"ENSG{i:011d}" for i in range(40)])),
         "look like Ensembl ids"),
    Case("duplicate genes", _user_data(data=lambda: _var_names(["G1", "G1"] + [f"G{i}" for i in range(2, 40)])),
         "1 gene name(s) occur more than once"),
    Case("unknown layer", _user_data("--layer", "counts"), "Layer 'counts' is not in adata.layers"),
    Case("unknown batch key", _user_data("--batch-key", "tech"), "Batch key 'tech' is not a column"),
    Case("too few genes in the vocabulary",
         lambda: ["pipeline", "--data", _write(_labelled()), "--label-key", "cell_type", "--strategies", "head",
                  "--checkpoint", _tiny_checkpoint()],
         "Only 0 of 40 genes (0.0%) are in the vocabulary"),
    Case("pretraining on zero data", lambda: ["pretrain", "--data", _zero_cells(), "--epochs", "1"],
         "zero expression"),
    Case("checkpoint without weights",
         lambda: (Path("ck").mkdir(), Path("ck/args.json").write_text("{}"), ["train", "--checkpoint", "ck"])[-1],
         "lacks vocab.json, best_model.pt"),
    Case("predict on a non-h5ad", lambda: ["predict", "--model", "models:/x@champion", "--data", _file("a.csv", b"1")],
         "a.csv is not an .h5ad file"),
    # each of these was "unexpected error ... This is a bug" (issue 40)
    Case("predict on a truncated .h5ad", lambda: _predict(_truncated(_write(_labelled()))),
         "cannot be read as an .h5ad file"),
    Case("predict on a text file named .h5ad", lambda: _predict(_file("text.h5ad", b"cell,gene\n1,2\n")),
         "text.h5ad cannot be read as an .h5ad file"),
    Case("predict with an http model", lambda: _predict(_write(_labelled()), "--model", "http://127.0.0.1:1/model"),
         "Cannot load model http://127.0.0.1:1/model"),
    Case("predict with an s3 model", lambda: _predict(_write(_labelled()), "--model", "s3://bucket/model"),
         "Cannot load model s3://bucket/model"),
    Case("predict with another flavour's model", lambda: _predict(_write(_labelled()), "--model", _sklearn_model()),
         "is not a scadapt annotator model"),
    Case("predict with an empty key", lambda: _predict(_write(_labelled()), "--key", ""),
         "key='' is not a usable name"),  # it wrote obs columns named _label and X_
    Case("predict with batch size 0", lambda: _predict(_write(_labelled()), "--batch-size", "0"),
         "batch_size is a number of cells, at least 1"),  # it meant 10,000
    Case("predict with an empty unknown", lambda: _predict(_write(_labelled()), "--unknown", ""),
         "argument --unknown: expected auto, none or a fraction", status=2),  # it turned rejection off
    Case("predict to a .csv", lambda: _predict(_write(_labelled()), "--output", "labels.csv"),
         "give it the .h5ad suffix"),  # it wrote HDF5 under a .csv name
    Case("unwritable splits output", lambda: ["splits", "--data", "pancreas_small", "--output", _blocked_dir()],
         "Cannot write the splits"),
    # -- policy --------------------------------------------------------------------------------------
    Case("policy: unknown metric", lambda: ["promote", "--data", "d", "--policy",
                                            _policy("metric: val_accuracy", "metric: val_acc")],
         "rank_by names the unknown metric 'val_acc'"),
    Case("policy: quoted boolean", lambda: ["promote", "--data", "d", "--policy", _policy(
        "{metric: trainable_parameters, higher_is_better: false}",
        "{metric: trainable_parameters, higher_is_better: \"false\"}")],
         "higher_is_better of 'trainable_parameters' must be true or false, unquoted (got 'false')"),
    Case("policy: clashing aliases", lambda: ["promote", "--data", "d", "--policy",
                                              _policy("previous: previous", "previous: champion")],
         "the champion and previous aliases clash"),
    Case("policy: unknown gate", lambda: ["promote", "--data", "d", "--policy",
                                          _policy("test_macro_f1: 0.2", "test_f1: 0.2")],
         "gates names the unknown metric 'test_f1'"),
    Case("policy: gate not a number", lambda: ["promote", "--data", "d", "--policy",
                                               _policy("test_macro_f1: 0.2", "test_macro_f1: high")],
         "the gate of 'test_macro_f1' must be a number"),
    Case("policy: unknown key", lambda: ["promote", "--data", "d", "--policy", _policy("decimals: 3", "digits: 3")],
         "unknown policy keys ['digits']"),
    Case("policy: unknown regime", lambda: ["promote", "--data", "d", "--policy", _policy("[full]", "[fullest]")],
         "regimes must be a non-empty list"),
    # -- storage and outputs -------------------------------------------------------------------------
    Case("unwritable SQLite storage", lambda: _tune("--storage", f"sqlite:///{_blocked_dir()}/optuna.db"),
         "Cannot write the study database"),
    Case("unwritable journal", lambda: _tune("--storage", f"journal:{_blocked_dir()}/study.journal"),
         "Cannot write the study journal"),
    Case("unknown storage", lambda: _tune("--storage", "optuna-db"), "Unknown study storage 'optuna-db'"),
    Case("unreachable PostgreSQL storage", lambda: _tune("--storage", "postgresql://me:secret@127.0.0.1:1/optuna"),
         "Cannot connect to the study storage postgresql://me:***@127.0.0.1:1/optuna: nothing accepts connections "
         "there"),
    Case("checkpoint URI with nothing behind it", lambda: _tune("--strategy", "head", "--checkpoint",
                                                               "runs:/0123456789abcdef0123456789abcdef/backbone"),
         "Cannot download the backbone checkpoint runs:/0123456789abcdef0123456789abcdef/backbone"),
    Case("unwritable benchmark output", lambda: ["benchmark", "--datasets", "pancreas_small", "--strategies",
                                                 "pca_logreg", "--output-dir", _blocked_dir()],
         "Cannot write the benchmark report"),
    Case("unwritable predict output", lambda: ["predict", "--model", "models:/x@champion", "--data", _write(_labelled()),
                                               "--output", f"{_blocked_dir()}/out.h5ad"],
         "Cannot write the annotated cells"),
    Case("unwritable annotator output", _user_data("--output-dir", "PLACEHOLDER"), "Cannot write the trained annotator"),
    # -- registry ------------------------------------------------------------------------------------
    Case("no candidates", lambda: ["promote", "--data", "pancreas_small"], "No candidate runs for pancreas_small"),
    Case("quote in a dataset name", lambda: ["promote", "--data", "it's"], "cannot contain a quote"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_message(case: Case, capsys):
    argv = case.argv()
    argv = [_blocked_dir() if a == "PLACEHOLDER" else a for a in argv]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse: the option is refused before any work
        status = exit_.code
    err = capsys.readouterr().err
    assert status == case.status, err
    assert case.message in err, err
    assert "Traceback" not in err


def test_there_are_at_least_forty_distinct_cases():
    assert len({c.name for c in CASES}) == len(CASES) >= 40


def test_corrupt_tracking_store_is_a_message(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken.db").write_bytes(b"\x00not sqlite\x00" * 500)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'broken.db'}")
    assert main(["train", "--strategy", "pca_logreg"]) == 2
    err = capsys.readouterr().err
    assert "The MLflow tracking store" in err and "cannot be used" in err and "move it aside" in err

"""Shared fixtures. Every test gets its own MLflow store, scadapt cache and working directory."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData

from scadapt.backbone import BackboneConfig, ScGPTBackbone, save_backbone
from scadapt.data import load_expression
from scadapt.tokenization import GeneVocab

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))  # the build tools and the synthetic data maker

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WHOLE_HUMAN = REPO / "tests" / "data" / "scgpt_human"  # the released model's args.json and vocab.json

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def isolated_stores(tmp_path, monkeypatch):
    """MLflow tracking store, scadapt cache and cwd inside the test's temp dir."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SCADAPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    import mlflow

    # set_experiment caches the experiment id in the process; a new store must not inherit it
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    yield

    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="session")
def pancreas():
    return load_expression("pancreas_small")


@pytest.fixture(scope="session")
def pbmc():
    return load_expression("pbmc68k_reduced")


def tiny_config(vocab: GeneVocab, **overrides) -> BackboneConfig:
    settings = dict(vocab_size=len(vocab), d_model=32, nhead=4, d_hid=48, nlayers=2, dropout=0.1, max_seq_len=128)
    settings.update(overrides)
    return BackboneConfig(**settings)


def random_backbone(vocab: GeneVocab, seed: int = 0, std: float = 0.2, **overrides) -> ScGPTBackbone:
    """A tiny backbone with all weights random (not the near-identity LayerNorm init), so any
    mistake in wiring changes the output."""
    torch.manual_seed(seed)
    model = ScGPTBackbone(tiny_config(vocab, **overrides), pad_id=vocab.pad_id)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, std)
    return model


@pytest.fixture
def tiny_checkpoint(tmp_path, pancreas) -> Path:
    """A random tiny backbone over the pancreas genes, in the scGPT release format."""
    vocab = GeneVocab.from_genes(pancreas.var_names)
    directory = tmp_path / "tiny_ckpt"
    save_backbone(random_backbone(vocab), vocab, directory)
    return directory


def padded_batch(vocab: GeneVocab, n_cells: int, length: int, seed: int = 0, pad_from: dict | None = None):
    """Random gene ids/bins with ``<cls>`` first; ``pad_from`` maps row -> first padded position."""
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(0, len(vocab) - 3, (n_cells, length)))
    values = torch.from_numpy(rng.integers(1, 51, (n_cells, length)).astype(np.float32))
    ids[:, 0], values[:, 0] = vocab.cls_id, 0.0
    mask = torch.zeros(n_cells, length, dtype=torch.bool)
    for row, start in (pad_from or {}).items():
        mask[row, start:] = True
    ids[mask], values[mask] = vocab.pad_id, -2.0
    return ids, values, mask


def synthetic_adata(
    labels: list[str], batches: list[str] | None = None, n_genes: int = 40, seed: int = 0
) -> AnnData:
    """Poisson counts (CSR) for the given per-cell labels, gene symbols ``GENE0..``, obs
    ``cell_type`` (and ``batch``)."""
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(rng.poisson(1.0, (len(labels), n_genes)).astype(np.float32))
    adata = AnnData(counts)
    adata.obs_names = [f"cell{i}" for i in range(len(labels))]
    adata.var_names = [f"GENE{i}" for i in range(n_genes)]
    adata.obs["cell_type"] = labels
    if batches is not None:
        adata.obs["batch"] = batches
    return adata

"""Writes the annotators in this folder with the scadapt of the commit named in README.md (run from
a checkout of that commit: ``python tests/data/saved_annotators/make.py``). tests/test_saved_annotators.py
checks that today's scadapt loads each and predicts what it predicted then (expected.npz)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
STRATEGIES = {  # one or two of each family, small
    "pca_logreg": {"n_components": 8, "n_top_genes": 200},
    "logreg": {},
    "mlp": {"epochs": 3, "width": 16, "n_top_genes": 200},
    "frozen_probe": {},
    "head": {"epochs": 3},
    "lora": {"epochs": 2, "r": 4, "layers": 1},
    "prefix": {"epochs": 2, "n_prefix": 4, "layers": 1},
}


def main() -> None:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
    sys.path.insert(0, str(HERE.parents[1]))
    from conftest import random_backbone

    from scadapt.backbone import save_backbone
    from scadapt.data import load_dataset
    from scadapt.tokenization import GeneVocab

    try:
        from scadapt.jobs.config import TrainJob  # after the jobs moved
        from scadapt.jobs.train import train
    except ImportError:
        from scadapt.training.config import TrainJob
        from scadapt.training.train import train

    cells = load_dataset("pancreas_small")
    cells = cells[:, :300].copy()  # 300 genes keep the files small
    cells.uns.pop("scadapt", None)
    data = HERE / "cells.h5ad"
    cells.write_h5ad(data, compression="gzip")
    vocab = GeneVocab.from_genes(cells.var_names)
    torch.manual_seed(0)
    save_backbone(random_backbone(vocab, d_model=16, nhead=2, d_hid=24, nlayers=2), vocab, HERE / "backbone")
    expected = {}
    query = cells[:40].copy()
    for strategy, hparams in STRATEGIES.items():
        result = train(TrainJob(data=str(data), label_key="celltype", strategy=strategy, hparams=hparams,
                                checkpoint=str(HERE / "backbone"), min_genes=50, progress=False, umap=False,
                                output_dir=str(HERE / strategy)))
        expected[strategy] = result.annotator.predict_proba(query)
    np.savez_compressed(HERE / "expected.npz", **expected)


if __name__ == "__main__":
    main()

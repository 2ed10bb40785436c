"""The public annotation recipes scadapt's baselines are measured against, run in their own
environment (``benchmarks/baselines.py`` creates it and calls this script; scadapt is not imported).

Reads ``--data`` (an ``.h5ad`` whose ``X`` is log1p of counts scaled to 10,000 per cell, the input
both recipes document, with the labels in ``obs[--label-key]``) and ``--splits`` (JSON:
``{split: {"train": [cell names], "validation": [...], "test": [...]}}``), fits every recipe on each
split's training cells and writes the predicted label of every test cell to ``--out`` (CSV: split,
recipe, cell, predicted, fit_sec).

Recipes, as each package documents them (their code is called, not copied):

* ``scdlkit_mlp``: scDLKit's ``TaskRunner(model="mlp_classifier", task="classification")`` with the
  "full" profile of its classification tutorial (30 epochs, batch 128), its default learning rate
  (1e-3), early stopping (patience 10 on the validation loss, best epoch restored), network (hidden
  layers 512 and 256 with GELU and dropout 0.2, as ``TaskRunner`` builds it) and preprocessing
  options: 2,000 highly variable genes when there are more, standardised genes (``scale=True``).
  Its own random split is switched off (``val_size=0``, ``test_size=0``): it trains on the split's
  training cells and stops early on the split's validation cells.
* ``celltypist``: ``celltypist.train`` with its defaults (all genes, standardised and clipped at 10,
  L2 logistic regression with C=1, ``max_iter=1000``), then ``celltypist.annotate`` (best match,
  no majority voting). It uses no validation cells.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd


def scdlkit_mlp(train: ad.AnnData, validation: ad.AnnData, test: ad.AnnData, label_key: str, seed: int) -> np.ndarray:
    from scdlkit import TaskRunner

    runner = TaskRunner(model="mlp_classifier", task="classification", epochs=30, batch_size=128,
                        label_key=label_key, use_hvg=train.n_vars > 2000, n_top_genes=2000, scale=True,
                        val_size=0.0, test_size=0.0, seed=seed, random_state=seed, device="cpu")
    runner.fit(train, val_adata=validation)
    classes = np.array(sorted(runner.prepared_data_.label_encoder, key=runner.prepared_data_.label_encoder.get))
    return classes[runner.predict(_unlabelled(test, label_key))]


def celltypist(train: ad.AnnData, validation: ad.AnnData, test: ad.AnnData, label_key: str, seed: int) -> np.ndarray:
    import celltypist as ct

    np.random.seed(seed)
    model = ct.train(train, labels=label_key, n_jobs=1)
    result = ct.annotate(_unlabelled(test, label_key), model=model, majority_voting=False)
    return result.predicted_labels["predicted_labels"].astype(str).to_numpy()


def _unlabelled(adata: ad.AnnData, label_key: str) -> ad.AnnData:
    """The cells without their labels: a recipe refuses test labels it never trained on."""
    copy = adata.copy()
    del copy.obs[label_key]
    return copy


RECIPES = {"scdlkit_mlp": scdlkit_mlp, "celltypist": celltypist}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--label-key", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    adata = ad.read_h5ad(args.data)
    adata.X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float32)
    splits = json.loads(Path(args.splits).read_text())
    rows = []
    for name, parts in splits.items():
        train, validation, test = (adata[parts[part]].copy() for part in ("train", "validation", "test"))
        for recipe in args.recipes:
            started = time.perf_counter()
            predicted = RECIPES[recipe](train, validation, test, args.label_key, args.seed)
            seconds = time.perf_counter() - started
            rows += [{"split": name, "recipe": recipe, "cell": cell, "predicted": label, "fit_sec": seconds}
                     for cell, label in zip(test.obs_names, predicted, strict=True)]
            print(f"{name} {recipe}: {seconds:.1f} s", flush=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()

"""Figures logged with every training run."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def confusion_figure(confusion: pd.DataFrame, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (each true class sums to 1), counts in the cells."""
    counts = confusion.to_numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(confusion)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(confusion.columns)), confusion.columns, rotation=90)
    ax.set_yticks(range(len(confusion.index)), confusion.index)
    for (row, col), count in np.ndenumerate(counts):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                    color="white" if share[row, col] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def umap_figure(embedding: np.ndarray, labels, predicted, path: Path, title: str, seed: int = 0) -> Path | None:
    """UMAP of ``embedding`` ``[n_cells, d]`` coloured by true and by predicted label (scanpy)."""
    if len(embedding) < 10:
        return None
    import anndata as ad
    import scanpy as sc

    view = ad.AnnData(np.zeros((len(embedding), 1), dtype=np.float32))
    view.obsm["X_emb"] = embedding
    view.obs["true"] = pd.Categorical(np.asarray(labels, dtype=str))
    view.obs["predicted"] = pd.Categorical(np.asarray(predicted, dtype=str), categories=view.obs["true"].cat.categories.union(
        pd.Index(np.unique(np.asarray(predicted, dtype=str)))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(view, use_rep="X_emb", n_neighbors=min(15, len(embedding) - 1), random_state=seed)
        sc.tl.umap(view, random_state=seed)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key in zip(axes, ("true", "predicted"), strict=True):
        sc.pl.umap(view, color=key, ax=ax, show=False, title=f"{title}: {key} label", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves_figure(history: pd.DataFrame, path: Path, title: str) -> Path:
    """Training loss, validation loss and validation macro-F1 per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    left.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy")
    left.legend()
    right.plot(history["epoch"], history["val_macro_f1"], marker="o", color="tab:green")
    right.set_xlabel("epoch")
    right.set_ylabel("validation macro-F1")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.88, wspace=0.3)  # fixed labels: no layout pass
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

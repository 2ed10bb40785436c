"""Figures logged with every training run."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402


def confusion_figure(confusion: pd.DataFrame, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (each true class sums to 1), counts in the cells.

    The margins are measured from the class names instead of a layout pass over the drawn figure
    (``tight_layout`` cost as much as the rest of the drawing, once per run of a benchmark)."""
    counts = confusion.to_numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    cell, colorbar = 0.45, 1.1  # inches per class; the colour bar and its label
    left = _text_inches(confusion.index) + 0.55  # tick labels, then the "true" axis label
    bottom = _text_inches(confusion.columns) + 0.55
    grid = max(2.5, cell * len(confusion))
    title_height = 0.45
    width, height = left + grid + colorbar, bottom + grid + title_height
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, grid / width, grid / height))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(confusion.columns)), confusion.columns, rotation=90)
    ax.set_yticks(range(len(confusion.index)), confusion.index)
    for (row, col), count in np.ndenumerate(counts):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                    color="white" if share[row, col] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    bar = fig.add_axes(((left + grid + 0.15) / width, bottom / height, 0.18 / width, grid / height))
    fig.colorbar(image, cax=bar, label="share of true class")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _text_inches(labels) -> float:
    """Width in inches of the longest of ``labels`` as a tick label (no figure drawn)."""
    font = FontProperties(size=plt.rcParams["ytick.labelsize"])
    renderer = _measuring_canvas().get_renderer()
    widths = [renderer.get_text_width_height_descent(str(text), font, ismath=False)[0] for text in labels]
    return max(widths, default=0.0) / renderer.dpi


@functools.cache
def _measuring_canvas() -> FigureCanvasAgg:
    return FigureCanvasAgg(Figure(dpi=72))


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

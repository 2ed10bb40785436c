"""``scadapt.annotate(adata, model)``: label an AnnData's cells in place, as a scanpy user expects."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scadapt.annotation.labelling import CellLabels, report_rejected
from scadapt.annotation.model import AnnotationModel, load_model
from scadapt.annotation.query import Query, label_query
from scadapt.annotation.voting import majority_vote, over_cluster
from scadapt.errors import InputDataError, ScadaptError
from scadapt.models.annotator import UNASSIGNED

log = logging.getLogger(__name__)


def annotate(adata: AnnData, model: Any, *, key: str = "scadapt", majority_voting: bool = False,
             over_clustering: str | None = None, unknown: float | str | None = "auto", batch_size: int | None = None,
             layer: str | None = None, gene_column: str | None = None, copy: bool = False,
             progress: bool = True) -> AnnData:
    """Label the cells of ``adata`` with ``model`` and return the annotated AnnData.

    Writes ``obs[f"{key}_label"]`` (categorical), ``obs[f"{key}_confidence"]`` (the top class's
    probability) and ``obsm[f"X_{key}"]`` (the model's embedding ``[n_cells, d]``); for a model
    with a novelty scorer also ``obs[f"{key}_predicted"]`` (the top class, also for ``Unassigned``
    cells) and ``obs[f"{key}_novelty"]``; with majority voting ``obs[f"{key}_over_clustering"]``
    and ``obs[f"{key}_majority_voting"]``.

    Args:
        adata: counts or log-normalised expression, in memory or backed (``backed="r+"`` to write
            into its file; it is read ``batch_size`` cells at a time).
        model: a ``models:/`` or ``runs:/`` URI, an MLflow model folder, a saved annotator folder, a
            model loaded with ``mlflow.pyfunc.load_model``, or an annotator.
        majority_voting: give each cluster of an over-clustering its most frequent label.
        over_clustering: an ``obs`` column of clusters to vote in (implies majority voting); by
            default Leiden clusters of the model's embedding, at a resolution that grows with the
            number of cells.
        unknown: cells unlike every trained type are ``Unassigned``: ``"auto"`` at the threshold
            calibrated on the model's validation cells (5 % of known cells rejected), a number in
            [0, 1] for another fraction, ``None`` for no rejection.
        batch_size: cells read and labelled at a time (default 10,000).
        layer: the matrix to read (a layer, or ``"raw"``; default ``X``).
        gene_column: the ``var`` column with gene symbols, when ``var_names`` are not symbols.
        copy: annotate a copy and leave ``adata`` as it is.
    """
    if not key or not str(key).strip():
        raise ScadaptError("key must be a non-empty name: the annotation's obs/obsm columns start with it.")
    if over_clustering is not None and over_clustering not in adata.obs.columns:
        raise InputDataError(f"Over-clustering column {over_clustering!r} is not in adata.obs (columns: "
                             f"{', '.join(map(str, adata.obs.columns[:10])) or 'none'}).")
    if adata.isbacked and not copy and adata.file._filemode == "r":
        raise ScadaptError(f"{adata.filename} is open read-only (backed='r'), so the annotation cannot be written into "
                           "it: open it with backed='r+', pass copy=True, or write a new file with scadapt predict.")
    loaded = load_model(model)
    threshold = loaded.annotator.unknown_threshold(unknown)
    target = (adata.to_memory() if adata.isbacked else adata.copy()) if copy else adata
    query = Query.of(target, loaded, layer, gene_column)
    voting = majority_voting or over_clustering is not None
    labels = label_query(loaded, query, batch_size, threshold=threshold, progress=progress)
    report_rejected(labels)
    write_labels(target, labels, key, loaded)
    target.obsm[f"X_{key}"] = labels.embedding
    if voting:
        clusters = target.obs[over_clustering].to_numpy(dtype=str) if over_clustering is not None else \
            over_cluster(labels.embedding)
        write_majority_vote(target, labels.labels, clusters, key)
    if target.isbacked:
        target.write()  # obs, obsm and uns into the file; X stays where it is
    log.info("Annotated %d cells with %s (%s): obs %s_label, %s_confidence; obsm X_%s.", target.n_obs,
             loaded.source, loaded.annotator.strategy, key, key, key)
    return target


def write_labels(adata: AnnData, labels: CellLabels, key: str, model: AnnotationModel) -> None:
    """``obs[f"{key}_label"]``, ``obs[f"{key}_confidence"]`` and what annotated them in ``uns``."""
    classes = list(model.annotator.classes)
    categories = classes + ([UNASSIGNED] if (labels.labels == UNASSIGNED).any() else [])
    adata.obs[f"{key}_label"] = pd.Categorical(labels.labels, categories=categories)
    adata.obs[f"{key}_confidence"] = labels.confidence
    if model.annotator.novelty is not None:
        adata.obs[f"{key}_predicted"] = pd.Categorical(labels.predicted, categories=classes)
        adata.obs[f"{key}_novelty"] = labels.novelty
    adata.uns[f"{key}_annotation"] = {"model": model.source, "strategy": model.annotator.strategy,
                                      "classes": np.asarray(classes, dtype=object)}


def write_majority_vote(adata: AnnData, labels: np.ndarray, clusters: np.ndarray, key: str) -> None:
    """``obs[f"{key}_over_clustering"]`` and ``obs[f"{key}_majority_voting"]``."""
    voted = majority_vote(labels, clusters)
    adata.obs[f"{key}_over_clustering"] = pd.Categorical(clusters)
    adata.obs[f"{key}_majority_voting"] = pd.Categorical(
        voted, categories=[c for c in adata.obs[f"{key}_label"].cat.categories if c in set(voted)])
    changed = int((voted != labels).sum())
    log.info("Majority voting over %d clusters changed the label of %d of %d cells.", len(set(clusters)), changed,
             len(labels))

"""``scadapt.annotate(adata, model)``: label an AnnData's cells in place, as a scanpy user expects."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import pandas as pd
from anndata import AnnData

from scadapt.annotation.labelling import CellLabels, report_rejected
from scadapt.annotation.query import Query, label_query
from scadapt.annotation.voting import majority_vote, over_cluster
from scadapt.artifacts.annotators import AnnotationModel, load_model
from scadapt.infra.errors import InputDataError, ScadaptError
from scadapt.infra.options import AnnotateOptions, keyword_values
from scadapt.models.annotator import UNASSIGNED

log = logging.getLogger(__name__)


def annotate(adata: AnnData | str | Path, model: Any, *, copy: bool = False, progress: bool = True,
             **options: Any) -> AnnData:
    """Label the cells of ``adata`` with ``model`` and return the annotated AnnData.

    Writes ``obs[f"{key}_label"]`` (categorical), ``obs[f"{key}_confidence"]`` (the top class's
    probability) and ``obsm[f"X_{key}"]`` (the model's embedding ``[n_cells, d]``); for a model
    with a novelty scorer also ``obs[f"{key}_predicted"]`` (the top class, also for ``Unassigned``
    cells) and ``obs[f"{key}_novelty"]``; with majority voting ``obs[f"{key}_over_clustering"]``
    and ``obs[f"{key}_majority_voting"]``.

    Args:
        adata: counts or log-normalised expression, in memory or backed (``backed="r+"`` to write
            into its file; it is read ``batch_size`` cells at a time), or an ``.h5ad`` path (read
            into memory; ``scadapt predict`` annotates a file into a new file in chunks).
        model: a ``models:/`` or ``runs:/`` URI, an MLflow model folder, a saved annotator folder, a
            model loaded with ``mlflow.pyfunc.load_model``, or an annotator.
        copy: annotate a copy and leave ``adata`` as it is.
        options: those of ``scadapt predict``, as keywords (:class:`~scadapt.infra.options.AnnotateOptions`:
            ``key``, ``majority_voting``, ``over_clustering``, ``unknown``, ``batch_size``, ``layer``,
            ``gene_column``), in the command's forms or as Python values; ``over_clustering`` may also
            be an array of one cluster per cell (cells without one are left out of voting).
    """
    clusters = options.pop("over_clustering", None)
    opts = AnnotateOptions(**keyword_values(AnnotateOptions, options, "annotate"))
    if isinstance(adata, str | Path):
        adata = read_query(adata)
    if clusters is not None:
        clusters = given_clusters(adata.obs, clusters)
    if adata.isbacked and not copy and adata.file._filemode == "r":
        raise ScadaptError(f"{adata.filename} is open read-only (backed='r'), so the annotation cannot be written into "
                           "it: open it with backed='r+', pass copy=True, or write a new file with scadapt predict.")
    loaded = load_model(model)
    threshold = loaded.annotator.unknown_threshold(opts.unknown)
    target = (adata.to_memory() if adata.isbacked else adata.copy()) if copy else adata
    query = Query.of(target, loaded, opts.layer, opts.gene_column)
    labels = label_query(loaded, query, opts.batch_size, threshold=threshold, progress=progress)
    report_rejected(labels)
    write_labels(target, labels, opts.key, loaded)
    target.obsm[f"X_{opts.key}"] = labels.embedding
    if opts.majority_voting or clusters is not None:
        write_majority_vote(target, labels.labels, over_cluster(labels.embedding) if clusters is None else clusters,
                            opts.key)
    if target.isbacked:
        target.write()  # obs, obsm and uns into the file; X stays where it is
    log.info("Annotated %d cells with %s (%s): obs %s_label, %s_confidence; obsm X_%s.", target.n_obs,
             loaded.source, loaded.annotator.strategy, opts.key, opts.key, opts.key)
    return target


def given_clusters(obs: pd.DataFrame, clusters: Any) -> np.ndarray:
    """The over-clustering ``[n_cells]`` as strings, ``""`` for a cell without a cluster (left out of
    voting): an ``obs`` column's name, or one cluster per cell."""
    if isinstance(clusters, str):
        if clusters not in obs.columns:
            raise InputDataError(f"Over-clustering column {clusters!r} is not in adata.obs (columns: "
                                 f"{', '.join(map(str, obs.columns[:10])) or 'none'}).")
        clusters = obs[clusters]
    values = pd.Series(np.asarray(clusters, dtype=object).ravel() if not isinstance(clusters, pd.Series) else
                       clusters.to_numpy(dtype=object))
    if len(values) != len(obs):
        raise InputDataError(f"over_clustering has {len(values)} entries for {len(obs)} cells: give one cluster per "
                             "cell, or the name of an obs column.")
    if missing := int(values.isna().sum()):
        log.warning("%d of %d cells have no cluster: they keep their own label and are left out of majority voting.",
                    missing, len(values))
    return np.where(values.isna(), "", values.astype(str)).astype(str)


def read_query(path: str | Path, backed: str | None = None) -> AnnData:
    """An ``.h5ad`` file's cells (in memory, or ``backed``), or one message saying why the file
    cannot be read."""
    path = Path(path)
    if path.suffix != ".h5ad" or not path.is_file():
        raise InputDataError(f"{path} is not an .h5ad file.")
    try:
        return anndata.read_h5ad(path, backed=backed)
    except Exception as error:  # h5py and anndata raise many kinds for a damaged or foreign file
        raise InputDataError(f"{path} cannot be read as an .h5ad file ({type(error).__name__}: "
                             f"{str(error)[:200]}); is it complete, and written by anndata?") from None


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

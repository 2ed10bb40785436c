"""Trained annotators ("runners"): AnnData in, labels, confidences and embeddings out.

An annotator is saved as a folder with ``annotator.json`` (strategy, hyperparameters, classes,
provenance) and ``weights.safetensors`` holding only what the strategy fitted: for backbone
strategies the trainable weights plus the SHA-256 of the base checkpoint they sit on (the base
itself is loaded from its own folder and checked against that hash). No pickle anywhere. A saved
folder is read back by the strategy that fitted it (:mod:`scadapt.strategies.saved`).

Three kinds exist: :class:`BackboneAnnotator` (scGPT + head), and two without a backbone in
:mod:`scadapt.models.expression`: :class:`~scadapt.models.expression.LinearExpressionAnnotator`
(optional PCA, then a linear classifier, as plain arrays) and
:class:`~scadapt.models.expression.NetworkExpressionAnnotator` (a small network on expression).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Container
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save as numpy_bytes
from safetensors.torch import load_file as load_torch
from safetensors.torch import save as torch_bytes

from scadapt.backbone.inference import cell_outputs as backbone_outputs
from scadapt.data.preprocess import TARGET_SUM
from scadapt.infra.devices import autocast
from scadapt.infra.errors import CheckpointError, InputDataError
from scadapt.infra.options import AnnotateOptions, keyword_values
from scadapt.infra.storage import atomic_write
from scadapt.models.head import BackboneClassifier, trainable_state
from scadapt.models.novelty import DEFAULT_REJECTED, NoveltyScorer
from scadapt.tokenization import GeneTokenizer, GeneVocab


class Settings(Protocol):
    """The settings a strategy fitted with (a :class:`scadapt.strategies.base.StrategyConfig`): saved as params."""

    def to_params(self) -> dict[str, Any]: ...


ANNOTATOR_FILE = "annotator.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_VERSION = 1
KINDS = ("backbone", "expression", "expression_network")  # BackboneAnnotator and scadapt.models.expression's
UNASSIGNED = "Unassigned"  # the label of a cell the model does not call: no expression of its genes, or unlike any
#                             type it was trained on (CellTypist's word)

log = logging.getLogger(__name__)


class Annotator(ABC):
    """A fitted cell-type classifier for one strategy."""

    kind: str

    def __init__(self, strategy: str, config: Settings, classes: list[str]):
        self.strategy = strategy
        self.config = config
        self.classes = [str(c) for c in classes]
        self.novelty: NoveltyScorer | None = None  # set by calibration after the fit; saved beside the weights
        self.trained_on: dict[str, Any] = {"values": "unknown", "target_sum": TARGET_SUM}  # input_form() of the fit's cells

    # -- prediction --------------------------------------------------------------------------
    def outputs(self, adata: AnnData, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``[n_cells, d]`` and class probabilities ``[n_cells, n_classes]``."""
        return self.matrix_outputs(adata.X, adata.var_names.astype(str), progress)

    @abstractmethod
    def matrix_outputs(self, matrix, genes, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`outputs` of an expression matrix ``[n_cells, len(genes)]`` (counts or log-normalised,
        dense or sparse) whose columns are the gene symbols ``genes``: the served model's path,
        without building an AnnData."""

    def predict_proba(self, adata: AnnData) -> np.ndarray:
        return self.outputs(adata)[1]

    def embed(self, adata: AnnData) -> np.ndarray:
        return self.outputs(adata)[0]

    def predict(self, adata: AnnData, unknown: float | str | None = "auto") -> pd.DataFrame:
        """One row per cell: ``label`` and ``confidence`` (the top class probability); a cell that
        expresses none of the model's genes, or is unlike every trained type (see
        :meth:`unknown_threshold`), is ``Unassigned``."""
        embedding, proba = self.outputs(adata)
        novelty = self.novelty.score(embedding) if self.novelty is not None else None
        return self.table(adata.obs_names, proba, self.expressed(adata), novelty, self.unknown_threshold(unknown))

    def unknown_threshold(self, unknown: float | str | None = "auto") -> float:
        """The novelty score above which a cell is ``Unassigned``: ``"auto"`` rejects at most the
        calibrated 5 % of known cells (nothing for a model saved without a novelty scorer), a fraction
        in [0, 1] (or its text) that fraction, ``None`` or ``"none"`` nothing (``inf``); read as
        ``--unknown`` is (:class:`~scadapt.infra.options.AnnotateOptions`)."""
        unknown = keyword_values(AnnotateOptions, {"unknown": unknown}, "unknown")["unknown"]
        if unknown is None or unknown == "auto" and self.novelty is None:
            return float("inf")
        if self.novelty is None:
            raise InputDataError("This model was saved without a novelty scorer, so it cannot reject cells of unknown "
                                 "types: train it again, or pass unknown=None.")
        return self.novelty.threshold(DEFAULT_REJECTED if unknown == "auto" else float(unknown))

    def expressed(self, adata: AnnData) -> np.ndarray:
        """Whether each cell expresses at least one gene this model reads (bool ``[n_cells]``)."""
        return self.matrix_expressed(adata.X, adata.var_names.astype(str))

    def matrix_expressed(self, matrix, genes) -> np.ndarray:
        """:meth:`expressed` of a matrix ``[n_cells, len(genes)]`` with the gene symbols ``genes``."""
        read = self._read_mask(genes)
        if not sp.issparse(matrix):
            return np.count_nonzero(np.asarray(matrix)[:, read], axis=1) > 0
        matrix = sp.csr_matrix(matrix)
        hits = np.concatenate([[0], np.cumsum(read[matrix.indices] & (matrix.data != 0))])  # no column copy
        return hits[matrix.indptr[1:]] > hits[matrix.indptr[:-1]]

    def _read_mask(self, genes) -> np.ndarray:
        """Which of ``genes`` this model reads (bool ``[len(genes)]``); remembered for the last
        gene list, as every chunk of a file asks with the same one."""
        cached = getattr(self, "_mask_for", None)
        if cached is None or not cached[0].equals(pd.Index(genes)):
            read = self.genes_read
            self._mask_for = (pd.Index(genes), np.array([gene in read for gene in genes], dtype=bool))
        return self._mask_for[1]

    @property
    @abstractmethod
    def genes_read(self) -> Container[str]:
        """The gene symbols whose expression the model reads."""

    def table(self, index, proba: np.ndarray, expressed: np.ndarray | None = None, novelty: np.ndarray | None = None,
              threshold: float = float("inf")) -> pd.DataFrame:
        """``label``, ``confidence`` and ``predicted`` (the top class) per cell, plus ``novelty``
        when scores are given. A cell not ``expressed`` is ``Unassigned`` with confidence 0; a
        cell whose novelty is above ``threshold`` is ``Unassigned`` and keeps its confidence."""
        best = proba.argmax(axis=1)
        predicted = np.asarray(self.classes, dtype=object)[best]
        confidence = proba[np.arange(len(best)), best].astype(np.float64)
        labels = predicted.copy()
        if novelty is not None:
            labels[novelty > threshold] = UNASSIGNED
        if expressed is not None and not expressed.all():
            labels[~expressed], confidence[~expressed] = UNASSIGNED, 0.0
        table = pd.DataFrame({"label": labels, "confidence": confidence, "predicted": predicted},
                             index=pd.Index(index, name="cell"))
        if novelty is not None:
            table["novelty"] = novelty
        return table

    # -- persistence -------------------------------------------------------------------------
    @property
    @abstractmethod
    def fitted_parameters(self) -> int:
        """Number of values fitted to the data (what ``trainable_parameters`` reports)."""

    @abstractmethod
    def _weights(self) -> tuple[dict, str]:
        """The fitted arrays/tensors and their framework (``"numpy"`` or ``"torch"``)."""

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION, "kind": self.kind, "strategy": self.strategy,
            "config": self.config.to_params(), "classes": self.classes, "input": self.trained_on,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the annotator folder; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights, framework = self._weights()
        blob = (numpy_bytes if framework == "numpy" else torch_bytes)(weights)
        atomic_write(directory / WEIGHTS_FILE, lambda f: f.write(blob))
        if self.novelty is not None:
            self.novelty.save(directory)
        manifest = {**self._manifest(), "weights_format": framework}
        atomic_write(directory / ANNOTATOR_FILE, lambda f: f.write(json.dumps(manifest, indent=2).encode()))
        return directory


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The ``annotator.json`` of a saved annotator folder, checked for its format."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / ANNOTATOR_FILE).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{directory} is not a saved annotator ({error}).") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: unsupported annotator format {manifest.get('format')!r}.")
    if manifest.get("kind") not in KINDS:
        raise CheckpointError(f"{directory}: unknown annotator kind {manifest.get('kind')!r}.")
    return manifest


def read_saved(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and the fitted weights of a saved annotator folder (rebuilt into an annotator
    by the strategy that fitted it: :func:`scadapt.strategies.saved.rebuild_annotator`)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    try:
        weights = (load_numpy if manifest["weights_format"] == "numpy" else load_torch)(str(directory / WEIGHTS_FILE))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{directory / WEIGHTS_FILE} cannot be read ({error}); save the annotator again.") from None
    return manifest, weights


class BackboneAnnotator(Annotator):
    """A (frozen or adapted) scGPT backbone with a classifier head."""

    kind = "backbone"

    def __init__(
        self, strategy: str, config: Settings, classes: list[str], model: BackboneClassifier,
        tokenizer: GeneTokenizer, backbone_hash: str, backbone_source: str, backbone_uri: str = "",
        batch_size: int = 64,
    ):
        super().__init__(strategy, config, classes)
        self.model = model
        self.tokenizer = tokenizer
        self.backbone_hash = backbone_hash
        self.backbone_source = backbone_source
        self.backbone_uri = backbone_uri  # the checkpoint in the artifact store, for machines without the folder
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def genes_read(self) -> Container[str]:
        return self.tokenizer.vocab

    def outputs(self, adata: AnnData, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        cells = self.tokenizer.tokenize(adata)
        return self.cell_outputs(cells, np.arange(cells.n_cells), progress)

    def matrix_outputs(self, matrix, genes, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        cells = self.tokenizer.tokenize_matrix(matrix, np.asarray(genes, dtype=str))
        return self.cell_outputs(cells, np.arange(cells.n_cells), progress)

    def cell_outputs(self, cells, indices: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and probabilities for tokenized ``cells[indices]``, in that order."""
        self.model.eval()
        return backbone_outputs(self.model.backbone, self.tokenizer, cells, indices, head=self._head_proba,
                            batch_size=self.batch_size, progress=progress, desc="annotating")

    def classify(self, embedding: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` of CLS embeddings ``[n, d]`` already computed
        (frozen strategies reuse the cached embeddings; the head is the one :meth:`outputs` runs)."""
        self.model.eval()
        device = self.device
        with torch.inference_mode(), autocast(device):
            return np.concatenate([self._head_proba(torch.as_tensor(embedding[i: i + 4096], device=device)).cpu().numpy()
                                   for i in range(0, len(embedding), 4096)]) if len(embedding) else \
                np.empty((0, len(self.classes)), dtype=np.float32)

    def _head_proba(self, cls: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model.head(cls).float(), dim=-1)

    @property
    def fitted_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _weights(self) -> tuple[dict, str]:
        return trainable_state(self.model), "torch"

    def _manifest(self) -> dict[str, Any]:
        t = self.tokenizer
        return {
            **super()._manifest(),
            "backbone": {"weights_hash": self.backbone_hash, "source": self.backbone_source,
                         "uri": self.backbone_uri},
            "tokenizer": {"n_bins": t.n_bins, "max_seq_len": t.max_seq_len, "pad_value": t.pad_value,
                          "min_genes": t.min_genes, "seed": t.seed},
        }

    @classmethod
    def from_saved(cls, manifest: dict[str, Any], config: Settings, weights: dict[str, torch.Tensor],
                   model: BackboneClassifier, vocab: GeneVocab, source: str) -> BackboneAnnotator:
        """The saved annotator on ``model`` (the strategy's model rebuilt on the base checkpoint
        in ``source``, whose weights hash the caller has checked): its fitted weights loaded."""
        expected = set(trainable_state(model))
        if set(weights) != expected:
            missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
            raise CheckpointError(f"Saved annotator weights do not fit the model (missing {missing[:5]}, unexpected {extra[:5]}).")
        device = next(model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
        tokenizer = GeneTokenizer(vocab, **manifest["tokenizer"])
        recorded = manifest["backbone"]
        return cls(manifest["strategy"], config, manifest["classes"], model, tokenizer,
                   recorded["weights_hash"], str(source), recorded.get("uri", ""))

"""Trained annotators ("runners"): AnnData in, labels, confidences and embeddings out.

An annotator is saved as a folder with ``annotator.json`` (strategy, hyperparameters, classes,
provenance) and ``weights.safetensors`` holding only what the strategy fitted: for backbone
strategies the trainable weights plus the SHA-256 of the base checkpoint they sit on (the base
itself is loaded from its own folder and checked against that hash). No pickle anywhere.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Container
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save as numpy_bytes
from safetensors.torch import load_file as load_torch
from safetensors.torch import save as torch_bytes
from tqdm.auto import tqdm

from scadapt.backbone import load_backbone
from scadapt.data.preprocess import log_normalized
from scadapt.data.validation import check_values
from scadapt.errors import CheckpointError, InputDataError
from scadapt.models.build import build_annotation_model, trainable_state
from scadapt.models.head import AnnotationModel
from scadapt.storage import atomic_write
from scadapt.strategies import StrategyConfig, get_strategy
from scadapt.tokenization import GeneTokenizer
from scadapt.training.batching import length_grouped_batches
from scadapt.training.devices import autocast

ANNOTATOR_FILE = "annotator.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_VERSION = 1
UNASSIGNED = "unassigned"  # the label of a cell that expresses none of the model's genes

log = logging.getLogger(__name__)


class Annotator(ABC):
    """A fitted cell-type classifier for one strategy."""

    kind: str

    def __init__(self, strategy: str, config: StrategyConfig, classes: list[str]):
        self.strategy = strategy
        self.config = config
        self.classes = [str(c) for c in classes]

    # -- prediction --------------------------------------------------------------------------
    @abstractmethod
    def outputs(self, adata: AnnData, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``[n_cells, d]`` and class probabilities ``[n_cells, n_classes]``."""

    def predict_proba(self, adata: AnnData) -> np.ndarray:
        return self.outputs(adata)[1]

    def embed(self, adata: AnnData) -> np.ndarray:
        return self.outputs(adata)[0]

    def predict(self, adata: AnnData) -> pd.DataFrame:
        """One row per cell: ``label`` and ``confidence`` (the top class probability); a cell that
        expresses none of the model's genes is ``unassigned`` with confidence 0."""
        return self.table(adata.obs_names, self.outputs(adata)[1], self.expressed(adata))

    def annotate(self, adata: AnnData, key: str = "scadapt", progress: bool = True) -> AnnData:
        """Write ``obs[f"{key}_label"]``, ``obs[f"{key}_confidence"]`` and ``obsm[f"X_{key}"]``."""
        embedding, proba = self.outputs(adata, progress=progress)
        table = self.table(adata.obs_names, proba, self.expressed(adata))
        categories = self.classes + ([UNASSIGNED] if (table["label"] == UNASSIGNED).any() else [])
        adata.obs[f"{key}_label"] = pd.Categorical(table["label"], categories=categories)
        adata.obs[f"{key}_confidence"] = table["confidence"].to_numpy()
        adata.obsm[f"X_{key}"] = embedding
        return adata

    def expressed(self, adata: AnnData) -> np.ndarray:
        """Whether each cell expresses at least one gene this model reads (bool ``[n_cells]``)."""
        columns = np.flatnonzero([gene in self.genes_read for gene in adata.var_names.astype(str)])
        matrix = adata.X[:, columns]
        counts = (matrix != 0).sum(axis=1) if sp.issparse(matrix) else np.count_nonzero(matrix, axis=1)
        return np.asarray(counts).ravel() > 0

    @property
    @abstractmethod
    def genes_read(self) -> Container[str]:
        """The gene symbols whose expression the model reads."""

    def table(self, index, proba: np.ndarray, expressed: np.ndarray | None = None) -> pd.DataFrame:
        """``label`` and ``confidence`` per cell; cells not ``expressed`` are flagged, not labelled."""
        best = proba.argmax(axis=1)
        labels = np.asarray(self.classes, dtype=object)[best]
        confidence = proba[np.arange(len(best)), best].astype(np.float64)
        if expressed is not None and not expressed.all():
            log.warning("%d of %d cells express none of the model's genes: labelled %r with confidence 0.",
                        int((~expressed).sum()), len(expressed), UNASSIGNED)
            labels[~expressed], confidence[~expressed] = UNASSIGNED, 0.0
        return pd.DataFrame({"label": labels, "confidence": confidence}, index=pd.Index(index, name="cell"))

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
            "config": self.config.to_params(), "classes": self.classes,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the annotator folder; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights, framework = self._weights()
        blob = (numpy_bytes if framework == "numpy" else torch_bytes)(weights)
        atomic_write(directory / WEIGHTS_FILE, lambda f: f.write(blob))
        manifest = {**self._manifest(), "weights_format": framework}
        atomic_write(directory / ANNOTATOR_FILE, lambda f: f.write(json.dumps(manifest, indent=2).encode()))
        return directory

    @staticmethod
    def load(directory: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> Annotator:
        """Read a saved annotator. Backbone strategies need their base checkpoint: ``checkpoint``
        or the folder recorded at training time; its weights hash must match."""
        directory = Path(directory)
        try:
            manifest = json.loads((directory / ANNOTATOR_FILE).read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{directory} is not a saved annotator ({error}).") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{directory}: unsupported annotator format {manifest.get('format')!r}.")
        try:
            weights = (load_numpy if manifest["weights_format"] == "numpy" else load_torch)(str(directory / WEIGHTS_FILE))
        except Exception as error:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"{directory / WEIGHTS_FILE} cannot be read ({error}); save the annotator again.") from None
        config = get_strategy(manifest["strategy"]).config_class.from_params(manifest["config"])
        if manifest["kind"] == ExpressionAnnotator.kind:
            return ExpressionAnnotator(manifest["strategy"], config, manifest["classes"], manifest["genes"], weights)
        return BackboneAnnotator.from_saved(manifest, config, weights, checkpoint, device)


class BackboneAnnotator(Annotator):
    """A (frozen or adapted) scGPT backbone with a classifier head."""

    kind = "backbone"

    def __init__(
        self, strategy: str, config: StrategyConfig, classes: list[str], model: AnnotationModel,
        tokenizer: GeneTokenizer, backbone_hash: str, backbone_source: str, batch_size: int = 64,
    ):
        super().__init__(strategy, config, classes)
        self.model = model
        self.tokenizer = tokenizer
        self.backbone_hash = backbone_hash
        self.backbone_source = backbone_source
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

    def cell_outputs(self, cells, indices: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and probabilities for tokenized ``cells[indices]``, in that order."""
        device = self.device
        self.model.eval()
        embedding = np.empty((len(indices), self.model.backbone.config.d_model), dtype=np.float32)
        proba = np.empty((len(indices), len(self.classes)), dtype=np.float32)
        lengths = cells.lengths[indices]
        with torch.inference_mode(), autocast(device):
            for rows in tqdm(length_grouped_batches(lengths, self.batch_size, rng=None), desc="annotating",
                             disable=not progress, leave=False):
                batch = {k: v.to(device) for k, v in self.tokenizer.batch(cells, indices[rows]).items()}
                cls = self.model.backbone(batch["gene_ids"], batch["values"], batch["padding_mask"])
                embedding[rows] = cls.float().cpu().numpy()
                proba[rows] = torch.softmax(self.model.head(cls).float(), dim=-1).cpu().numpy()
        return embedding, proba

    @property
    def fitted_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _weights(self) -> tuple[dict, str]:
        return trainable_state(self.model), "torch"

    def _manifest(self) -> dict[str, Any]:
        t = self.tokenizer
        return {
            **super()._manifest(),
            "backbone": {"weights_hash": self.backbone_hash, "source": self.backbone_source},
            "tokenizer": {"n_bins": t.n_bins, "max_seq_len": t.max_seq_len, "pad_value": t.pad_value,
                          "min_genes": t.min_genes, "seed": t.seed},
        }

    @classmethod
    def from_saved(cls, manifest, config, weights, checkpoint, device) -> BackboneAnnotator:
        recorded = manifest["backbone"]
        source = checkpoint or recorded["source"]
        loaded = load_backbone(source, with_decoders=False, device=device)
        if loaded.weights_hash != recorded["weights_hash"]:
            raise CheckpointError(
                f"The backbone in {source} (weights hash {loaded.weights_hash[:16]}) is not the one this annotator "
                f"was trained on ({recorded['weights_hash'][:16]}). Pass the original checkpoint folder."
            )
        model = build_annotation_model(manifest["strategy"], config, loaded.model, len(manifest["classes"])).to(device)
        expected = set(trainable_state(model))
        if set(weights) != expected:
            missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
            raise CheckpointError(f"Saved annotator weights do not fit the model (missing {missing[:5]}, unexpected {extra[:5]}).")
        model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
        tokenizer = GeneTokenizer(loaded.vocab, **manifest["tokenizer"])
        return cls(manifest["strategy"], config, manifest["classes"], model, tokenizer,
                   recorded["weights_hash"], str(source))


class ExpressionAnnotator(Annotator):
    """``pca_logreg``: log-normalised expression of fixed genes -> PCA -> standardised scores ->
    multinomial logistic regression, all as plain arrays."""

    kind = "expression"
    ARRAYS = ("pca_mean", "pca_components", "score_mean", "score_scale", "coef", "intercept")

    def __init__(
        self, strategy: str, config: StrategyConfig, classes: list[str], genes: list[str], arrays: dict[str, np.ndarray]
    ):
        super().__init__(strategy, config, classes)
        self.genes = [str(g) for g in genes]
        self.arrays = {name: np.asarray(arrays[name], dtype=np.float64) for name in self.ARRAYS}

    @property
    def genes_read(self) -> Container[str]:
        return set(self.genes)

    def features(self, adata: AnnData) -> np.ndarray:
        """Log-normalised expression of the model's genes, ``[n_cells, n_genes]`` (absent genes = 0)."""
        check_values(adata.X)
        position = pd.Index(adata.var_names.astype(str)).get_indexer(self.genes)
        found = position >= 0
        if found.mean() < 0.5:
            raise InputDataError(
                f"Only {found.sum()} of the {len(self.genes)} genes this model uses are in the data "
                f"(e.g. missing: {', '.join(np.asarray(self.genes)[~found][:5])}). Use gene symbols as var_names."
            )
        matrix = log_normalized(adata.X)
        dense = np.zeros((adata.n_obs, len(self.genes)), dtype=np.float64)
        dense[:, found] = matrix[:, position[found]].toarray()
        return dense

    def outputs(self, adata: AnnData, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        a = self.arrays
        scores = (self.features(adata) - a["pca_mean"]) @ a["pca_components"].T
        standardized = (scores - a["score_mean"]) / a["score_scale"]
        logits = standardized @ a["coef"].T + a["intercept"]
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return scores.astype(np.float32), proba.astype(np.float32)

    @property
    def fitted_parameters(self) -> int:
        return int(sum(array.size for array in self.arrays.values()))

    def _weights(self) -> tuple[dict, str]:
        return {name: np.ascontiguousarray(value) for name, value in self.arrays.items()}, "numpy"

    def _manifest(self) -> dict[str, Any]:
        return {**super()._manifest(), "genes": self.genes}

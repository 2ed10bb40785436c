"""How unlike the training cells a cell is, in the model's own embedding: a class-conditional
Mahalanobis distance (one Gaussian per class with a shared, shrunk covariance; Lee et al., 2018).

The softmax confidence separates cells of a type the model never saw poorly (they are confidently
called as the nearest known type); the distance to every known class in the embedding does better
(``benchmarks/novelty.py``). A threshold on the score is set on validation cells, which the model
did not train on but whose types it knows, so that a chosen fraction of known cells is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from scadapt.errors import CheckpointError
from scadapt.storage import atomic_write

NOVELTY_FILE = "novelty.safetensors"
DEFAULT_REJECTED = 0.05  # of known cells a calibrated threshold rejects
_SHRINKAGE = 0.1  # of the covariance replaced by its mean variance: stable with few cells per dimension


@dataclass
class NoveltyScorer:
    """Class means ``[n_classes, d]``, the shared precision matrix ``[d, d]`` and the sorted scores of
    known validation cells ``[n_val]``, which calibrate the threshold."""

    means: np.ndarray
    precision: np.ndarray
    reference: np.ndarray

    @classmethod
    def fit(cls, embedding: np.ndarray, codes: np.ndarray, validation: np.ndarray) -> NoveltyScorer:
        """From the training cells' ``embedding`` ``[n, d]`` with class ``codes`` ``[n]``, and the
        embedding of known validation cells ``[m, d]`` (the calibration set)."""
        embedding = np.asarray(embedding, dtype=np.float64)
        classes, position = np.unique(codes, return_inverse=True)
        means = np.stack([embedding[position == i].mean(axis=0) for i in range(len(classes))])
        centred = embedding - means[position]
        covariance = centred.T @ centred / max(len(embedding) - len(classes), 1)
        scale = float(np.trace(covariance)) / len(covariance) or 1.0
        covariance = (1 - _SHRINKAGE) * covariance + _SHRINKAGE * scale * np.eye(len(covariance))
        scorer = cls(means, np.linalg.inv(covariance), np.empty(0))
        scorer.reference = np.sort(scorer.score(validation))
        return scorer

    def score(self, embedding: np.ndarray) -> np.ndarray:
        """Novelty of each cell ``[n]``: the square root of its smallest Mahalanobis distance to a class mean."""
        embedding = np.asarray(embedding, dtype=np.float64)
        if len(embedding) == 0:
            return np.empty(0)
        projected = embedding @ self.precision
        own = np.einsum("ij,ij->i", projected, embedding)[:, None]
        cross = projected @ self.means.T
        between = np.einsum("ij,jk,ik->i", self.means, self.precision, self.means)[None, :]
        return np.sqrt(np.maximum(own - 2 * cross + between, 0.0).min(axis=1))

    def threshold(self, rejected: float = DEFAULT_REJECTED) -> float:
        """The score above which a cell is called unknown, so that ``rejected`` of the known
        validation cells would be (``inf`` when nothing is to be rejected)."""
        if not 0.0 <= rejected <= 1.0:
            raise ValueError(f"the fraction of known cells to reject is between 0 and 1, not {rejected}")
        if rejected == 0.0 or len(self.reference) == 0:
            return float("inf")
        return float(np.quantile(self.reference, 1.0 - rejected))

    def save(self, directory: Path) -> None:
        arrays = {"means": self.means, "precision": self.precision, "reference": self.reference}
        blob = save({name: np.ascontiguousarray(value, dtype=np.float64) for name, value in arrays.items()})
        atomic_write(directory / NOVELTY_FILE, lambda handle: handle.write(blob))

    @classmethod
    def read(cls, directory: Path) -> NoveltyScorer | None:
        """The scorer saved with an annotator, or None for one saved without (before scorers existed)."""
        path = Path(directory) / NOVELTY_FILE
        if not path.is_file():
            return None
        try:
            arrays = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"{path} cannot be read ({error}); save the annotator again.") from None
        return cls(arrays["means"], arrays["precision"], arrays["reference"])


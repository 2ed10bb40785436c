"""How unlike the training cells a cell is, in the model's own embedding: a class-conditional
Mahalanobis distance (one Gaussian per class with a shared, shrunk covariance; Lee et al., 2018).

The softmax confidence separates cells of a type the model never saw poorly (they are confidently
called as the nearest known type); the distance to every known class in the embedding does better
(``benchmarks/novelty.py``). A threshold on the score is set on validation cells, which the model
did not train on but whose types it knows, so that a chosen fraction of known cells is rejected.

A fitted embedding can spread its training cells along directions that cells it never saw do
not share (PCA on a few hundred cells: the later components are those cells' own noise, along
which unseen cells vary a third as much). Whitening such a direction makes the training cells look
novel, so only the directions along which validation cells vary at least half as much as training
cells are scored, and the threshold is the higher of the two calibrated on the validation cells and
on the training cells: a model annotating the cells it was trained on rejects no more of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from scadapt.infra.errors import CheckpointError
from scadapt.infra.storage import atomic_write

NOVELTY_FILE = "novelty.safetensors"
DEFAULT_REJECTED = 0.05  # of known cells a calibrated threshold rejects
_SHRINKAGE = 0.1  # of the covariance replaced by its mean variance: stable with few cells per dimension
_SHARED = 0.5  # a direction is scored where unseen cells vary at least this fraction as much as training cells


@dataclass
class NoveltyScorer:
    """Class means ``[n_classes, d]``, the shared precision matrix ``[d, d]`` and the sorted scores of
    known validation cells ``[n_val]`` and of the training cells ``[n_train]`` (empty in scorers saved
    before 2026-12-07), which calibrate the threshold."""

    means: np.ndarray
    precision: np.ndarray
    reference: np.ndarray
    fitted: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def fit(cls, embedding: np.ndarray, codes: np.ndarray, validation: np.ndarray,
            validation_codes: np.ndarray) -> NoveltyScorer:
        """From the training cells' ``embedding`` ``[n, d]`` with class ``codes`` ``[n]``, and the
        embedding of validation cells ``[m, d]`` with theirs ``[m]`` (the calibration set: cells
        of a class absent from ``codes`` are left out of it)."""
        embedding, validation = np.asarray(embedding, dtype=np.float64), np.asarray(validation, dtype=np.float64)
        classes, position = np.unique(codes, return_inverse=True)
        means = np.stack([embedding[position == i].mean(axis=0) for i in range(len(classes))])
        centred = embedding - means[position]
        covariance = centred.T @ centred / max(len(embedding) - len(classes), 1)
        scale = float(np.trace(covariance)) / len(covariance) or 1.0
        variances, axes = np.linalg.eigh((1 - _SHRINKAGE) * covariance + _SHRINKAGE * scale * np.eye(len(covariance)))
        known = np.isin(validation_codes, classes)
        validation = validation[known]
        unseen = (validation - means[np.searchsorted(classes, validation_codes[known])]) @ axes
        spread = (centred @ axes).var(axis=0).clip(1e-12)
        ratio = unseen.var(axis=0) / spread if len(validation) > 1 else np.ones(len(spread))
        shared = ratio >= _SHARED
        shared[np.argmax(ratio)] = True  # at least one direction
        scorer = cls(means, (axes[:, shared] / variances[shared]) @ axes[:, shared].T, np.empty(0))
        scorer.reference, scorer.fitted = np.sort(scorer.score(validation)), np.sort(scorer.score(embedding))
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
        """The score above which a cell is called unknown: the split-conformal quantile of the known
        validation cells' scores, so that a new cell of a known type is rejected with probability
        at most ``rejected``, or the training cells' if higher (``inf`` when nothing is to be
        rejected, or too few cells calibrate it)."""
        if not 0.0 <= rejected <= 1.0:
            raise ValueError(f"the fraction of known cells to reject is between 0 and 1, not {rejected}")
        return max(_conformal(self.reference, rejected), _conformal(self.fitted, rejected) if len(self.fitted) else 0.0)

    def save(self, directory: Path) -> None:
        arrays = {"means": self.means, "precision": self.precision, "reference": self.reference, "fitted": self.fitted}
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
        return cls(arrays["means"], arrays["precision"], arrays["reference"], arrays.get("fitted", np.empty(0)))


def _conformal(scores: np.ndarray, rejected: float) -> float:
    """The ``ceil((n + 1)(1 - rejected))``-th smallest of ``n`` sorted ``scores`` (``inf`` past the last)."""
    rank = math.ceil((len(scores) + 1) * (1.0 - rejected))
    return float(scores[rank - 1]) if 0 < rank <= len(scores) else float("inf")


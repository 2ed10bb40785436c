"""Hyperparameter search with Optuna, tracked in MLflow (``tune``)."""

from scadapt.lazy import lazy_attributes

_WHERE = {"TuneJob": "scadapt.training.config", "TuneResult": "scadapt.tuning.study", "tune": "scadapt.tuning.study"}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
__all__ = list(_WHERE)

"""Hyperparameter search with Optuna, tracked in MLflow (``tune``)."""

from scadapt.tuning.study import TuneJob, TuneResult, tune

__all__ = ["TuneJob", "TuneResult", "tune"]

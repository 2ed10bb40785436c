"""MLflow tracking helpers."""

from scadapt.tracking.runs import ensure_experiment, log_params, tracked_run

__all__ = ["ensure_experiment", "log_params", "tracked_run"]

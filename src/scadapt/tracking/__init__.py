"""MLflow tracking helpers."""

from scadapt.tracking.runs import ensure_experiment, log_params, shared_run, tracked_run

__all__ = ["ensure_experiment", "log_params", "shared_run", "tracked_run"]

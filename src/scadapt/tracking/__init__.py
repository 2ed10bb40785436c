"""MLflow tracking helpers."""

from scadapt.tracking.runs import log_params, tracked_run

__all__ = ["log_params", "tracked_run"]

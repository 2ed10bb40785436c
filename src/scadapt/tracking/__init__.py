"""MLflow tracking helpers."""

from scadapt.tracking.contract import CANDIDATE_TAG, ENTRY_POINT_TAG, experiment_name
from scadapt.tracking.runs import ensure_experiment, log_params, shared_run, tracked_run

__all__ = ["CANDIDATE_TAG", "ENTRY_POINT_TAG", "ensure_experiment", "experiment_name", "log_params", "shared_run",
           "tracked_run"]

"""MLflow tracking helpers. The names load on first use, so the contract's constants
(:mod:`scadapt.tracking.contract`) are read without importing MLflow."""

from scadapt.infra.lazy import lazy_attributes

_WHERE = {
    **dict.fromkeys(("CANDIDATE_TAG", "ENTRY_POINT_TAG", "experiment_name"), "scadapt.tracking.contract"),
    **dict.fromkeys(("ensure_experiment", "log_params", "shared_run", "tracked_run"), "scadapt.tracking.runs"),
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
__all__ = list(_WHERE)

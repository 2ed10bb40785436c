"""Names shared through MLflow: experiment names and the tags that stages read from each other."""

from __future__ import annotations

ENTRY_POINT_TAG = "scadapt.entry_point"  # which command made a run
CANDIDATE_TAG = "scadapt.candidate"  # "true" on runs that compete for @champion
WORKER_TAG = "scadapt.worker"  # host:pid:start of the process doing a run (to close it if that process died)
# MLflow 3's UI opens an experiment on the view its kind asks for; ours hold model training runs.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def experiment_name(dataset: str) -> str:
    """The experiment of a dataset's train, tune and pipeline runs."""
    return f"scadapt-{dataset}"

# Metrics of every fit besides the validation/test summary metrics (``val_macro_f1``, ...): what a
# promotion policy may rank or gate on.
FIT_METRICS = ("trainable_parameters", "total_parameters", "trainable_fraction", "runtime_sec", "peak_rss_mb",
               "fit_added_rss_mb", "peak_cuda_mb", "embedding_sec", "best_epoch", "epochs_run", "runner_size_bytes",
               "gene_coverage")

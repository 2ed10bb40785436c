"""The MLflow contract: what stages write into MLflow and read back from each other.

Experiment names, tag names, artifact paths and the annotator artifact live here and nowhere else,
so a stage never reads another's runs through a string literal of its own.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scadapt.models.annotator import Annotator

# -- tags -------------------------------------------------------------------------------------
ENTRY_POINT_TAG = "scadapt.entry_point"  # which command made a run
CANDIDATE_TAG = "scadapt.candidate"  # "true" on runs that compete for @champion
WORKER_TAG = "scadapt.worker"  # host:pid:start of the process doing a run (to close it if that process died)
INTERRUPTED_TAG = "scadapt.interrupted"  # "true" on a run closed after its process died
CLOSED_BY_TAG = "scadapt.closed_by"  # on such a run: which worker closed it, and why
JOINED_RUN_TAG = "scadapt.joined_run"  # on a launcher's run: the existing run whose work it joined
WARNINGS_TAG = "scadapt.warnings"  # what a pipeline warned about, " | "-separated
RESULTS_RUN_TAG = "scadapt.results_run"  # on a pipeline's summary run: the parent run of its studies and report
STUDY_TAG = "scadapt.study"  # the Optuna study name, on the study's parent run and its trials
STUDY_RUN_TAG = "scadapt.study_run"  # "true" on a study's parent run
TRIAL_TAG = "scadapt.trial"  # the trial number of a trial's run
PRUNED_AFTER_EPOCH_TAG = "scadapt.pruned_after_epoch"
BEST_RUN_TAG, BEST_TRIAL_TAG = "scadapt.best_run_id", "scadapt.best_trial"  # on a study's parent run
BACKBONE_HASH_TAG = "scadapt.backbone_hash"  # on a run that logged a backbone checkpoint: its weights hash
PRETRAIN_FINGERPRINT_TAG = "scadapt.pretrain_fingerprint"  # on a pretraining run: its settings' fingerprint
BENCHMARK_TAG = "scadapt.benchmark"  # the benchmark's fingerprint, on its parent and cell runs
BENCHMARK_RUN_TAG = "scadapt.benchmark_run"  # "true" on a benchmark's parent run
CELL_TAG = "scadapt.cell"  # dataset/strategy/split of a benchmark cell's run
TUNED_BY_TAG = "scadapt.tuned_by"  # on a benchmark cell: the study run whose settings it used

# -- artifacts --------------------------------------------------------------------------------
ANNOTATOR_ARTIFACT = "annotator"  # the fitted annotator folder (models.annotator's format)
SERVING_ARTIFACT = "serving"  # genes.json and input_example.csv, for the served model's signature
REPORT_ARTIFACT = "report"  # on a benchmark's parent run: report.md, its tables and figures
BACKBONE_ARTIFACT = "backbone"  # in a served model: the base checkpoint folder (absent without a backbone)
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
# costs: smaller is better (the summary metrics and gene_coverage are larger-is-better)
LOWER_IS_BETTER_METRICS = frozenset({"trainable_parameters", "total_parameters", "trainable_fraction", "runtime_sec",
                                     "peak_rss_mb", "fit_added_rss_mb", "peak_cuda_mb", "embedding_sec",
                                     "runner_size_bytes"})
UNORDERED_METRICS = frozenset({"best_epoch", "epochs_run"})  # neither better high nor low


# -- the annotator artifact -----------------------------------------------------------------------
def log_annotator(annotator: Annotator) -> int:
    """Log the annotator into the active run; returns its size in bytes."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = annotator.save(Path(tmp) / ANNOTATOR_ARTIFACT)
        mlflow.log_artifacts(str(folder), ANNOTATOR_ARTIFACT)
        return sum(f.stat().st_size for f in folder.iterdir())


def download_annotator(run_id: str, destination: str | Path) -> Path:
    """The run's annotator folder, downloaded under ``destination``."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ANNOTATOR_ARTIFACT,
                                                    dst_path=str(destination)))


def download_serving_inputs(run_id: str, destination: str | Path) -> Path:
    """The run's ``serving`` folder (``genes.json``, ``input_example.csv``), downloaded under ``destination``."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SERVING_ARTIFACT,
                                                    dst_path=str(destination)))


def annotator_checkpoint(annotator_dir: Path) -> Path | None:
    """The base checkpoint a downloaded annotator needs (None without a backbone)."""
    from scadapt.models.annotator import recorded_checkpoint

    return recorded_checkpoint(annotator_dir)


def load_annotator(run_id: str, device: str = "cpu") -> Annotator:
    """The run's annotator, ready to predict (its backbone loaded from the recorded checkpoint)."""
    from scadapt.models.annotator import Annotator

    with tempfile.TemporaryDirectory() as tmp:
        return Annotator.load(download_annotator(run_id, tmp), device=device)

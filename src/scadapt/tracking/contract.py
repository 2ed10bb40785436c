"""The MLflow contract: what stages write into MLflow and read back from each other.

Experiment names, tag names and artifact paths live here and nowhere else, so a stage never reads
another's runs through a string literal of its own. Constants only: the artifacts themselves are
written and read by :mod:`scadapt.artifacts`.
"""

from __future__ import annotations

# -- tags -------------------------------------------------------------------------------------
# what a train or tune run is about (plain names: the columns the MLflow UI compares runs by)
DATASET_TAG, STRATEGY_TAG, REGIME_TAG, SPLIT_TAG, FOLD_TAG = "dataset", "strategy", "regime", "split", "fold"
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
PRUNED_AFTER_EPOCH_TAG = "scadapt.pruned_after_epoch"  # on a pruned trial's run: the epoch it was stopped after
BEST_RUN_TAG, BEST_TRIAL_TAG = "scadapt.best_run_id", "scadapt.best_trial"  # on a study's parent run
BACKBONE_HASH_TAG = "scadapt.backbone_hash"  # on a run that logged a backbone checkpoint: its weights hash
PRETRAIN_FINGERPRINT_TAG = "scadapt.pretrain_fingerprint"  # on a pretraining run: its settings' fingerprint
BENCHMARK_TAG = "scadapt.benchmark"  # the benchmark's fingerprint, on its parent and cell runs
BENCHMARK_RUN_TAG = "scadapt.benchmark_run"  # "true" on a benchmark's parent run
CELL_TAG = "scadapt.cell"  # dataset/split/strategy@content of a benchmark cell's run (MatrixCell.identity)
TUNED_BY_TAG = "scadapt.tuned_by"  # on a benchmark cell: the study run whose settings it used
TRIALS_ENDED_BY_TAG = "scadapt.trials_ended_by"  # on a study cell: n_trials, timeout or the time budget

# -- artifacts --------------------------------------------------------------------------------
ANNOTATOR_ARTIFACT = "annotator"  # the fitted annotator folder (models.annotator's format)
SERVING_ARTIFACT = "serving"  # genes.json and input_example.csv, for the served model's signature
GENES_FILE, INPUT_EXAMPLE_FILE = "genes.json", "input_example.csv"  # in the serving artifact (and the served model)
PER_CLASS_TEST_TABLE = "tables/per_class_test.csv"  # on a fit's run: test F1 per class
REPORT_ARTIFACT = "report"  # on a benchmark's parent run: report.md, its tables and figures
FIRST_ANSWER_ARTIFACT = "first_answer/ranking.csv"  # on a benchmark's parent run: the ranking before backbone work
PLAN_ARTIFACT = "plan/plan.csv"  # on a benchmark's parent run: what the job planned to run and its estimated seconds
LABEL_COUNTS_FILE = "label_counts.csv"  # on a predict run: cells per label (majority-voted where asked)
PREDICTIONS_FILE = "predictions.csv.gz"  # on a predict run: the annotation columns of every cell, compressed
BACKBONE_ARTIFACT = "backbone"  # in a served model: the base checkpoint folder (absent without a backbone)
# MLflow 3's UI opens an experiment on the view its kind asks for; ours hold model training runs.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


# -- experiments ------------------------------------------------------------------------------
PRETRAIN_EXPERIMENT = "scadapt-pretrain"  # pretraining runs (demo backbone, continued pretraining)
BACKBONE_EXPERIMENT = "scadapt-backbones"  # runs that hold a published backbone checkpoint
BENCHMARK_EXPERIMENT = "scadapt-benchmark"  # the benchmark's parent run and its cells (unless launched by mlflow run)
PREDICT_EXPERIMENT = "scadapt-predict"  # runs of `scadapt predict`


def experiment_name(dataset: str) -> str:
    """The experiment of a dataset's train, tune and pipeline runs."""
    return f"scadapt-{dataset}"


# -- metrics ----------------------------------------------------------------------------------
# Metrics of every fit besides the validation/test summary metrics (``val_macro_f1``, ...): what a
# promotion policy may rank or gate on.
FIT_METRICS = ("trainable_parameters", "total_parameters", "trainable_fraction", "runtime_sec", "peak_rss_mb",
               "fit_added_rss_mb", "peak_cuda_mb", "embedding_sec", "best_epoch", "epochs_run", "runner_size_bytes",
               "gene_coverage", "novelty_threshold")
# costs: smaller is better (the summary metrics and gene_coverage are larger-is-better)
LOWER_IS_BETTER_METRICS = frozenset({"trainable_parameters", "total_parameters", "trainable_fraction", "runtime_sec",
                                     "peak_rss_mb", "fit_added_rss_mb", "peak_cuda_mb", "embedding_sec",
                                     "runner_size_bytes"})
UNORDERED_METRICS = frozenset({"best_epoch", "epochs_run", "novelty_threshold"})  # neither better high nor low

"""The benchmark matrix (``benchmark``): datasets x strategies x regime splits, tuned, tracked,
resumable, aggregated into tables, figures and a report, ending with a champion per dataset."""

from scadapt.benchmark.config import BASELINES, TUNING_MODES, BenchmarkConfig
from scadapt.benchmark.matrix import MatrixCell, plan_matrix
from scadapt.benchmark.results import BenchmarkTables, paired_comparison, rank_strategies, summary_table
from scadapt.benchmark.runner import BenchmarkResult, run_benchmark

__all__ = ["BASELINES", "TUNING_MODES", "BenchmarkConfig", "BenchmarkResult", "BenchmarkTables", "MatrixCell",
           "paired_comparison", "plan_matrix", "rank_strategies", "run_benchmark", "summary_table"]

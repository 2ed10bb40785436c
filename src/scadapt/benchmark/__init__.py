"""The benchmark matrix (``benchmark``): datasets x strategies x regime splits, tuned, tracked,
resumable, aggregated into tables, figures and a report, ending with a champion per dataset."""

from scadapt.infra.lazy import lazy_attributes

_WHERE = {
    **dict.fromkeys(("TUNING_MODES", "BenchmarkConfig"), "scadapt.benchmark.config"),
    **dict.fromkeys(("MatrixCell", "plan_matrix"), "scadapt.benchmark.matrix"),
    **dict.fromkeys(("BenchmarkTables", "paired_comparison", "rank_strategies", "summary_table"),
                    "scadapt.benchmark.results"),
    **dict.fromkeys(("BenchmarkResult", "run_benchmark"), "scadapt.benchmark.runner"),
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
__all__ = list(_WHERE)

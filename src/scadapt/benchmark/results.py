"""From finished cell runs to the tables of a benchmark: one row per run, mean and spread per
setting, the ranking by the registry's rule, and the paired comparison with the baselines.

Everything here is a pure function of the run table, so it is tested on made-up numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.entities import Run

from scadapt.benchmark.matrix import MatrixCell
from scadapt.registry import PromotionPolicy
from scadapt.strategies import baselines as baseline_strategies

METRICS = ("test_macro_f1", "test_balanced_accuracy", "test_accuracy", "test_weighted_f1", "val_macro_f1",
           "val_balanced_accuracy", "val_accuracy", "trainable_parameters", "total_parameters", "runtime_sec",
           "peak_rss_mb", "peak_cuda_mb", "embedding_sec", "gene_coverage")
SETTING_KEYS = ["dataset", "regime", "setting", "label_fraction"]
COMPARED = "test_macro_f1"  # the paired comparison's metric


@dataclass
class BenchmarkTables:
    runs: pd.DataFrame  # one row per dataset x split x strategy (a matrix cell)
    summary: pd.DataFrame  # mean/std/n over the replicates of each setting and strategy
    ranking: pd.DataFrame  # per dataset and setting, best first, by the policy's rule on test means
    paired: pd.DataFrame  # each strategy minus each baseline, paired over replicates
    champions: dict[str, dict[str, str]] = field(default_factory=dict)  # dataset -> strategy, run_id, model
    per_class: pd.DataFrame = field(default_factory=pd.DataFrame)  # champion strategy: class F1 per setting


def results_table(cells: Iterable[tuple[MatrixCell, Run]]) -> pd.DataFrame:
    """The tidy run table: the cell's coordinates, its metrics and its run id."""
    rows = []
    for cell, run in cells:
        metrics = run.data.metrics
        rows.append({"dataset": cell.dataset, "regime": cell.regime, "setting": cell.setting,
                     "label_fraction": cell.label_fraction if cell.label_fraction is not None else np.nan,
                     "replicate": cell.replicate, "fold": cell.fold if cell.fold is not None else np.nan,
                     "held_out": cell.held_out, "split": cell.split, "strategy": cell.strategy,
                     **{m: metrics.get(m, np.nan) for m in METRICS}, "run_id": run.info.run_id})
    return pd.DataFrame(rows, columns=[*SETTING_KEYS, "replicate", "fold", "held_out", "split", "strategy",
                                       *METRICS, "run_id"])


def summarise(runs: pd.DataFrame, policy: PromotionPolicy, baselines: tuple[str, ...] | None = None) -> BenchmarkTables:
    """The tables that follow from the run table alone (champions and per-class F1 come later)."""
    summary = summary_table(runs)
    return BenchmarkTables(runs, summary, rank_strategies(summary, policy), paired_comparison(runs, baselines))


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setting and strategy: ``<metric>_mean``, ``<metric>_std`` (sample std; 0 for one
    replicate) and ``n`` replicates."""
    keys = [*SETTING_KEYS, "strategy"]
    grouped = runs.groupby(keys, sort=False, dropna=False)
    mean = grouped[list(METRICS)].mean().add_suffix("_mean")
    std = grouped[list(METRICS)].std(ddof=1).fillna(0.0).add_suffix("_std")
    table = pd.concat([mean, std], axis=1)
    table.insert(0, "n", grouped.size())
    ordered = ["n"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    return table[ordered].reset_index()


def rank_strategies(summary: pd.DataFrame, policy: PromotionPolicy) -> pd.DataFrame:
    """Rank the strategies of each dataset and setting by the policy's rule applied to the
    test means (``val_macro_f1`` in the policy ranks by ``test_macro_f1`` here): the policy's
    metrics in order, each rounded to its ``decimals``, ties going to the next metric, and the
    strategy name last so the order is always the same.

    The policy ranks validation metrics because promotion chooses a model; a benchmark compares
    strategies, and the test cells of every fold are its unbiased measure.
    """
    rows = []
    for key, group in summary.groupby(SETTING_KEYS, sort=False, dropna=False):
        keyed = []
        for _, row in group.iterrows():
            metrics = {k.metric: row.get(f"{_on_test(k.metric)}_mean") for k in policy.rank_by}
            metrics = {k: float(v) for k, v in metrics.items() if v is not None and not pd.isna(v)}
            keyed.append((policy.sort_key(metrics), row["strategy"], row))
        for rank, (_, strategy, row) in enumerate(sorted(keyed, key=lambda item: (item[0], item[1])), start=1):
            rows.append({**dict(zip(SETTING_KEYS, key, strict=True)), "rank": rank, "strategy": strategy,
                         **{f"{_on_test(k.metric)}_mean": row.get(f"{_on_test(k.metric)}_mean") for k in policy.rank_by},
                         f"{COMPARED}_std": row[f"{COMPARED}_std"], "n": row["n"]})
    return pd.DataFrame(rows)


def _on_test(metric: str) -> str:
    return "test_" + metric.removeprefix("val_") if metric.startswith("val_") else metric


def paired_comparison(runs: pd.DataFrame, baselines: tuple[str, ...] | None = None,
                      metric: str = COMPARED, decimals: int = 3) -> pd.DataFrame:
    """Each strategy against each baseline within a dataset and setting, paired on the replicate
    (same fold, or same held-out group): mean and std of the differences, wins/ties/losses
    (differences rounded to ``decimals``) and whether it ``beats`` the baseline: a positive mean
    difference and no loss on any replicate."""
    baselines = baseline_strategies() if baselines is None else baselines
    rows = []
    for key, group in runs.groupby(SETTING_KEYS, sort=False, dropna=False):
        wide = group.pivot_table(index="replicate", columns="strategy", values=metric, aggfunc="mean")
        for baseline in baselines:
            if baseline not in wide:
                continue
            for strategy in (s for s in dict.fromkeys(group["strategy"]) if s != baseline):
                pairs = wide[[strategy, baseline]].dropna()
                if pairs.empty:
                    continue
                diff = (pairs[strategy] - pairs[baseline]).round(decimals)
                rows.append({**dict(zip(SETTING_KEYS, key, strict=True)), "strategy": strategy,
                             "baseline": baseline, "n_pairs": len(diff), "mean_diff": diff.mean(),
                             "std_diff": diff.std(ddof=1) if len(diff) > 1 else 0.0, "wins": int((diff > 0).sum()),
                             "ties": int((diff == 0).sum()), "losses": int((diff < 0).sum()),
                             "beats": bool(diff.mean() > 0 and (diff >= 0).all())})
    return pd.DataFrame(rows, columns=[*SETTING_KEYS, "strategy", "baseline", "n_pairs", "mean_diff", "std_diff",
                                       "wins", "ties", "losses", "beats"])

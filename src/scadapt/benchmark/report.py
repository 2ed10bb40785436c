"""The benchmark's Markdown report and its CSV tables, written to the output folder."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import pandas as pd

from scadapt.benchmark.config import BenchmarkConfig
from scadapt.benchmark.results import COMPARED, BenchmarkTables
from scadapt.infra.storage import atomic_write
from scadapt.jobs.preflight import GeneCoverage
from scadapt.registry import PromotionResult
from scadapt.serving.server import SERVE_NOTE, serve_command
from scadapt.strategies import baselines


def write_tables(tables: BenchmarkTables, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("runs", "summary", "ranking", "paired", "per_class"):
        path = folder / f"{name}.csv"
        table: pd.DataFrame = getattr(tables, name)
        atomic_write(path, lambda f, t=table: f.write(t.to_csv(index=False).encode()))
        paths.append(path)
    return paths


def write_report(output_dir: Path, tables: BenchmarkTables, figures: list[Path], promotions: dict[str, PromotionResult],
                 cfg: BenchmarkConfig, fingerprint: str, checkpoint: str | None, timing: pd.DataFrame,
                 seconds: float, no_champion: dict[str, str] | None = None,
                 coverage: dict[str, GeneCoverage] | None = None, workers: int = 1,
                 cut_short: dict[str, str] | None = None, thin_classes: dict[str, tuple[str, ...]] | None = None
                 ) -> Path:
    """``report.md`` (numbers, verdicts and figures per dataset, where this call's time went) and
    ``tables/*.csv``. ``thin_classes``: per ``dataset/split`` held out, the test classes its
    training cells lack or hold fewer than the regime's minimum of."""
    write_tables(tables, output_dir / "tables")
    timing.to_csv(output_dir / "tables" / "timing.csv", index=False)
    lines = _header(tables, cfg, fingerprint, checkpoint, timing, seconds, coverage or {})
    lines += [f"\n**Warning**: {c.warning()}" for c in (coverage or {}).values() if c.low]
    if cut_short:
        lines += [f"\n**Cut short by the time budget** ({cfg.time_budget:g} min; run again with the same settings "
                  "to finish them):", "", *(f"- `{key}`: {why}" for key, why in cut_short.items())]
    if cfg.tuning == "reuse":
        lines += ["", "Tuning `reuse`: each strategy's settings were chosen on the first split's validation cells and "
                  "reused on the full and low splits (each held-out technology split had its own study); on other "
                  "folds those cells can be test cells, so scores there may be slightly optimistic "
                  "(`--tuning per_fold` avoids this)."]
    for dataset in dict.fromkeys(tables.runs["dataset"]):
        lines += ["", f"## {dataset}", *_dataset_section(tables, dataset, promotions.get(dataset)),
                  *_thin_classes(thin_classes or {}, dataset, cfg.reading.min_cells_per_class)]
        if dataset in (no_champion or {}):
            lines += ["", f"**No champion**: {no_champion[dataset]}"]
    lines += _closing(timing, workers, figures)
    report = output_dir / "report.md"
    atomic_write(report, lambda f: f.write("\n".join(lines).encode()))
    return report


def _header(tables: BenchmarkTables, cfg: BenchmarkConfig, fingerprint: str, checkpoint: str | None,
            timing: pd.DataFrame, seconds: float, coverage: dict[str, GeneCoverage]) -> list[str]:
    """The report's title, settings and how to read its numbers."""
    runs = tables.runs
    regimes = list(dict.fromkeys(runs["regime"]))  # the regimes that produced cells, not only those asked for
    n_run = int(timing["cells_run"].sum())
    return [
        f"# scadapt benchmark `{cfg.name}`", "",
        f"Written {datetime.datetime.now().isoformat(timespec='minutes')} on {platform.node()} "
        f"({platform.machine()}); settings fingerprint `{fingerprint}`.", "",
        f"- Backbone: `{checkpoint}`" if checkpoint else "- Backbone: none (only strategies without one)",
        *(f"- Gene coverage: {c.describe()}" + (" **(low: see the warning below)**" if c.low else "")
          for c in coverage.values()),
        f"- Matrix: {len(runs)} cells = {_count(runs['dataset'], 'dataset', 'datasets')} x "
        f"{_count(runs['strategy'], 'strategy', 'strategies')} x splits of {', '.join(regimes)} ({_splits(cfg, regimes)})",
        f"- Tuning: `{cfg.tuning}`, {cfg.n_trials} Optuna trials per study, at most {cfg.epochs} epochs per fit; "
        "selection on validation cells only",
        f"- Fit time of all cells: {runs['runtime_sec'].sum() / 60:.1f} min; this call: {seconds / 60:.1f} min, "
        + (f"running all {n_run} cells" if n_run == len(runs) else
           f"running {n_run} of the cells (the other {len(runs) - n_run} were finished before)"), "",
        "Scores are test macro-F1, mean ± standard deviation over replicates (folds; held-out technology groups "
        "for cross-study). Ranks follow `registry/policy.yaml` applied to test means (macro-F1, then balanced "
        "accuracy, accuracy, fewer trainable parameters, shorter runtime; rounded to the policy's decimals). "
        "A strategy *beats* a baseline when its mean paired difference is positive and it loses on no replicate.",
    ]


def _closing(timing: pd.DataFrame, workers: int, figures: list[Path]) -> list[str]:
    """Where this call's time went, and the figures."""
    lines = []
    if not timing.empty:
        lines += ["", "## Where this call's time went", ""]
        if workers > 1:
            lines += [f"{workers} worker processes on this machine shared the cells; seconds are summed over them.", ""]
        lines += [_timing_table(timing)]
    if figures:
        lines += ["", "## Figures", ""]
        for path in (p for p in figures if p.suffix == ".png"):
            lines += [f"![{path.stem}](figures/{path.name})", ""]
    return lines


def _dataset_section(tables: BenchmarkTables, dataset: str, promotion: PromotionResult | None) -> list[str]:
    lines = []
    ranking = tables.ranking[tables.ranking["dataset"] == dataset]
    summary = tables.summary[tables.summary["dataset"] == dataset]
    for setting in dict.fromkeys(ranking["setting"]):
        ranked = ranking[ranking["setting"] == setting]
        rows = summary[summary["setting"] == setting].set_index("strategy").loc[ranked["strategy"]]
        table = pd.DataFrame({
            "rank": ranked["rank"].to_numpy(), "strategy": ranked["strategy"].to_numpy(),
            "macro-F1": [_spread(r, COMPARED) for _, r in rows.iterrows()],
            "balanced acc.": [_spread(r, "test_balanced_accuracy") for _, r in rows.iterrows()],
            "trainable params": [f"{int(v):,}" if pd.notna(v) else "" for v in rows["trainable_parameters_mean"]],
            "fit s": [f"{v:.1f}" for v in rows["runtime_sec_mean"]],
            "peak MB": [f"{v:.0f}" if pd.notna(v) else "" for v in rows["peak_rss_mb_mean"]],
            **({"peak GPU MB": [f"{v:.0f}" if pd.notna(v) else "" for v in rows["peak_cuda_mb_mean"]]}
               if rows["peak_cuda_mb_mean"].notna().any() else {}),
            "n": rows["n"].to_numpy(),
        })
        lines += ["", f"### {setting}", "", _markdown(table), "", *_verdicts(tables.paired, dataset, setting)]
    cross = tables.runs[(tables.runs["dataset"] == dataset) & (tables.runs["regime"] == "cross_study")]
    if not cross.empty:
        grid = cross.pivot_table(index="strategy", columns="held_out", values=COMPARED)
        grid = grid.reindex(list(dict.fromkeys(cross["strategy"]))).map(lambda v: f"{v:.3f}").reset_index()
        lines += ["", "Cross-study test macro-F1 per held-out group:", "", _markdown(grid)]
    lines += _untrained_classes(tables.per_class, dataset)
    if promotion is not None:
        champion = tables.champions.get(dataset, {})
        lines += ["", f"**Champion**: `{promotion.model_name}` version {promotion.version} "
                  f"({champion.get('strategy', '?')}, run `{promotion.run_id}`), chosen on validation macro-F1 among "
                  f"the full-label runs. Serve it with `{serve_command(f'models:/{promotion.model_name}@champion')}` "
                  f"({SERVE_NOTE})."]
    return lines


def _splits(cfg: BenchmarkConfig, regimes: list[str]) -> str:
    parts = []
    if "full" in regimes or "low" in regimes:
        parts.append(f"{cfg.folds_run} of {cfg.n_folds} folds")
    if "low" in regimes:
        parts.append(f"label fractions {', '.join(f'{f * 100:g}%' for f in cfg.label_fractions)}")
    if "cross_study" in regimes:
        parts.append("held-out technology groups")
    return "; ".join(parts)


def _thin_classes(thin: dict[str, tuple[str, ...]], dataset: str, floor: int) -> list[str]:
    """Per held-out split of ``dataset``, the test classes its training cells lack or hold few of."""
    found = {key.split("/", 1)[1]: classes for key, classes in thin.items() if key.startswith(f"{dataset}/") and classes}
    if not found:
        return []
    minimum = f"{max(2, floor)} cells"
    return ["", f"Classes of the held-out cells that the split's training cells lack or hold fewer than {minimum} of "
                "(their test F1 says little of a strategy):", "",
            *(f"- `{split}`: {'; '.join(classes)}" for split, classes in found.items())]


def _untrained_classes(per_class: pd.DataFrame, dataset: str) -> list[str]:
    """Test classes that some split never trained on (their F1 is 0 by construction, not by failure)."""
    if per_class.empty or "trained" not in per_class:
        return []
    rows = per_class[(per_class["dataset"] == dataset) & ~per_class["trained"].astype(bool)]
    if rows.empty:
        return []
    where = rows.groupby("class")["replicate"].agg(lambda r: ", ".join(dict.fromkeys(r)))
    listed = "; ".join(f"`{cls}` (held out with {groups})" for cls, groups in where.items())
    return ["", f"Classes absent from the training cells of some splits, so scored 0 there by construction "
                f"(marked \"not trained\" in the per-class figure): {listed}."]


def _verdicts(paired: pd.DataFrame, dataset: str, setting: str) -> list[str]:
    rows = paired[(paired["dataset"] == dataset) & (paired["setting"] == setting)]
    lines = []
    for baseline in baselines():
        against = rows[rows["baseline"] == baseline]
        if against.empty:
            continue
        foundation = against[~against["strategy"].isin(baselines())]
        losers = foundation[~foundation["beats"]]
        detail = ", ".join(f"{r.strategy} {r.mean_diff:+.3f} ± {r.std_diff:.3f} ({r.wins}W/{r.ties}T/{r.losses}L)"
                           for r in against.itertuples())
        if len(foundation) and losers.empty:
            verdict = f"every foundation-model strategy beats `{baseline}`"
        elif len(foundation):
            verdict = (f"{len(losers)} of {len(foundation)} foundation-model strategies do not beat `{baseline}` "
                       f"({', '.join(losers['strategy'])})")
        else:
            verdict = f"compared with `{baseline}`"
        lines.append(f"- {verdict}; paired differences: {detail}.")
    return lines


def _timing_table(timing: pd.DataFrame) -> str:
    """Wall seconds per strategy (all datasets): in tuning studies, and the training time of the
    cells' own fits (the rest of the wall time is loading, embedding, scoring and logging)."""
    table = timing.groupby("strategy", sort=False)[["cells_run", "wall_sec", "tuning_sec", "cell_fit_sec"]].sum()
    total = table["wall_sec"].sum()
    return _markdown(pd.DataFrame({
        "strategy": table.index, "cells run": table["cells_run"].to_numpy(),
        "wall s": [f"{v:.0f}" for v in table["wall_sec"]],
        "share": [f"{v / total:.0%}" if total else "" for v in table["wall_sec"]],
        "in tuning s": [f"{v:.0f}" for v in table["tuning_sec"]],
        "cell fits s": [f"{v:.0f}" for v in table["cell_fit_sec"]],
    }))


def _count(values: pd.Series, one: str, many: str) -> str:
    n = values.nunique()
    return f"{n} {one if n == 1 else many}"


def _spread(row: pd.Series, metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    return "" if pd.isna(mean) else f"{mean:.3f} ± {std:.3f}"


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])

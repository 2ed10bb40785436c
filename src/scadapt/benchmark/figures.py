"""The benchmark's figures, each saved as PNG and SVG. Pure functions of the benchmark tables.

Shading and error bars are one standard deviation over replicates (folds, or held-out groups).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scadapt.benchmark.results import BenchmarkTables  # noqa: E402

METRIC = "test_macro_f1"
FORMATS = ("png", "svg")


def draw_all(tables: BenchmarkTables, folder: str | Path) -> list[Path]:
    """Every figure the tables allow (a figure whose regime is not in the matrix is left out)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drawn = [
        full_label_bars(tables.summary, folder),
        low_label_curves(tables.summary, folder),
        cross_study_heatmap(tables.runs, folder),
        efficiency_pareto(tables.summary, folder),
        champion_per_class(tables.per_class, tables.champions, folder),
    ]
    return [path for paths in drawn for path in paths]


def full_label_bars(summary: pd.DataFrame, folder: Path) -> list[Path]:
    """Test macro-F1 per strategy, bars grouped by dataset (full-label regime)."""
    full = summary[summary["regime"] == "full"]
    if full.empty:
        return []
    datasets, strategies = _ordered(full["dataset"]), _ordered(full["strategy"])
    width = 0.8 / len(strategies)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.4 * len(datasets) * len(strategies)), 4.2))
    for i, strategy in enumerate(strategies):
        rows = full[full["strategy"] == strategy].set_index("dataset").reindex(datasets)
        x = np.arange(len(datasets)) + (i - (len(strategies) - 1) / 2) * width
        ax.bar(x, rows[f"{METRIC}_mean"], width, yerr=rows[f"{METRIC}_std"], capsize=2, label=strategy,
               color=_colour(strategy, strategies))
    ax.set_xticks(np.arange(len(datasets)), datasets)
    ax.set_ylabel("test macro-F1 (mean ± sd over folds)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Full-label annotation")
    ax.legend(ncol=min(4, len(strategies)), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return _save(fig, folder, "full_label_macro_f1")


def low_label_curves(summary: pd.DataFrame, folder: Path) -> list[Path]:
    """Test macro-F1 against the fraction of training labels (log axis), one panel per dataset;
    the full-label result is the 100 % point."""
    low = summary[summary["regime"] == "low"]
    if low.empty:
        return []
    full = summary[summary["regime"] == "full"].assign(label_fraction=1.0)
    data = pd.concat([low, full])
    datasets, strategies = _ordered(low["dataset"]), _ordered(low["strategy"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets), 4.0), squeeze=False, sharey=True)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for strategy in strategies:
            rows = data[(data["dataset"] == dataset) & (data["strategy"] == strategy)].sort_values("label_fraction")
            x, mean, std = rows["label_fraction"], rows[f"{METRIC}_mean"], rows[f"{METRIC}_std"]
            colour = _colour(strategy, strategies)
            ax.plot(x, mean, marker="o", label=strategy, color=colour)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=colour)
        ax.set_xscale("log")
        fractions = sorted(data.loc[data["dataset"] == dataset, "label_fraction"].unique())
        ax.set_xticks(fractions, [f"{f * 100:g}%" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("training labels kept")
        ax.set_title(dataset)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("test macro-F1 (mean ± sd over folds)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(fig, folder, "low_label_curves")


def cross_study_heatmap(runs: pd.DataFrame, folder: Path) -> list[Path]:
    """Test macro-F1 of each strategy (rows) on each held-out technology group (columns)."""
    cross = runs[runs["regime"] == "cross_study"]
    if cross.empty:
        return []
    datasets = _ordered(cross["dataset"])
    size = (1.6 + 1.4 * cross["held_out"].nunique() * len(datasets), 1.2 + 0.45 * cross["strategy"].nunique())
    fig, axes = plt.subplots(1, len(datasets), figsize=size, squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = cross[cross["dataset"] == dataset]
        grid = rows.pivot_table(index="strategy", columns="held_out", values=METRIC).reindex(_ordered(rows["strategy"]))
        image = ax.imshow(grid.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
        ax.set_yticks(range(grid.shape[0]), grid.index)
        for (row, col), value in np.ndenumerate(grid.to_numpy()):
            if not np.isnan(value):
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if value > 0.6 else "white")
        ax.set_xlabel("held-out group (test)")
        ax.set_title(f"{dataset}: cross-study")
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.046, label="test macro-F1")
    return _save(fig, folder, "cross_study_heatmap")


def efficiency_pareto(summary: pd.DataFrame, folder: Path) -> list[Path]:
    """Test macro-F1 against trainable parameters (log axis), marker area by fit runtime; the
    Pareto front (no other strategy is both better and smaller) is joined and ringed."""
    full = summary[summary["regime"] == "full"]
    if full.empty:
        return []
    datasets, strategies = _ordered(full["dataset"]), _ordered(full["strategy"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.3), squeeze=False, sharey=True)
    largest = max(float(full["runtime_sec_mean"].max()), 1e-9)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = full[full["dataset"] == dataset]
        for _, row in rows.iterrows():
            ax.scatter(max(row["trainable_parameters_mean"], 1), row[f"{METRIC}_mean"],
                       s=30 + 570 * row["runtime_sec_mean"] / largest, alpha=0.75,
                       color=_colour(row["strategy"], strategies), edgecolor="black", linewidth=0.5)
            ax.annotate(row["strategy"], (max(row["trainable_parameters_mean"], 1), row[f"{METRIC}_mean"]),
                        fontsize=7, xytext=(5, 5), textcoords="offset points")
        front = pareto_front(rows, "trainable_parameters_mean", f"{METRIC}_mean").sort_values("trainable_parameters_mean")
        ax.step(front["trainable_parameters_mean"].clip(lower=1), front[f"{METRIC}_mean"], where="post",
                color="black", linestyle="--", linewidth=1, label="Pareto front")
        ax.scatter(front["trainable_parameters_mean"].clip(lower=1), front[f"{METRIC}_mean"], s=160,
                   facecolor="none", edgecolor="black", linewidth=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_title(dataset)
        ax.legend(fontsize=8, loc="best")
    axes[0][0].set_ylabel("test macro-F1 (mean over folds)")
    fig.suptitle(f"Full-label efficiency (marker area: mean fit runtime, largest {largest:.0f} s)")
    return _save(fig, folder, "efficiency_pareto")


def pareto_front(rows: pd.DataFrame, cost: str, score: str) -> pd.DataFrame:
    """The rows no other row dominates (lower or equal cost and higher or equal score, one strictly)."""
    keep = []
    for i, row in rows.iterrows():
        others = rows.drop(index=i)
        dominated = ((others[cost] <= row[cost]) & (others[score] >= row[score])
                     & ((others[cost] < row[cost]) | (others[score] > row[score]))).any()
        keep.append(not dominated)
    return rows[keep]


def champion_per_class(per_class: pd.DataFrame, champions: dict[str, dict[str, str]], folder: Path) -> list[Path]:
    """Per-class test F1 of each dataset's champion strategy in every setting of the matrix. A class
    that no training cell of a setting had (cross-study: only the held-out group has it) is shown
    as "not trained" (hatched) instead of a score of 0."""
    if per_class.empty:
        return []
    datasets = _ordered(per_class["dataset"])
    heights = [per_class.loc[per_class["dataset"] == d, "class"].nunique() for d in datasets]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets) + 1, 1.6 + 0.35 * max(heights)),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = per_class[(per_class["dataset"] == dataset) & (per_class["support"] > 0)]  # classes in each test set
        trained = rows[rows["trained"].astype(bool)]
        grid = trained.pivot_table(index="class", columns="setting", values="f1", aggfunc="mean")
        grid = grid.reindex(index=sorted(rows["class"].unique()), columns=_ordered(rows["setting"]))
        untrained = rows[~rows["trained"].astype(bool)].groupby(["class", "setting"]).size()
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="magma", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
        for (row, col), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if (grid.index[row], grid.columns[col]) in untrained.index:
                ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, hatch="///", edgecolor="grey"))
                label = "not trained" if np.isnan(value) else f"{value:.2f}*"
                ax.text(col, row, label, ha="center", va="center", fontsize=6, color="grey" if np.isnan(value) else
                        ("black" if value > 0.6 else "white"))
            elif not np.isnan(value):
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
        strategy = champions.get(dataset, {}).get("strategy", rows["strategy"].iloc[0])
        ax.set_title(f"{dataset}\nchampion: {strategy}", fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.046, label="test F1 (mean over replicates)")
    if not per_class["trained"].astype(bool).all():
        above_titles = 1.0 + 0.3 / fig.get_figheight()  # 0.3 inch above the figure's top: clear of the titles
        fig.text(0.5, above_titles, "hatched: the class was absent from the training cells of some replicates (cross-study: "
                 "only in the held-out group); 'not trained': of all of them, * the mean of those that had it",
                 fontsize=7, ha="center", va="bottom")
    return _save(fig, folder, "champion_per_class_f1")


def _ordered(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


def _colour(strategy: str, strategies: list[str]):
    return plt.get_cmap("tab10")(strategies.index(strategy) % 10)


def _save(fig, folder: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = folder / f"{stem}.{fmt}"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths

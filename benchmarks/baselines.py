"""scadapt's expression baselines against the public annotation recipes, on the same cells.

Run:  python benchmarks/baselines.py [--seeds 0 1 2] [--n-trials 3] [--keep DIR]
                                     [--strategies mlp logreg pca_logreg frozen_probe]
      python benchmarks/baselines.py --scores DIR/baselines_scores.csv   (the tables again)

Settings (each run with every seed; a seed changes the splits, the models and the searches):

* ``pancreas``: the bundled ``pancreas_small`` held out by each of its five technologies in turn
  (``cross_study`` with one group per technology); train and validation cells come from the other
  four.
* ``pbmc``: ``pbmc68k_reduced``, one stratified fold of the ``full`` regime.

Our side is the product itself: ``scadapt benchmark`` (``run_benchmark``) per setting and seed,
its default settings but ``--n-trials`` (each strategy tuned with Optuna on the split's validation
cells; each held-out technology its own study). The demo backbone is pretrained once, in the
folder's cache, for ``frozen_probe``.

The reference recipes (``reference_recipes.py``: scDLKit's MLP classifier and CellTypist, as their
packages document them) run in their own virtual environment (created here on first use, pinned
in ``REFERENCE_PINS``) on exactly the cells of our splits, read by cell name. Both get the input
they document: log1p of counts scaled to 10,000 per cell (``pbmc68k_reduced`` holds log-normalised
values at another scale: they are put back on that scale). Every prediction is scored by
scadapt's own metric (macro-F1 over the classes of the test cells and of the predictions).

Printed: test macro-F1 mean ± sd over the seeds per setting and method, and per setting whether
each scadapt baseline is within one sd of the best reference recipe or above it (the larger sd of
the two, each over the seeds: a deterministic recipe can have an sd near 0 on these small test
sets, where one cell moves macro-F1 by 0.01 or more), and whether ``mlp`` is below
``frozen_probe`` across technologies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from results_table import print_table  # benchmarks/results_table.py (scripts here run with their folder on sys.path)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFERENCE_PINS = ["torch==2.13.0", "scdlkit==0.1.6", "celltypist==1.7.1", "scanpy==1.11.5", "anndata==0.12.19",
                  "pandas==2.3.3",
                  "scikit-learn==1.7.2"]  # CellTypist 1.7.1 passes multi_class, which scikit-learn 1.8 removed
DEFAULT_ENV = Path.home() / ".cache" / "scadapt" / "baselines-reference-env"
STRATEGIES = ("mlp", "logreg", "pca_logreg", "frozen_probe")
BASELINES = ("mlp", "logreg", "pca_logreg")  # the expression baselines the targets are about
LABEL = "label"
ACROSS = "mean over technologies"  # the pancreas row averaging its held-out technologies, per seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--settings", nargs="*", default=["pancreas", "pbmc"], choices=["pancreas", "pbmc"])
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    parser.add_argument("--n-trials", type=int, default=None, help="trials per study (default: the product's)")
    parser.add_argument("--env", type=Path, default=DEFAULT_ENV, help="the reference recipes' virtual environment")
    parser.add_argument("--keep", help="folder for the stores, cache and tables (default: a temporary one); "
                                       "a rerun with the same folder reuses its finished cells and backbone")
    parser.add_argument("--scores", type=Path, help="print the tables of this baselines_scores.csv (of an earlier run) "
                                                    "instead of measuring")
    args = parser.parse_args()
    if args.scores:
        report(pd.read_csv(args.scores, dtype={"group": str}))
        return
    python = reference_env(args.env)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        isolate(folder)
        scores = pd.concat([measure(folder, name, seed, args, python) for seed in args.seeds for name in args.settings])
        scores.to_csv(folder / "baselines_scores.csv", index=False)
    report(scores)


def reference_env(env: Path) -> Path:
    """The reference recipes' interpreter, in a virtual environment made once with ``REFERENCE_PINS``."""
    python = env / "bin" / "python"
    marker = env / "pins.txt"
    if not python.exists() or not marker.exists() or marker.read_text() != "\n".join(REFERENCE_PINS):
        print(f"Creating the reference recipes' environment in {env} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *REFERENCE_PINS], check=True)
        marker.write_text("\n".join(REFERENCE_PINS))
    return python


def isolate(folder: Path) -> None:
    """Every store, cache and relative path of the jobs inside ``folder`` (before scadapt is imported)."""
    os.environ.update({"SCADAPT_CACHE": str(folder / "cache"), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"})
    os.chdir(folder)
    sys.path.insert(0, str(REPO / "src"))


def measure(folder: Path, name: str, seed: int, args, python: Path) -> pd.DataFrame:
    """Test macro-F1 of our strategies and of the reference recipes for one setting and seed:
    one row per held-out group (or fold) and method."""
    from scadapt.benchmark import BenchmarkConfig, run_benchmark
    from scadapt.data import load_expression

    if name == "pancreas":
        techs = sorted(load_expression("pancreas_small").obs["tech"].astype(str).unique())
        setting = {"datasets": ("pancreas_small",), "regimes": ("cross_study",),
                   "study_groups": {tech: (tech,) for tech in techs}}
    else:
        setting = {"datasets": ("pbmc68k_reduced",), "regimes": ("full",), "folds": 1}
    trials = {} if args.n_trials is None else {"n_trials": args.n_trials}
    cfg = BenchmarkConfig(**setting, **trials, strategies=tuple(args.strategies), seed=seed, promote=False,
                          name=f"baselines-{name}-seed{seed}", output_dir=str(folder / f"report-{name}-seed{seed}"))
    print(f"== {name}, seed {seed}: scadapt benchmark", flush=True)
    runs = run_benchmark(cfg).tables.runs
    ours = pd.DataFrame({"setting": name, "seed": seed, "group": runs["replicate"].where(runs["regime"] == "cross_study",
                                                                                           "full"),
                         "method": runs["strategy"], "test_macro_f1": runs["test_macro_f1"]})
    print(f"== {name}, seed {seed}: reference recipes", flush=True)
    return pd.concat([ours, reference_scores(folder / f"{name}-seed{seed}", cfg, name, seed, python)])


def reference_scores(folder: Path, cfg, name: str, seed: int, python: Path) -> pd.DataFrame:
    """Fit the reference recipes on the cells of ``cfg``'s splits in their own environment and
    score their test predictions as ours are scored."""
    import anndata as ad

    from scadapt.benchmark.matrix import dataset_splits
    from scadapt.data import DatasetInfo
    from scadapt.data.loading import load_for_regime
    from scadapt.data.options import SplitOptions
    from scadapt.evaluation.metrics import classification_report

    folder.mkdir(parents=True, exist_ok=True)
    data = cfg.datasets[0]
    regime = cfg.regimes[0]
    adata = load_for_regime(data, cfg.reading, SplitOptions(regime=regime, n_folds=cfg.n_folds, seed=seed))
    splits = [split for _, split, _, _, _ in dataset_splits(data, cfg)]
    labels = adata.obs[DatasetInfo.of(adata).label_key].astype(str)
    ad.AnnData(per_10k_log1p(adata.X), obs=pd.DataFrame({LABEL: labels.to_numpy()}, index=adata.obs_names),
               var=pd.DataFrame(index=adata.var_names)).write_h5ad(folder / "data.h5ad")
    names = adata.obs_names.to_numpy()
    (folder / "splits.json").write_text(json.dumps(
        {split.name: {part: names[split.part(part)].tolist() for part in ("train", "validation", "test")}
         for split in splits}))
    out = folder / "predictions.csv"
    subprocess.run([str(python), str(HERE / "reference_recipes.py"), "--data", str(folder / "data.h5ad"),
                    "--splits", str(folder / "splits.json"), "--label-key", LABEL, "--seed", str(seed),
                    "--out", str(out)], check=True)
    predictions = pd.read_csv(out, dtype={"predicted": str})
    rows = []
    for (split_name, recipe), table in predictions.groupby(["split", "recipe"]):
        split = next(s for s in splits if s.name == split_name)
        score = classification_report(labels.loc[table["cell"]].to_numpy(), table["predicted"].to_numpy())
        rows.append({"setting": name, "seed": seed, "group": split.held_out[0] if split.held_out else "full",
                     "method": recipe, "test_macro_f1": score.summary["macro_f1"]})
    return pd.DataFrame(rows)


def per_10k_log1p(matrix):
    """log1p of counts scaled to 10,000 per cell, from counts or from log-normalised values at
    any per-cell scale (what both reference recipes document as their input)."""
    import scipy.sparse as sp

    from scadapt.data.preprocess import log_normalized

    values = log_normalized(matrix)  # counts -> log1p at 10,000 per cell; log input kept as is
    values.data = np.expm1(values.data)
    totals = np.asarray(values.sum(axis=1)).ravel()
    values = sp.diags(np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)) @ values
    values = sp.csr_matrix(values, dtype=np.float32)
    values.data = np.log1p(values.data)
    return values


def report(scores: pd.DataFrame) -> None:
    """Mean ± sd over the seeds per setting, group and method; then the targets."""
    pooled = scores[scores["setting"] == "pancreas"].groupby(["setting", "seed", "method"], as_index=False)[
        "test_macro_f1"].mean().assign(group=ACROSS)  # per seed over the technologies
    scores = pd.concat([scores, pooled])
    stats = scores.groupby(["setting", "group", "method"], sort=False)["test_macro_f1"].agg(
        ["mean", "std", "count"]).reset_index()
    methods = [m for m in (*STRATEGIES, "scdlkit_mlp", "celltypist") if m in set(stats["method"])]
    cell = {(r.setting, r.group, r.method): r for r in stats.itertuples()}
    rows = []
    for setting, group in stats[["setting", "group"]].drop_duplicates().itertuples(index=False):
        rows.append([setting, group, *(f"{cell[setting, group, m].mean:.3f} ± {_sd(cell[setting, group, m])}"
                                       if (setting, group, m) in cell else "" for m in methods)])
    seeds = ", ".join(map(str, sorted(scores["seed"].unique())))
    print(f"\nTest macro-F1, mean ± sd over seeds {seeds}. Machine: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {date.today()}.")
    print_table(["setting", "held out", *methods], rows)
    print("\nTargets (a scadapt baseline is within one sd of the best reference recipe, or above it; the sd is the "
          "larger of the two, each over the seeds):")
    for setting, group in stats[["setting", "group"]].drop_duplicates().itertuples(index=False):
        references = [cell[setting, group, r] for r in ("scdlkit_mlp", "celltypist") if (setting, group, r) in cell]
        if not references:
            continue
        best = max(references, key=lambda r: r.mean)
        verdicts = []
        for baseline in BASELINES:
            if (setting, group, baseline) in cell:
                ours = cell[setting, group, baseline]
                gap = ours.mean - best.mean
                met = gap >= -max(_std(ours), _std(best))
                verdicts.append(f"{baseline} {gap:+.3f} ({'met' if met else 'NOT met'})")
        print(f"  {setting}/{group}: best reference {best.method} {best.mean:.3f} ± {_sd(best)}; " + ", ".join(verdicts))
    if all(("pancreas", ACROSS, m) in cell for m in ("mlp", "frozen_probe")):
        mlp, probe = (cell["pancreas", ACROSS, m] for m in ("mlp", "frozen_probe"))
        print(f"  across technologies: mlp {mlp.mean:.3f} ± {_sd(mlp)}, frozen_probe {probe.mean:.3f} ± {_sd(probe)}: "
              f"mlp {'not ' if mlp.mean >= probe.mean else ''}below frozen_probe")


def _std(row) -> float:
    return float(row.std) if row.count > 1 else 0.0


def _sd(row) -> str:
    return f"{row.std:.3f}" if row.count > 1 else "n/a"


if __name__ == "__main__":
    main()

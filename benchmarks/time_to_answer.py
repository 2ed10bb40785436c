"""Time to an answer on a user's own data: the main job (``scadapt pipeline``, default settings)
from an empty cache and store, with this code and with a reference commit, in the same run.

Run:  python benchmarks/time_to_answer.py [--reference REV] [--budget 5] [--datasets pbmc wide]
                                          [--codes this reference] [--keep DIR]

Datasets: the bundled ``pbmc68k_reduced`` (700 cells x 765 genes) and a synthetic 1,000-cell x
11,000-gene one (``tools/synthetic.py``: negative-binomial counts, 8 cell types as gene-program
shifts; the genes are the bundled datasets' and then others of the whole-human vocabulary, so most
cells have more genes in the demo backbone's vocabulary than fit in its 512 tokens). Every job
starts from an empty cache, so the demo backbone is pretrained in it. Each job runs in its own
process, with the code of this checkout or of ``--reference`` (checked out into a temporary
worktree), one after the other.

Printed per job: the time to the first ranked result (this code: the "First answer" line, logged
before any backbone work; the reference ranks only at the end), the total, the pretraining, and
each strategy's share of the worker time (the benchmark's ``wall_sec_<strategy>`` metrics). With
``--budget``, this code also runs the wide dataset with ``--time-budget``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from results_table import print_table  # benchmarks/results_table.py (scripts here run with their folder on sys.path)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_REFERENCE = "c6407f6"  # main before the time budget, cheapest-first and one gene subset per fit
FIRST_ANSWER = re.compile(r"First answer")
RUN_CLI = "import sys; from scadapt.cli import main; sys.exit(main())"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="commit to compare with ('' for none)")
    parser.add_argument("--budget", type=float, default=5.0, help="minutes of --time-budget for the wide job (0: skip)")
    parser.add_argument("--datasets", nargs="*", default=["pbmc", "wide"], choices=["pbmc", "wide"])
    parser.add_argument("--codes", nargs="*", default=["this", "reference"], choices=["this", "reference"],
                        help="which code to run (default: both)")
    parser.add_argument("--keep", help="folder for the jobs' stores and logs (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data = {"pbmc": ["--data", "pbmc68k_reduced"],
                "wide": ["--data", str(wide_dataset(folder / "synthetic_wide.h5ad")), "--label-key", "cell_type"]}
        codes = {"this": REPO / "src"} if "this" in args.codes else {}
        if args.reference and "reference" in args.codes:
            codes["reference"] = checkout(args.reference, folder / "reference")
        jobs = [(name, code, []) for name in args.datasets for code in codes]
        if args.budget and "wide" in args.datasets and "this" in codes:  # before the reference's wide job, the longest
            jobs.insert(jobs.index(("wide", "this", [])) + 1, ("wide", "this", ["--time-budget", f"{args.budget:g}"]))
        rows = []
        for name, code, extra in jobs:
            label = f"{name}-{code}" + ("-budget" if extra else "")
            result = run_job(folder / label, codes[code], data[name] + extra)
            rows.append([name, code + (f", --time-budget {args.budget:g}" if extra else ""),
                         f"{result['first']:.0f}", f"{result['total']:.0f}", f"{result['pretrain']:.0f}",
                         result["champion"], result["shares"]])
            print(rows[-1], flush=True)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {date.today()}; "
          f"reference {args.reference or 'none'}.")
    print_table(["data", "code", "first ranked result (s)", "total (s)", "pretraining (s)", "champion",
                 "share of worker time per strategy"], rows)


def wide_dataset(path: Path, n_cells: int = 1000, n_genes: int = 11_000) -> Path:
    """The synthetic wide dataset: the bundled datasets' genes first, then other genes of the
    whole-human vocabulary."""
    sys.path[:0] = [str(REPO / "src"), str(REPO / "tools")]
    from synthetic import synthetic_counts  # tools/synthetic.py

    from scadapt.data import load_expression

    genes = list(dict.fromkeys(g for name in ("pancreas_small", "pbmc68k_reduced")
                               for g in load_expression(name).var_names))
    vocab = json.loads((REPO / "tests" / "data" / "scgpt_human" / "vocab.json").read_text())
    known = set(genes)
    genes += [g for g in vocab if not g.startswith("<") and g not in known][: n_genes - len(genes)]
    synthetic_counts(genes, n_cells=n_cells, seed=0).write_h5ad(path)
    return path


def checkout(rev: str, target: Path) -> Path:
    """``rev`` of this repository in a worktree at ``target``; its ``src``."""
    if not target.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(target), rev], check=True,
                       capture_output=True)
    return target / "src"


def run_job(folder: Path, src: Path, options: list[str]) -> dict:
    """One ``scadapt pipeline`` in a fresh cache, store and working folder."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(src), "SCADAPT_CACHE": str(folder / "cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    first = None
    with (folder / "job.log").open("w") as log, subprocess.Popen(
            [sys.executable, "-c", RUN_CLI, "pipeline", *options], cwd=folder, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True) as job:
        for line in job.stdout:
            log.write(line)
            if first is None and FIRST_ANSWER.search(line):
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    if job.returncode:
        raise SystemExit(f"The job in {folder} failed; see {folder / 'job.log'}.")
    return {"first": first if first is not None else total, "total": total, **_measured(folder, env)}


def _measured(folder: Path, env: dict) -> dict:
    """Pretraining time, champion and each strategy's share, read from the job's MLflow store."""
    code = """
import json, mlflow
from mlflow import MlflowClient
runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
pretrain = sum(r.data.metrics.get("runtime_sec", 0) for r in runs if r.data.tags.get("scadapt.entry_point") == "pretrain")
parent = [r for r in runs if r.data.tags.get("scadapt.benchmark_run") == "true"]
walls = {k[len("wall_sec_"):]: v for r in parent for k, v in r.data.metrics.items() if k.startswith("wall_sec_")}
main = [r for r in runs if "champion_model" in r.data.tags]
print(json.dumps({"pretrain": pretrain, "walls": walls,
                  "champion": main[0].data.tags.get("champion_model", "") if main else ""}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    total = sum(found["walls"].values()) or 1.0
    shares = ", ".join(f"{s} {w / total:.0%}" for s, w in sorted(found["walls"].items(), key=lambda kv: -kv[1]))
    champion = _champion_strategy(folder, env) or found["champion"]
    return {"pretrain": found["pretrain"], "shares": shares, "champion": champion}


def _champion_strategy(folder: Path, env: dict) -> str:
    code = """
from mlflow import MlflowClient
client = MlflowClient()
for model in client.search_registered_models():
    try:
        print(client.get_model_version_by_alias(model.name, "champion").tags.get("strategy", ""))
    except Exception:
        pass
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


if __name__ == "__main__":
    main()

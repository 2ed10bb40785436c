"""Scale-out on real servers: one tuned study with 1, 2 and 3 workers, and the tracking server's
overhead against a local SQLite store.

Run:  python benchmarks/scale_out.py  [--workers 1 2 3] [--n-trials 6] [--epochs 10]

Starts a throwaway PostgreSQL cluster and ``mlflow server`` (PostgreSQL backend store, proxied
artifacts) on 127.0.0.1, as the tests do (``tests/servers.py``). The backbone is the demo backbone
(``scadapt pretrain`` makes it), logged once to the tracking server; every worker is a separate
``scadapt tune`` process with its own working directory and cache, given only the tracking URI,
the study database URL and the backbone's ``runs:/`` URI. Each worker count tunes a study of its
own (same settings, no pruning, so every count does the same work), so the wall times compare
directly; the reference is one worker. The machine's cores are split between its workers
(``OMP_NUM_THREADS``), as one would on a CPU machine; on GPUs it is one worker per GPU.

Then one ``scadapt train`` of the same strategy is timed against the tracking server and against a
local SQLite store (process start to exit, the same command and backbone folder otherwise; the
first run in each store logs the backbone, the median of ``--train-repeats`` is reported).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from results_table import print_table  # noqa: E402  (benchmarks/results_table.py)
from servers import create_database, mlflow_server, postgres_cluster  # noqa: E402  (tests/servers.py)

SCADAPT = [sys.executable, "-m", "scadapt.cli"]


def job(strategy: str, checkpoint: str, epochs: int) -> list[str]:
    return ["--data", "pancreas_small", "--strategy", strategy, "--checkpoint", checkpoint, "--no-umap",
            "--hparams", f"epochs={epochs},patience={epochs}"]


def threads_per_worker(n: int) -> str:
    """The cores split between the workers of one machine (PyTorch would give each all of them)."""
    return str(max(1, (os.cpu_count() or 1) // n))


def run_workers(n: int, command: list[str], env: dict[str, str], root: Path) -> float:
    """Start ``n`` worker processes together, each in its own folder; return the wall time until
    the last one exits."""
    started = time.perf_counter()
    workers = []
    for i in range(n):
        home = root / f"w{n}-{i}"
        (home / "cache").mkdir(parents=True)
        workers.append(subprocess.Popen(command, cwd=home, env={**env, "SCADAPT_CACHE": str(home / "cache"),
                                                                "OMP_NUM_THREADS": threads_per_worker(n)},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for worker in workers:
        output = worker.communicate()[0]
        if worker.returncode != 0:
            sys.exit(f"a worker failed:\n{output[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--strategy", default="lora")
    parser.add_argument("--n-trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-repeats", type=int, default=3)
    args = parser.parse_args()

    from scadapt.backbone import load_backbone
    from scadapt.infra.storage import demo_backbone_dir

    if not (demo_backbone_dir() / "args.json").is_file():
        sys.exit("No demo backbone: run `scadapt pretrain` first.")
    rows, overhead = [], {}
    with tempfile.TemporaryDirectory() as tmp_name, postgres_cluster() as postgres:
        tmp = Path(tmp_name)
        artifacts = tmp / "artifacts"
        artifacts.mkdir()
        with mlflow_server(create_database(postgres, "mlflow"), artifacts) as tracking:
            os.environ["MLFLOW_TRACKING_URI"] = tracking
            from scadapt.artifacts.checkpoints import publish_checkpoint

            checkpoint = publish_checkpoint(demo_backbone_dir(), load_backbone(demo_backbone_dir()).weights_hash)
            env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
            studies = create_database(postgres, "optuna")
            for n in args.workers:
                command = [*SCADAPT, "tune", *job(args.strategy, checkpoint, args.epochs), "--n-trials",
                           str(args.n_trials), "--storage", studies, "--study-name", f"scale-{n}-workers",
                           "--pruning", "none"]  # every trial the full epochs: the same work for each worker count
                wall = run_workers(n, command, env, tmp)
                rows.append({"workers": n, "wall_s": wall})
                print(f"{n} workers: {wall:.1f} s", flush=True)
            for store in ("server", "sqlite"):
                uri = tracking if store == "server" else f"sqlite:///{tmp / 'local.db'}"
                seconds = []
                for i in range(args.train_repeats):
                    home = tmp / f"train-{store}-{i}"
                    (home / "cache").mkdir(parents=True)
                    started = time.perf_counter()
                    # the backbone's folder in both cases: the same work besides the store
                    done = subprocess.run([*SCADAPT, "train", *job(args.strategy, str(demo_backbone_dir()), args.epochs)],
                                          cwd=home, capture_output=True, text=True,
                                          env={**env, "MLFLOW_TRACKING_URI": uri, "SCADAPT_CACHE": str(home / "cache")})
                    if done.returncode != 0:
                        sys.exit(f"train failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                    seconds.append(time.perf_counter() - started)
                overhead[store] = sorted(seconds)[len(seconds) // 2]
                print(f"train against {store}: median {overhead[store]:.1f} s of {seconds}", flush=True)

    import torch

    print(f"\ncpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{date.today()}")
    print(f"One {args.strategy} study, {args.n_trials} trials of {args.epochs} epochs, PostgreSQL + mlflow server")
    print_table(["workers", "wall (s)", "speed-up vs 1 worker"],
                [[r["workers"], f"{r['wall_s']:.1f}", f"{rows[0]['wall_s'] / r['wall_s']:.2f}x"] for r in rows])
    print(f"\nOne `scadapt train` ({args.strategy}): tracking server {overhead['server']:.1f} s, local SQLite "
          f"{overhead['sqlite']:.1f} s, server / SQLite {overhead['server'] / overhead['sqlite']:.2f}x")


if __name__ == "__main__":
    main()

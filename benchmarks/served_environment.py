"""What a registered champion carries and what it costs to serve it from its own environment.

Run:  python benchmarks/served_environment.py  [--managers uv virtualenv] [--sizes 1 100]

In a temporary MLflow store, a LoRA runner on the bundled pancreas cells, on a random backbone at
the whole-human scGPT shapes (``args.json``/``vocab.json``; 64 tokens per cell to train fast: the
served model's size does not depend on it), and a ``pca_logreg`` runner are promoted in turn.
For each:

1. **contents**: bytes of the served model's code (``code/scadapt``), annotator weights, backbone
   checkpoint and MLflow's own files;
2. **environment** (LoRA champion): ``mlflow models prepare-env --env-manager M`` in a fresh
   ``MLFLOW_ENV_ROOT`` (uv with an empty cache of its own; pip with its usual cache), its wall
   time and size on disk;
3. **serving**: requests to the champion served from that environment against the same requests
   to it served from this one (``--env-manager local``, the reference), measured in the same run.
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

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backbone import make_checkpoint  # noqa: E402  (benchmarks/backbone.py)
from results_table import print_table  # noqa: E402  (benchmarks/results_table.py)
from serving import _champion, _policy, _table, measure  # noqa: E402  (benchmarks/serving.py)

QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def contents(model_uri: str, tmp: Path) -> dict[str, int]:
    """Bytes of each part of the served model."""
    import mlflow

    model = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp)))
    parts = {"code": _bytes(model / "code"), "annotator": _bytes(model / "artifacts" / "annotator")}
    backbone = [p for p in (model / "artifacts").iterdir() if p.name not in ("annotator", "serving")]
    parts["backbone"] = sum(_bytes(p) for p in backbone)
    parts["total"] = _bytes(model)
    parts["mlflow files, genes, examples"] = parts["total"] - parts["code"] - parts["annotator"] - parts["backbone"]
    return parts


def prepare(model_uri: str, manager: str, root: Path) -> dict:
    from scadapt.serving.server import uv_find_links

    env = {**QUIET, "MLFLOW_ENV_ROOT": str(root / "envs"), "UV_CACHE_DIR": str(root / "uv-cache"),
           **(uv_find_links() if manager == "uv" else {})}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlflow", "models", "prepare-env", "-m", model_uri, "--env-manager", manager],
                   check=True, capture_output=True, env={**os.environ, **env})
    wall = time.perf_counter() - started
    (environment,) = (root / "envs").glob("mlflow-*")
    return {"manager": manager, "wall_s": wall, "env_bytes": _bytes(environment), "env": env}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--managers", nargs="+", choices=["uv", "virtualenv"], default=["uv", "virtualenv"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 100])
    parser.add_argument("--repeats", nargs="+", type=int, default=[10, 3])
    parser.add_argument("--reference-dir", type=Path, default=HERE.parent / "tests/data/scgpt_human")
    args = parser.parse_args()
    os.environ.update(QUIET)
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

    from scadapt.data import load_expression

    sizes, environments, served = [], [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        os.chdir(tmp)
        policy, ckpt = _policy(tmp), tmp / "human_ckpt"
        make_checkpoint(args.reference_dir, ckpt)
        cells = _table(load_expression("pancreas_small"))
        for strategy, hparams in (("pca_logreg", {}), ("lora", {"epochs": 1})):
            print(f"champion: {strategy}", flush=True)
            champion = _champion("pancreas_small", strategy, str(ckpt), hparams, policy, max_seq_len=64)
            uri = f"models:/{champion.model_name}/{champion.version}"
            sizes.append({"strategy": strategy, **contents(uri, tmp / f"model-{strategy}")})
        for manager in args.managers:
            print(f"environment: {manager}", flush=True)
            built = prepare(uri, manager, tmp / manager)
            environments.append(built)
            own = measure(uri, cells, args.sizes, args.repeats, env_manager=manager, env=built["env"])
            local = measure(uri, cells, args.sizes, args.repeats)
            served += [{"manager": manager, "cells": o["cells"], "own_p50_ms": o["p50_ms"], "local_p50_ms": r["p50_ms"]}
                       for o, r in zip(own, local, strict=True)]

    print(f"\ncpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{date.today()}")
    mb = lambda n: f"{n / 1e6:.2f}"  # noqa: E731
    print_table(["champion", "total (MB)", "code (MB)", "annotator (MB)", "backbone (MB)", "MLflow files, genes, examples (MB)"],
                [[s["strategy"], mb(s["total"]), mb(s["code"]), mb(s["annotator"]), mb(s["backbone"]),
                  mb(s["mlflow files, genes, examples"])] for s in sizes])
    print()
    print_table(["env manager", "prepare-env wall (s)", "environment on disk (GB)"],
                [[e["manager"], f"{e['wall_s']:.0f}", f"{e['env_bytes'] / 1e9:.2f}"] for e in environments])
    print()
    print_table(["env manager", "cells per request", "own environment p50 (ms)", "training environment p50 (ms)", "ratio"],
                [[s["manager"], s["cells"], f"{s['own_p50_ms']:.1f}", f"{s['local_p50_ms']:.1f}",
                  f"{s['own_p50_ms'] / s['local_p50_ms']:.2f}x"] for s in served])


if __name__ == "__main__":
    main()

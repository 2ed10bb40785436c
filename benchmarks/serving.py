"""Latency and throughput of the served champion (``mlflow models serve``), against calling the
same pyfunc model in-process (the reference: no HTTP, no JSON).

Run:  python benchmarks/serving.py  [--part demo human profile workers] [--sizes 1 100 1000]

Everything happens in a temporary MLflow store:

1. ``demo``: ``head`` and ``pca_logreg`` trained on PBMC (``pbmc68k_reduced``) with the demo
   backbone (``scadapt pretrain`` makes it), each promoted in turn and served.
2. ``human``: ``head`` on the bundled pancreas cells with a random backbone at the whole-human
   scGPT shapes (``args.json``/``vocab.json``; 12 layers, width 512, up to 1,200 tokens per cell).
3. ``profile``: where the in-process time of a request to the demo champions goes (the pyfunc
   call against its stages: request table to matrix, to tokens, forward with the head, output
   table), median of 50 requests of each ``--profile-sizes``; and what MLflow's scoring server
   spends decoding the request's JSON into a table before the model is called.

4. ``workers``: the demo ``head`` champion served with ``mlflow models serve --workers N`` for each
   ``--workers`` value, under a bounded load: ``--clients`` concurrent clients each send
   ``--load-requests`` requests of ``--load-cells`` cells. Throughput is reported against one worker
   measured in the same run.

Requests are ``dataframe_split`` JSON with 1, 100 and 1000 cells (drawn with replacement from the
data); each size is sent ``--repeats`` times after one warm-up request. A request's time runs
from sending its (already encoded) body to receiving the answer.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import requests
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backbone import make_checkpoint  # noqa: E402  (benchmarks/backbone.py)
from results_table import print_table  # noqa: E402  (benchmarks/results_table.py)

LENIENT = "gates:\n  val_macro_f1: 0.0\n  test_macro_f1: 0.0\n"


def _policy(tmp: Path) -> Path:
    from scadapt.registry.policy import DEFAULT_POLICY

    text = DEFAULT_POLICY.read_text()
    start, end = text.index("gates:"), text.index("# Alias")
    path = tmp / "policy.yaml"
    path.write_text(text[:start] + LENIENT + "\n" + text[end:])
    return path


def _champion(data: str, strategy: str, checkpoint: str | None, hparams: dict, policy: Path, max_seq_len=None):
    from scadapt.jobs.config import TrainJob
    from scadapt.jobs.train import train
    from scadapt.registry import promote

    experiment = f"bench-{data}-{strategy}"  # one candidate per experiment: each strategy becomes the champion
    train(TrainJob(data=data, strategy=strategy, checkpoint=checkpoint, hparams=hparams, progress=False, umap=False,
                   max_seq_len=max_seq_len, min_genes=50, experiment=experiment))
    return promote(data, policy, experiment=experiment, force=True)  # each strategy in turn, better or not


def _requests(cells: pd.DataFrame, sizes: list[int], repeats: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    for size, n in zip(sizes, repeats, strict=True):
        yield size, [cells.iloc[rng.integers(0, len(cells), size)].reset_index(drop=True) for _ in range(n + 1)]


def _stats(size: int, seconds: list[float]) -> dict:
    return {"cells": size, "requests": len(seconds), "p50_ms": 1000 * np.percentile(seconds, 50),
            "p95_ms": 1000 * np.percentile(seconds, 95), "cells_per_s": size * len(seconds) / sum(seconds)}


def measure(model_uri: str, cells: pd.DataFrame, sizes: list[int], repeats: list[int], env_manager: str = "local",
            env: dict[str, str] | None = None) -> list[dict]:
    """Served (from this environment, or the model's own one built by ``env_manager``) against in-process."""
    import mlflow

    from scadapt.serving.server import serving

    model = mlflow.pyfunc.load_model(model_uri)
    rows = []
    with serving(model_uri, request_timeout=3600, env_manager=env_manager, env=env, start_timeout=1200) as url:
        for size, batches in _requests(cells, sizes, repeats):
            served, local = [], []
            for i, batch in enumerate(batches):
                # encoded before the clock starts: a client's own JSON encoding is not the served path
                body = json.dumps({"dataframe_split": batch.to_dict(orient="split")})
                started = time.perf_counter()
                response = requests.post(f"{url}/invocations", data=body, timeout=3600,
                                         headers={"Content-Type": "application/json"})
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                started = time.perf_counter()
                model.predict(batch)
                local_elapsed = time.perf_counter() - started
                if i:  # the first request of each size warms up
                    served.append(elapsed)
                    local.append(local_elapsed)
            s, r = _stats(size, served), _stats(size, local)
            rows.append({**s, "in_process_p50_ms": r["p50_ms"], "in_process_cells_per_s": r["cells_per_s"],
                         "served_vs_in_process": s["p50_ms"] / r["p50_ms"]})
            print(f"  {size} cells: p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, {s['cells_per_s']:.1f} cells/s; "
                  f"in-process p50 {r['p50_ms']:.1f} ms", flush=True)
    return rows


def load_test(model_uri: str, cells: pd.DataFrame, workers: list[int], clients: int, per_client: int,
              size: int) -> list[dict]:
    """Throughput of the served model with each number of server workers, under ``clients``
    concurrent clients sending ``per_client`` requests of ``size`` cells each."""
    from scadapt.serving.server import serving

    payloads = [{"dataframe_split": batch.to_dict(orient="split")}
                for _, batches in _requests(cells, [size], [clients * per_client - 1]) for batch in batches]
    rows = []
    for n in workers:
        with serving(model_uri, workers=n, request_timeout=3600) as url:
            for warm in payloads[:n]:  # each worker loads the model on its first request
                requests.post(f"{url}/invocations", json=warm, timeout=3600).raise_for_status()

            def client(k: int) -> list[float]:
                seconds = []
                for payload in payloads[k::clients]:
                    started = time.perf_counter()
                    requests.post(f"{url}/invocations", json=payload, timeout=3600).raise_for_status()
                    seconds.append(time.perf_counter() - started)
                return seconds

            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                latencies = [s for part in pool.map(client, range(clients)) for s in part]
            wall = time.perf_counter() - started
        rows.append({"workers": n, "requests": len(latencies), "wall_s": wall, "cells_per_s": size * len(latencies) / wall,
                     "p50_ms": 1000 * np.percentile(latencies, 50), "p95_ms": 1000 * np.percentile(latencies, 95)})
        rows[-1]["vs_one_worker"] = rows[-1]["cells_per_s"] / rows[0]["cells_per_s"]
        print(f"  {n} workers: {rows[-1]['cells_per_s']:.1f} cells/s ({rows[-1]['vs_one_worker']:.2f}x one worker), "
              f"p50 {rows[-1]['p50_ms']:.0f} ms, p95 {rows[-1]['p95_ms']:.0f} ms", flush=True)
    return rows


def profile(model_uri: str, cells: pd.DataFrame, sizes: list[int], repeats: int = 50) -> list[dict]:
    """Where the in-process time of a request goes: the pyfunc call against its stages (request
    table to matrix, matrix to tokens, the forward pass with the head, the output table), median
    milliseconds over ``repeats`` requests after a warm-up, per request size."""
    import mlflow
    from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

    from scadapt.backbone.inference import cell_outputs
    from scadapt.models.annotator import BackboneAnnotator
    from scadapt.serving.request import matrix_from_table

    model = mlflow.pyfunc.load_model(model_uri)
    served = model.unwrap_python_model()
    annotator, genes = served.annotator, served.genes
    rows = []
    for size, batches in _requests(cells, sizes, [repeats] * len(sizes)):
        stages: dict[str, list[float]] = {}

        def timed(name, call, *args, stages=stages):
            started = time.perf_counter()
            value = call(*args)
            stages.setdefault(name, []).append(time.perf_counter() - started)
            return value

        for i, batch in enumerate(batches):
            body = json.dumps({"dataframe_split": batch.to_dict(orient="split")})
            timed("request JSON -> table (MLflow's scoring server, before the model)",
                  lambda text: dataframe_from_parsed_json(json.loads(text)["dataframe_split"], "split"), body)
            timed("pyfunc predict (whole call)", model.predict, batch)
            matrix = timed("table -> matrix", matrix_from_table, batch, genes)
            if isinstance(annotator, BackboneAnnotator):
                tokens = timed("matrix -> tokens", annotator.tokenizer.tokenize_matrix, matrix, np.asarray(genes))
                proba = timed("forward + head", lambda t: cell_outputs(
                    annotator.model.backbone, annotator.tokenizer, t, head=annotator._head_proba,
                    batch_size=annotator.batch_size)[1], tokens)
            else:
                proba = timed("matrix -> features -> classes", lambda m: annotator.matrix_outputs(m, genes)[1], matrix)
            timed("output table", lambda m, p: annotator.table(range(len(p)), p, annotator.matrix_expressed(m, genes)),
                  matrix, proba)
            if i == 0:  # warm-up
                stages.clear()
        rows += [{"cells": size, "stage": name, "p50_ms": 1000 * float(np.median(sec))} for name, sec in stages.items()]
    return rows


def _table(adata) -> pd.DataFrame:
    matrix = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    return pd.DataFrame(matrix.astype(np.float64), columns=[str(g) for g in adata.var_names])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=["demo", "human", "workers", "profile"],
                        default=["demo", "human"])
    parser.add_argument("--profile-sizes", nargs="+", type=int, default=[1, 100], help="cells per request (profile)")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4], help="server workers (part workers)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (part workers)")
    parser.add_argument("--load-requests", type=int, default=10, help="requests per client (part workers)")
    parser.add_argument("--load-cells", type=int, default=100, help="cells per request (part workers)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 100, 1000])
    parser.add_argument("--repeats", nargs="+", type=int, default=[20, 5, 2], help="requests per size (demo)")
    parser.add_argument("--human-repeats", nargs="+", type=int, default=[10, 3, 1], help="requests per size (human)")
    parser.add_argument("--reference-dir", type=Path, default=HERE.parent / "tests/data/scgpt_human")
    args = parser.parse_args()

    from scadapt.data import load_expression
    from scadapt.infra.storage import demo_backbone_dir

    results, load, stages = [], [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        os.chdir(tmp)
        policy = _policy(tmp)
        if "demo" in args.part:
            if not (demo_backbone_dir() / "args.json").is_file():
                sys.exit("No demo backbone: run `scadapt pretrain` first.")
            cells = _table(load_expression("pbmc68k_reduced"))
            for strategy, hparams in (("pca_logreg", {}), ("head", {"epochs": 2})):
                print(f"demo / {strategy}", flush=True)
                champion = _champion("pbmc68k_reduced", strategy, None, hparams, policy)
                assert champion.changed, "the champion must be this strategy's runner"
                for row in measure(f"models:/{champion.model_name}/{champion.version}", cells, args.sizes, args.repeats):
                    results.append({"setting": f"demo backbone, {strategy}", **row})
        if "profile" in args.part:
            cells = _table(load_expression("pbmc68k_reduced"))
            for strategy, hparams in (("pca_logreg", {}), ("head", {"epochs": 2})):
                print(f"profile / {strategy}", flush=True)
                champion = _champion("pbmc68k_reduced", strategy, None, hparams, policy)
                stages += [{"setting": f"demo backbone, {strategy}", **row} for row in
                           profile(f"models:/{champion.model_name}/{champion.version}", cells, args.profile_sizes)]
        if "workers" in args.part:
            if not (demo_backbone_dir() / "args.json").is_file():
                sys.exit("No demo backbone: run `scadapt pretrain` first.")
            print(f"workers / head: {args.clients} clients x {args.load_requests} requests of {args.load_cells} cells",
                  flush=True)
            champion = _champion("pbmc68k_reduced", "head", None, {"epochs": 2}, policy)
            load = load_test(f"models:/{champion.model_name}/{champion.version}",
                             _table(load_expression("pbmc68k_reduced")), args.workers, args.clients,
                             args.load_requests, args.load_cells)
        if "human" in args.part:
            ckpt = tmp / "human_ckpt"
            make_checkpoint(args.reference_dir, ckpt)
            print("human / head", flush=True)
            champion = _champion("pancreas_small", "head", str(ckpt), {"epochs": 1}, policy, max_seq_len=1200)
            cells = _table(load_expression("pancreas_small"))
            for row in measure(f"models:/{champion.model_name}/{champion.version}", cells, args.sizes,
                               args.human_repeats):
                results.append({"setting": "whole-human shapes, head", **row})

    print(f"\ncpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {date.today()}")
    if results:
        print_table(["setting", "cells per request", "requests", "p50 (ms)", "p95 (ms)", "cells/s",
                     "in-process p50 (ms)", "served vs in-process"],
                    [[r["setting"], r["cells"], r["requests"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
                      f"{r['cells_per_s']:.1f}", f"{r['in_process_p50_ms']:.1f}", f"{r['served_vs_in_process']:.2f}x"]
                     for r in results])
    if stages:
        print()
        print_table(["setting", "cells per request", "stage", "p50 (ms)"],
                    [[r["setting"], r["cells"], r["stage"], f"{r['p50_ms']:.2f}"] for r in stages])
    if load:
        print()
        print_table(["server workers", "requests", "wall (s)", "cells/s", "vs one worker", "p50 (ms)", "p95 (ms)"],
                    [[r["workers"], r["requests"], f"{r['wall_s']:.1f}", f"{r['cells_per_s']:.1f}",
                      f"{r['vs_one_worker']:.2f}x", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}"] for r in load])


if __name__ == "__main__":
    main()

"""Forward passes without gradients (embedding, validation, test evaluation, serving): how big a batch?

Run:  python benchmarks/inference_batches.py [--threads 1] [--repeats 3]

Every cell of each bundled dataset goes through the demo backbone (pretrained first if the cache has
none) in eval mode, cut into batches as :func:`scadapt.tokenization.batching.inference_batches`
cuts them (cells sorted by length), at several token budgets, and, as the reference, in batches of
64 cells (the size these passes used before they were sized by tokens). One warm-up pass, then the
median of ``--repeats``; ``--threads`` torch threads (1: as each benchmark worker process runs on a
2-core machine). Prints seconds per 1000 cells and the ratio to the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date

import numpy as np
import torch


def timed_pass(model, tokenizer, cells, batches) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for rows in batches:
            batch = tokenizer.batch(cells, rows)
            model(batch["gene_ids"], batch["values"], batch["padding_mask"])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from scadapt.backbone import load_backbone
    from scadapt.data.dataset import load_dataset
    from scadapt.jobs.demo_backbone import ensure_demo_backbone
    from scadapt.tokenization import GeneTokenizer
    from scadapt.tokenization.batching import inference_batches

    loaded = load_backbone(ensure_demo_backbone(), with_decoders=False, device=torch.device("cpu"))
    model = loaded.model.eval()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch "
          f"thread(s), torch {torch.__version__}, {date.today()}; demo backbone ({loaded.config.nlayers} layers, "
          f"d {loaded.config.d_model}), median of {args.repeats}")
    print("| data | cells | median tokens per cell | batches of | batches | s per 1000 cells | vs 64 cells |")
    print("|---|---|---|---|---|---|---|")
    for name in ("pbmc68k_reduced", "pancreas_small"):
        tokenizer = GeneTokenizer(loaded.vocab, n_bins=loaded.config.n_bins, max_seq_len=loaded.config.max_seq_len,
                                  pad_value=loaded.config.pad_value)
        cells = tokenizer.tokenize(load_dataset(name))
        lengths = tokenizer.token_lengths(cells, np.arange(cells.n_cells))
        plans = {"64 cells": inference_batches(lengths, 10**9, 64)}
        for tokens in (2048, 4096, 8192, 16384):
            plans[f"{tokens} tokens"] = inference_batches(lengths, tokens, 10**9)
        seconds = {}
        for label, batches in plans.items():
            timed_pass(model, tokenizer, cells, batches)  # warm-up
            seconds[label] = statistics.median(timed_pass(model, tokenizer, cells, batches)
                                               for _ in range(args.repeats))
        for label, batches in plans.items():
            print(f"| {name} | {cells.n_cells} | {int(np.median(lengths))} | {label} | {len(batches)} | "
                  f"{seconds[label] / cells.n_cells * 1000:.2f} | {seconds[label] / seconds['64 cells']:.2f} |")


if __name__ == "__main__":
    main()

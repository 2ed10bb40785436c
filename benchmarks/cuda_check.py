"""The CUDA path, checked against the CPU in the same run: what runs on a GPU when one is there.

Runs scadapt's own code (no MLflow needed, so it runs on an accelerator machine that lacks it):

1. CLS embeddings under CUDA autocast (bf16, or fp16 with a grad scaler on older GPUs) against
   fp32 on the CPU, with the demo backbone (``--checkpoint``, made by ``scadapt pretrain``);
2. training through the backbone (``full``, ``lora``) with the shared loop on CUDA: validation
   macro-F1 and seconds per epoch, against the same fit on the CPU;
3. a fit whose loss becomes NaN stops with ``TrainingDiverged`` on CUDA too;
4. at the real whole-human shapes (``--whole-human DIR`` with args.json/vocab.json, random
   weights): embedding 256 cells x 1,200 tokens and one ``full`` training step of 32 such cells,
   with the GPU's peak memory.

    python benchmarks/cuda_check.py --checkpoint ~/.cache/scadapt/backbones/demo \
        [--whole-human tests/data/scgpt_human]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from scadapt.backbone import BackboneConfig, ScGPTBackbone, embed_cells, load_backbone
from scadapt.data import load_expression, make_splits
from scadapt.fitting.classifier import fit_classifier
from scadapt.fitting.sources import TokenSource
from scadapt.infra.errors import TrainingDiverged
from scadapt.strategies import get_strategy
from scadapt.tokenization import GeneTokenizer, GeneVocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a small trained backbone, e.g. the demo backbone")
    parser.add_argument("--whole-human", default=None, help="folder with the whole-human args.json and vocab.json")
    parser.add_argument("--device", default="cuda", help="the accelerator side (cpu: a dry run of this script)")
    args = parser.parse_args()
    gpu = torch.device(args.device)
    if gpu.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("No CUDA GPU here.")
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16: {torch.cuda.is_bf16_supported()}")
    adata = load_expression("pancreas_small")
    labels = adata.obs["celltype"].astype(str).to_numpy()
    loaded = load_backbone(args.checkpoint)
    backbone = loaded.model
    tokenizer = GeneTokenizer(loaded.vocab, max_seq_len=256, min_genes=50)
    cells = tokenizer.tokenize(adata)

    on_cpu = embed_cells(backbone, tokenizer, cells, progress=False)
    on_gpu = embed_cells(_copy(backbone).to(gpu), tokenizer, cells, progress=False)
    cosine = (on_cpu * on_gpu).sum(1) / (np.linalg.norm(on_cpu, axis=1) * np.linalg.norm(on_gpu, axis=1))
    print(f"\n1. embeddings, CUDA autocast vs CPU fp32: min cosine {cosine.min():.5f}, "
          f"max abs diff {np.abs(on_cpu - on_gpu).max():.3g} ({len(cosine)} cells)")
    assert cosine.min() > 0.98

    split = make_splits(adata, "full", label_key="celltype", n_folds=5, folds=[0], seed=0)[0]
    classes = sorted(set(labels[split.train]))
    codes = np.array([classes.index(c) if c in classes else -1 for c in labels])
    print("\n2. training through the backbone (pancreas_small, full_fold0, 10 epochs, default settings)\n")
    print("| strategy | device | val macro-F1 | s/epoch | speed vs CPU |\n|---|---|---|---|---|")
    for strategy in ("full", "lora", "dora", "adalora"):
        seconds = {}
        for device in ("cpu", args.device):
            cls = get_strategy(strategy)
            config = cls.config_class(epochs=10, patience=10)
            model = cls(config).build_model(_copy(backbone), len(classes)).to(device)
            hooks = cls.hooks(model, config, -(-len(split.train) // config.batch_size) * config.epochs)
            model.head.set_standardization(torch.as_tensor(on_cpu[split.train], device=device))  # as fit_strategy
            started = time.perf_counter()
            result = fit_classifier(TokenSource(model, tokenizer, cells, torch.device(device)), codes, split.train,
                                    split.validation, len(classes), config, torch.device(device), progress=False,
                                    hooks=hooks)
            seconds[device] = (time.perf_counter() - started) / len(result.history)
            assert all(torch.isfinite(p).all() for p in model.parameters())
            print(f"| {strategy} | {device} | {result.best_val_macro_f1:.3f} | {seconds[device]:.2f} | "
                  f"{seconds['cpu'] / seconds[device]:.1f}x |", flush=True)

    config = get_strategy("full").config_class(epochs=2, lr=1e30, max_grad_norm=1e30)
    model = get_strategy("full")(config).build_model(_copy(backbone), len(classes)).to(gpu)
    try:
        fit_classifier(TokenSource(model, tokenizer, cells, gpu), codes, split.train, split.validation, len(classes),
                       config, gpu, progress=False)
        raise SystemExit("\n3. divergence on the GPU: NOT detected")
    except TrainingDiverged as error:
        print(f"\n3. divergence on the GPU: {str(error)[:90]}...")

    if args.whole_human and gpu.type == "cuda":
        _whole_human(Path(args.whole_human))


def _whole_human(folder: Path) -> None:
    settings = json.loads((folder / "args.json").read_text())
    vocab = GeneVocab.from_file(folder / "vocab.json")
    config = BackboneConfig(vocab_size=len(vocab), d_model=settings["embsize"], nhead=settings["nheads"],
                            d_hid=settings["d_hid"], nlayers=settings["nlayers"], max_seq_len=1200, dropout=0.0)
    backbone = _random_backbone(config, vocab, std=0.02).to("cuda")
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, len(vocab) - 3, (256, 1200))).cuda()
    values = torch.from_numpy(rng.integers(1, 51, (256, 1200)).astype(np.float32)).cuda()
    ids[:, 0] = vocab.cls_id
    print(f"\n4. whole-human shapes ({sum(p.numel() for p in backbone.parameters()) / 1e6:.1f}M parameters, "
          f"random weights), 1,200 tokens per cell\n")
    print("| task | cells | seconds (median of 3, after a warm-up) | cells/s | peak GPU memory (GiB) |\n|---|---|---|---|---|")
    from scadapt.infra.devices import autocast

    def embed() -> None:
        with torch.inference_mode(), autocast(torch.device("cuda")):
            for start in range(0, 256, 64):
                backbone(ids[start:start + 64], values[start:start + 64], None)

    model = get_strategy("full")(get_strategy("full").config_class()).build_model(backbone, 10).cuda()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    targets = torch.zeros(32, dtype=torch.long, device="cuda")

    def step() -> None:
        with autocast(torch.device("cuda")):
            logits = model(ids[:32], values[:32], None)
        torch.nn.functional.cross_entropy(logits.float(), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for name, work, n in (("embed", embed, 256), ("full step", step, 32)):
        work()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(3):
            started = time.perf_counter()
            work()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        seconds = float(np.median(times))
        print(f"| {name} | {n} | {seconds:.3f} | {n / seconds:.0f} | {torch.cuda.max_memory_allocated() / 2**30:.2f} |")


def _random_backbone(config: BackboneConfig, vocab: GeneVocab, std: float = 0.2) -> ScGPTBackbone:
    torch.manual_seed(0)
    model = ScGPTBackbone(config, pad_id=vocab.pad_id)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, std)
    return model


def _copy(backbone: ScGPTBackbone) -> ScGPTBackbone:
    import copy

    return copy.deepcopy(backbone).cpu()


if __name__ == "__main__":
    main()

"""Device and mixed-precision choices."""

from __future__ import annotations

import contextlib
import os

import torch

from scadapt.infra.errors import ScadaptError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ScadaptError(f"Unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScadaptError("device='cuda' was requested but no CUDA GPU is available; use 'cpu' or 'auto'.")
    return device


def inference_tokens(device: torch.device, cap: int | None = None) -> int:
    """Tokens per batch (cells x padded length) of a forward pass without gradients. On a CPU, small
    batches that stay in its caches are the fastest: 4096 tokens (e.g. 16 cells of 250 genes) took
    16-22 % less time per cell than 64-cell batches on the demo backbone with one thread
    (benchmarks/inference_batches.py); a GPU wants large ones. ``cap``: at most this many (what a
    memory budget allows)."""
    tokens = 65536 if device.type == "cuda" else 4096
    return tokens if cap is None else max(1, min(tokens, cap))


PRECISION_ENV = "SCADAPT_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16")


def precision() -> str:
    """The arithmetic asked for with ``SCADAPT_PRECISION``: ``auto`` (the default: mixed precision
    on CUDA, float32 on the CPU), ``fp32`` (float32 everywhere) or ``bf16`` (bfloat16 autocast on
    the CPU too; fast on CPUs with AVX512-BF16 or AMX). It applies to embedding, training and
    serving alike."""
    mode = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if mode not in PRECISIONS:
        raise ScadaptError(f"{PRECISION_ENV}={mode!r} is not one of {', '.join(PRECISIONS)}.")
    return mode


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype matrix products run in on ``device`` under :func:`autocast`."""
    mode = precision()
    if mode == "fp32":
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if mode == "bf16" or torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float32


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision as :func:`precision` asks: by default bf16 on CUDA GPUs that support it, fp16
    on older ones, nothing on the CPU."""
    dtype = compute_dtype(device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device) -> bool:
    return compute_dtype(device) == torch.float16

"""A memory budget for training through the backbone, and the micro-batches that keep to it.

What a step through the backbone needs beyond the loaded model and data is mostly the
activations autograd saves for the backward pass, which grow with the tokens of a batch (cells
x padded length). :func:`plan_steps` measures them on the longest training cell (the bytes autograd
saves, counted exactly with saved-tensor hooks, not estimated from the shapes), adds what does not
depend on the batch (gradients and AdamW state of the trainable weights, the kept frozen-layer
outputs) and cuts every optimisation batch into micro-batches of at most as many tokens as fit;
the training loop accumulates their gradients, so a step equals the unsplit one. When not even one
cell fits, activation checkpointing (each layer's activations recomputed in the backward pass from
its input) is turned on; when that does not fit either, the job stops with what would.

The budget (``--memory-budget``) defaults to 8 GB on a CPU and to the free memory of a CUDA
device, and local worker processes share it (``SCADAPT_MEMORY_SHARE``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from scadapt.infra.errors import ScadaptError
from scadapt.infra.parsers import parse_memory_size

DEFAULT_CPU_BUDGET = 8 * 2**30
SHARE_ENV = "SCADAPT_MEMORY_SHARE"  # this process is one of N workers sharing the machine's budget
# the planned activations stay below this share of what is left for them: the backward pass holds
# gradients of the activations and temporaries beside the saved tensors
ACTIVATION_SHARE = 0.7

log = logging.getLogger(__name__)


def format_bytes(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.0f} MB" if n >= 10 * 2**20 else f"{n / 2**20:.2f} MB"


def _at_least(n: float) -> str:
    """``n`` bytes rounded up, as a --memory-budget value."""
    if n >= 2**30:
        return f"{math.ceil(n / 2**30 * 10) / 10:g}GB"
    return f"{math.ceil(n / 2**20 * 100) / 100:g}MB"


@dataclass(frozen=True)
class MemoryBudget:
    """What training may use beyond the loaded backbone and data, in bytes, and where it came from."""

    bytes: int
    origin: str  # e.g. "--memory-budget 4GB", "the default on a CPU"

    @classmethod
    def resolve(cls, setting: str | None, device: torch.device) -> MemoryBudget:
        """``setting`` (``auto``/None: 8 GB on a CPU, the free memory of a CUDA device), divided
        among the local workers that share this machine."""
        try:
            size = parse_memory_size(setting or "auto")
        except ValueError as error:
            raise ScadaptError(f"Bad --memory-budget: {error}.") from None
        if size is not None:
            origin = f"--memory-budget {setting}"
        elif device.type == "cuda":
            size, origin = torch.cuda.mem_get_info(device)[0], f"the free memory of {device}"
        else:
            size, origin = DEFAULT_CPU_BUDGET, "the default on a CPU"
        share = _workers_sharing()
        if share > 1:
            size, origin = size // share, f"{origin}, shared by {share} local workers"
        return cls(int(size), origin)

    def describe(self) -> str:
        return f"{format_bytes(self.bytes)} ({self.origin})"


# steps whose activations reach this size run after return_freed_memory(): below it (the demo
# backbone's steps, tens of MB) mapping each block afresh cost more time than the heap wasted
LARGE_STEP_BYTES = 512 * 2**20


@functools.cache
def return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the system (Linux; once per process).

    A step through the backbone allocates and frees many activation-sized temporaries. By default
    glibc serves blocks up to 32 MB from its heap, where freed ones stay in the process and
    fragment: a LoRA forward pass of one 1,200-token cell at whole-human shapes saved 242 MB for
    the backward pass but grew the process by 690 MB. With blocks of 1 MB and more mapped and
    unmapped directly, it grew by about what was saved, at the same speed (benchmarks/RESULTS.md).
    Small steps, whose blocks the heap reuses well, are left alone (:data:`LARGE_STEP_BYTES`)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _LARGE_BLOCK)
    except (OSError, AttributeError):  # not glibc: its own allocator decides
        pass


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_LARGE_BLOCK = 2**20


def _workers_sharing() -> int:
    text = os.environ.get(SHARE_ENV, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1


def inference_token_cap(budget: MemoryBudget | None, d_model: int, d_hid: int, nhead: int, longest: int) -> int | None:
    """The most tokens a forward pass without gradients may take at once within ``budget``: a
    layer's temporaries per token, and attention scores per cell in case no fused kernel runs."""
    if budget is None:
        return None
    per_token = (8 * d_model + 2 * d_hid) * 4 + nhead * longest * 8
    return max(1, int(budget.bytes * ACTIVATION_SHARE // per_token))


@dataclass
class StepPlan:
    """How each optimisation batch runs: micro-batches of at most ``max_tokens`` tokens (None:
    whole batches), with or without activation checkpointing."""

    max_tokens: int | None = None
    checkpointing: bool = False
    budget: MemoryBudget | None = None
    estimate_bytes: int = 0  # planned peak beyond the loaded model: fixed part + one micro-batch
    step_activation_bytes: int = 0  # of those, the activations of one micro-batch (or whole batch)

    def split(self, batch: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """``batch`` (cells) cut into micro-batches of at most ``max_tokens`` padded tokens,
        longest cells first so that each micro-batch pads little. ``lengths``: tokens per cell of
        ``batch``."""
        if self.max_tokens is None or len(batch) * int(lengths.max(initial=0)) <= self.max_tokens:
            return [batch]
        order = np.argsort(-lengths, kind="stable")
        parts, start = [], 0
        while start < len(order):
            cells = max(1, self.max_tokens // int(lengths[order[start]]))  # the first is the longest
            parts.append(batch[order[start: start + cells]])
            start += cells
        return parts

    def halved(self, largest_tokens: int) -> StepPlan:
        """The plan after running out of memory with a micro-batch of ``largest_tokens`` tokens."""
        return StepPlan(max(1, largest_tokens // 2), self.checkpointing, self.budget, self.estimate_bytes,
                        self.step_activation_bytes)


def saved_activation_bytes(forward: Callable[[], Tensor], module: nn.Module, device: torch.device) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``forward()`` runs, each
    storage counted once, the module's own parameters left out. Runs no backward pass."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    rng_devices = [device] if device.type == "cuda" else []  # dropout draws here leave the fit's draws as they were
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.random.fork_rng(devices=rng_devices):
        out = forward()
    del out
    return sum(seen.values())


def plan_steps(*, budget: MemoryBudget, checkpointing: str, trainable: int, kept_bytes: int, longest: int,
               batch_size: int, measure: Callable[[bool], int], layers_with_grad: int, d_model: int) -> StepPlan:
    """The micro-batches of a fit within ``budget``.

    Args:
        trainable: trainable parameters (their gradients and AdamW's two moments are fixed costs).
        kept_bytes: memory the frozen-layer outputs may hold during the fit.
        longest: tokens of the longest training cell; batch_size: cells per optimisation batch.
        measure: bytes saved for backward by one forward of the longest cell, with (True) or
            without activation checkpointing.
        layers_with_grad: backbone layers whose activations are saved (their inputs are kept under
            checkpointing, and one layer's activations exist again while it is recomputed).
    """
    fixed = trainable * 4 * 3 + kept_bytes
    room = (budget.bytes - fixed) * ACTIVATION_SHARE
    whole = measure(False) / longest  # bytes per token without checkpointing
    if checkpointing != "on":
        tokens = int(room // whole) if room > 0 else 0
        if tokens >= longest or checkpointing == "off":
            return _plan(tokens, longest, batch_size, False, budget, fixed, whole)
    outside = measure(True) / longest  # embeddings, head: what runs outside the checkpointed layers
    per_layer = max(0.0, whole - outside) / max(layers_with_grad, 1)
    checkpointed = outside + layers_with_grad * d_model * 4 + per_layer
    tokens = int(room // checkpointed) if room > 0 else 0
    return _plan(tokens, longest, batch_size, True, budget, fixed, checkpointed)


def _plan(tokens: int, longest: int, batch_size: int, checkpointing: bool, budget: MemoryBudget, fixed: int,
          per_token: float) -> StepPlan:
    if tokens < longest:
        raise ScadaptError(_unmeetable(budget, fixed, longest, per_token, checkpointing))
    step = min(tokens, batch_size * longest) * per_token / ACTIVATION_SHARE
    return StepPlan(None if tokens >= batch_size * longest else tokens, checkpointing, budget, int(fixed + step),
                    int(step))


def _unmeetable(budget: MemoryBudget, fixed: int, longest: int, per_token: float, checkpointing: bool) -> str:
    one_cell = fixed + longest * per_token / ACTIVATION_SHARE
    fit_tokens = int((budget.bytes - fixed) * ACTIVATION_SHARE // per_token) if budget.bytes > fixed else 0
    how = "with activation checkpointing" if checkpointing else "without activation checkpointing"
    hint = "" if checkpointing else " (or --activation-checkpointing auto/on, which recomputes activations to save memory)"
    shorter = f", or lower --max-seq-len to {fit_tokens} tokens per cell" if fit_tokens >= 2 else ""
    return (f"The memory budget of {budget.describe()} cannot hold one training cell of {longest} tokens {how}: "
            f"the trainable weights' gradients and optimiser state with the kept frozen-layer outputs take "
            f"{format_bytes(fixed)}, and one cell needs about {format_bytes(one_cell - fixed)} more. Raise "
            f"--memory-budget to at least {_at_least(one_cell)}{hint}{shorter}.")

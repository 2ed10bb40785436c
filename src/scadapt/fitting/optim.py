"""Optimiser, learning-rate schedule and the (mixed-precision) update step shared by training loops."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from scadapt.infra.devices import needs_grad_scaler

MAX_NONFINITE_STEPS = 3  # consecutive NaN/infinite losses after which a training loop counts as diverged


def warmup_cosine(warmup_steps: int, total_steps: int, floor: float = 0.1):
    """LR multiplier: linear warmup to 1, then cosine decay to ``floor`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Updater:
    """AdamW with warmup + cosine decay, gradient clipping and, on CUDA without bf16, loss scaling.

    ``step(loss)`` does backward, clipping, the optimiser step and the schedule step. A step
    accumulated over micro-batches is ``zero_grad()``, ``backward(part)`` for each, ``apply()``.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        total_steps: int,
        device: torch.device,
        clip_norm: float = 1.0,
    ):
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(warmup_steps, total_steps))
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device) else None
        self.clip_norm = clip_norm
        self.steps_done = 0

    def step(self, loss: Tensor) -> None:
        self.zero_grad()
        self.backward(loss)
        self.apply()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor) -> None:
        """Add ``loss``'s gradients to the weights' (scaled when a grad scaler is in use)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def apply(self) -> None:
        """Clip the accumulated gradients, step the optimiser and the schedule."""
        if self.scaler is None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
            self.optimizer.step()
        else:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        self.steps_done += 1

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

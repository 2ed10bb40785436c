"""How fast a backbone of a given shape runs on this machine: one timed step, for planning a job.

The weights do not change the time of a step, so a backbone that does not exist yet (the demo
backbone, pretrained later in the job) is timed with random weights of its shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from scadapt.backbone.config import BackboneConfig
from scadapt.backbone.model import ScGPTBackbone


@dataclass(frozen=True)
class CellSeconds:
    """Seconds per cell of ``tokens`` tokens through every layer of the backbone."""

    tokens: int
    train: float  # a training step: forward and backward, every weight trainable
    forward: float  # an inference pass (embedding a cell)


def time_cell_passes(config: BackboneConfig, tokens: int, batch: int = 8, device: str = "cpu",
                     decoders: bool = False, seed: int = 0) -> CellSeconds:
    """Time one training step and one inference pass of ``batch`` cells of ``tokens`` tokens
    (after one untimed step, which warms up the kernels; the fastest of a few repeats within about
    a second, so that a moment of load on the machine does not count). ``decoders``: the step of
    pretraining (every token's hidden state through the expression decoders) instead of a
    classifier's (the cell embedding)."""
    cuda = torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=[torch.device(device).index or 0] if cuda else []):  # the caller's
        torch.manual_seed(seed)  # random streams stay as they were (weights, dropout)
        model = ScGPTBackbone(config, pad_id=0, with_decoders=decoders).to(device)
        tokens = max(2, min(int(tokens), config.max_seq_len))
        gene_ids = torch.randint(1, max(2, config.vocab_size), (batch, tokens)).to(device)
        values = torch.randint(0, config.n_bins, (batch, tokens)).float().to(device)

        def outputs() -> torch.Tensor:
            if decoders:
                return sum(out.square().mean() for out in model.pretraining_outputs(gene_ids, values, None).values())
            return model(gene_ids, values, None).square().mean()

        def train_step() -> None:
            model.zero_grad(set_to_none=True)
            outputs().backward()

        train_step()
        train = _fastest(train_step, device)
        with torch.no_grad():
            forward = _fastest(outputs, device)
    return CellSeconds(tokens, train / batch, forward / batch)


def _fastest(step, device: str, repeats: int = 5, within_sec: float = 1.0) -> float:
    """The shortest time of ``step`` over up to ``repeats`` runs, stopping after ``within_sec``."""
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        took = time.perf_counter() - started
        best, spent = min(best, took), spent + took
        if spent >= within_sec:
            break
    return best

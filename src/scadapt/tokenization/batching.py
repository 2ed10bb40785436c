"""Batch orders that keep padding low."""

from __future__ import annotations

import numpy as np


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, group_batches: int = 16
) -> list[np.ndarray]:
    """Split cell indices into batches of similar length.

    Cells are shuffled (if ``rng`` is given), cut into groups of ``group_batches`` batches, sorted by
    length inside each group and then batched, so a batch pads to a length close to its cells'
    own; the batch order is shuffled again. Without ``rng`` all cells are sorted by length (for
    inference, where order does not matter and padding is pure waste).
    """
    order = np.arange(len(lengths))
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(order)
    group = batch_size * group_batches
    batches = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def inference_batches(token_lengths: np.ndarray, max_tokens: int, max_cells: int) -> list[np.ndarray]:
    """Split cell positions into batches for a forward pass without gradients: sorted by length,
    each batch as many cells as fit in ``max_tokens`` once padded to its longest (and at most
    ``max_cells``; at least one). Sized by tokens rather than cells, a pass over short cells is not
    slowed by batches too big for the CPU's caches, nor one over long cells by too many at once."""
    order = np.argsort(token_lengths, kind="stable")
    batches, start = [], 0
    for end in range(len(order)):
        size = end - start + 1  # cells in the batch with ``order[end]``, the longest so far
        if end > start and (size > max_cells or size * int(token_lengths[order[end]]) > max_tokens):
            batches.append(order[start:end])
            start = end
    if start < len(order):
        batches.append(order[start:])
    return batches

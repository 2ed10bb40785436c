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

"""Frozen CLS embeddings kept on disk, so every job on the same data and backbone embeds each
cell once: the cells of a benchmark matrix, the trials of a study and the steps of a pipeline
(each a new training context, often a new process) all read the same file.

An entry is keyed by everything an embedding depends on: the backbone's weights hash, the
tokenized cells (the tokenizer's content key: input matrix, bins, seed), the tokens per cell, the
padding value and the device type with its compute dtype (``SCADAPT_PRECISION``). It holds the embeddings of
the cells computed so far and which cells those are; a job that embeds more cells adds them.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from scadapt.infra.storage import atomic_write, default_cache_dir

FORMAT = "v1"


def embedding_key(weights_hash: str, cells_key: str, max_seq_len: int, pad_value: float, seed: int,
                  arithmetic: str) -> str:
    """``arithmetic``: the device type and compute dtype, e.g. ``cpu-torch.float32``."""
    text = f"{FORMAT}|{weights_hash}|{cells_key}|{max_seq_len}|{pad_value}|{seed}|{arithmetic}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class EmbeddingCache:
    """``.npz`` files with ``embeddings`` ``[n_cells, d]`` and ``done`` ``[n_cells]`` (bool)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "embeddings"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str, n_cells: int, width: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored embeddings and their mask, or None (absent, damaged or of another shape)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                embeddings, done = archive["embeddings"], archive["done"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)  # a damaged entry is rebuilt, never trusted
            return None
        if embeddings.shape != (n_cells, width) or done.shape != (n_cells,) or done.dtype != bool:
            return None
        return embeddings.astype(np.float32, copy=False), done

    def save(self, key: str, embeddings: np.ndarray, done: np.ndarray) -> None:
        """Store the entry, keeping the cells another job stored meanwhile."""
        stored = self.load(key, *embeddings.shape)
        if stored is not None:
            theirs = stored[1] & ~done
            if theirs.any():
                embeddings, done = embeddings.copy(), done.copy()
                embeddings[theirs], done[theirs] = stored[0][theirs], True
        atomic_write(self.path(key), lambda handle: np.savez(handle, embeddings=embeddings, done=done))

"""On-disk cache of tokenized datasets, so repeated runs skip gene matching and binning."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from scadapt.infra.storage import atomic_write, default_cache_dir


class TokenCache:
    """``.npz`` files keyed by a content hash of the input matrix and tokenizer settings."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "tokenized"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)  # a damaged entry is rebuilt, never trusted
            return None

    def save(self, key: str, **arrays: np.ndarray) -> None:
        atomic_write(self.path(key), lambda handle: np.savez(handle, **arrays))

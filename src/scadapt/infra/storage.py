"""Where scadapt keeps files between runs, and how it writes them so a crash never leaves a
file that looks complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def default_cache_dir() -> Path:
    """``$SCADAPT_CACHE``, else ``$XDG_CACHE_HOME/scadapt``, else ``~/.cache/scadapt``."""
    if env := os.environ.get("SCADAPT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scadapt"


def demo_backbone_dir() -> Path:
    """Where the demo backbone lives when no checkpoint is given (``scadapt pretrain`` writes it,
    later steps reuse it)."""
    return default_cache_dir() / "backbones" / "demo"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.close(fd)
        with open(tmp, "wb") as handle:  # handle.name is the temporary path, for checks before the rename
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_dir(path: str | Path, what: str, option: str) -> Path:
    """``path`` as a folder this process can write to (created if needed), checked before any
    work so an hour of training never ends in a permission error."""
    from scadapt.infra.errors import ScadaptError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ScadaptError(f"Cannot write {what} to {path}: {error.strerror or error}. Choose a folder you can "
                           f"write to with {option}.") from None
    return path


def writable_file(path: str | Path, what: str, option: str) -> Path:
    """``path`` as a file this process can create or replace (its folder is checked)."""
    from scadapt.infra.errors import ScadaptError

    path = Path(path)
    if path.is_dir():
        raise ScadaptError(f"{path} is a folder; give a file name for {what} with {option}.")
    writable_dir(path.parent, what, option)
    return path

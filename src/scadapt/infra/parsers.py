"""Parsers of option values: MLflow passes every parameter as a string, and the command, the
MLproject and the notebook keywords turn it into a value with these (:mod:`scadapt.infra.options`
declares which parser an option uses). Light: no anndata, torch or MLflow."""

from __future__ import annotations

import argparse
import math
import re

_BYTES_PER_UNIT = {"": 2**30, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
                   "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def optional_text(text: str) -> str | None:
    """An empty string means "not given"."""
    return text or None


def integer(text: str) -> int:
    """An integer, also when MLflow renders it as a float ("10.0")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not math.isfinite(value) or not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def number(text: str) -> float:
    """A finite number (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def boolean(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def names(text: str) -> tuple[str, ...]:
    """``a,b`` -> ``("a", "b")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def number_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(number(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_memory_size(text: str) -> int | None:
    """``"8GB"``, ``"512MB"``, ``"8"`` (gigabytes) -> bytes; ``"auto"`` (or empty) -> None.
    Units are binary (1 GB = 2**30 bytes)."""
    text = str(text).strip().lower().replace(" ", "")
    if text in ("", "auto"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([a-z]*)", text)
    if not match or match.group(2) not in _BYTES_PER_UNIT or float(match.group(1)) <= 0:
        raise ValueError(f"a memory budget is 'auto' or a size such as 4GB or 512MB, not {text!r}")
    return int(float(match.group(1)) * _BYTES_PER_UNIT[match.group(2)])


def memory_size(text: str) -> str:
    """A memory budget as given (``auto``, ``4GB``, ...), checked."""
    try:
        parse_memory_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return str(text).strip() or "auto"


def optional_count(text: str) -> int | None:
    """A whole number, where 0 or nothing means "not given" (None)."""
    return integer(text) or None if str(text).strip() else None


def optional_seconds(text: str) -> float | None:
    """Seconds, where 0 or nothing means "no limit" (None)."""
    return number(text) or None if str(text).strip() else None


def optional_minutes(text: str) -> float | None:
    """Minutes, where nothing means "no limit" (None); zero and negative values are refused by the
    job, which says the smallest budget that fits."""
    return number(text) if str(text).strip() else None


def unknown_cells(text: str) -> str | float | None:
    """How annotation treats cells unlike any trained type: ``auto`` (the model's calibrated
    threshold), a fraction of known cells to reject (``0.1``), or ``none`` (no rejection)."""
    text = str(text).strip().lower()
    if text in ("none", "off"):
        return None
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a fraction between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"the fraction of known cells to reject is between 0 and 1, got {text!r}")
    return value


def pairs(text: str) -> dict[str, str]:
    """``name=value,name=value`` -> dict (values stay strings: their reader converts them)."""
    found = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, value = entry.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected name=value,name=value (got {entry!r})")
        found[name.strip()] = value.strip()
    return found


NAME_RULE = ("is not a usable name (it names MLflow experiments, registered models and files): use one without '/', "
             "'\\', ':' or control characters, not made of dots only, and without spaces at its ends")


def bad_name(name: str | None) -> bool:
    """Whether ``name`` breaks :data:`NAME_RULE`: MLflow's rule for experiment and registered model
    names, plus no path separator and no ``.``/``..`` (None: no name given, not a bad one)."""
    return name is not None and (not name.strip() or name != name.strip() or not name.isprintable()
                                 or any(c in name for c in "/\\:") or not name.strip("."))

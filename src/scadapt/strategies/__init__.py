"""The adaptation strategies, by name. Each is one module of this package, named after it, whose
``@register``ed class owns its fit (see :mod:`scadapt.strategies.base`).

:data:`NAMES` is the one list of strategies: the CLI, the MLproject, the pipeline and the
benchmark take "all strategies" from it, in its order (cheapest first, the order of listings and
reports). Importing this package is light (no torch); a strategy's module is imported when it is
first asked for. A new strategy is its module plus its name here.
"""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING

from scadapt.infra.errors import ScadaptError
from scadapt.infra.lazy import lazy_attributes
from scadapt.infra.parsers import names

if TYPE_CHECKING:
    from scadapt.strategies.base import Strategy

NAMES = ("pca_logreg", "logreg", "mlp", "frozen_probe", "head", "full", "lora", "dora", "adalora", "adapter",
         "prefix", "ia3")


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered under ``name``."""
    if name not in NAMES:
        raise ScadaptError(f"Unknown strategy {name!r}; choose one of {', '.join(NAMES)}.")
    module = importlib.import_module(f"{__name__}.{name}")
    from scadapt.strategies.base import registered

    strategy = registered(name)
    if strategy is None:
        raise ImportError(f"{module.__name__} registers no strategy named {name!r}")
    return strategy


def strategy_names(text: str) -> tuple[str, ...]:
    """The option value ``"lora,head"`` -> ``("lora", "head")``, each a known strategy."""
    chosen = names(text)
    if not chosen:
        raise argparse.ArgumentTypeError("name at least one strategy")
    if unknown := [s for s in chosen if s not in NAMES]:
        raise argparse.ArgumentTypeError(f"unknown strategies {', '.join(unknown)}; known: {', '.join(NAMES)}")
    return chosen


def all_strategies() -> dict[str, type[Strategy]]:
    return {name: get_strategy(name) for name in NAMES}


def baselines() -> tuple[str, ...]:
    """The strategies the benchmark's paired comparison measures the others against."""
    return tuple(name for name in NAMES if get_strategy(name).baseline)


def run_order(chosen, budgeted: bool = False) -> tuple[str, ...]:
    """``chosen`` strategies in the order a job runs them: the strategies without a backbone first,
    cheapest first (their answer comes within a minute), then those with one by
    :attr:`Strategy.relative_cost`: with a time budget cheapest first (as many as can finish
    within it do), without one costliest first (workers sharing the matrix then end together,
    rather than one running ``full`` alone at the end while the others wait)."""
    def key(name: str) -> tuple:
        strategy = get_strategy(name)
        cost = strategy.relative_cost if budgeted or not strategy.needs_backbone else -strategy.relative_cost
        return strategy.needs_backbone, cost, NAMES.index(name)

    return tuple(sorted(chosen, key=key))


_WHERE = dict.fromkeys(("Fitted", "Strategy", "StrategyConfig", "TorchConfig"), "scadapt.strategies.base")
__getattr__, _dir = lazy_attributes(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted([*_WHERE, *__all__])


__all__ = ["NAMES", "all_strategies", "baselines", "get_strategy", "run_order", *_WHERE]

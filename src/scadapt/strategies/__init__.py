"""The eight adaptation strategies, by name (``STRATEGIES``), each a config dataclass plus a
class saying how it changes the backbone. See :mod:`scadapt.strategies.base`.

A new strategy is one module with a ``@register``ed class, imported below; the import order is
the order of listings and reports (cheapest first).
"""

# isort: off
from scadapt.strategies import pca_logreg, frozen_probe, head, full, lora, adapter, prefix, ia3  # noqa: F401
# isort: on
from scadapt.strategies.base import Strategy, StrategyConfig, TorchConfig
from scadapt.strategies.registry import STRATEGIES, get_strategy

STRATEGY_NAMES = tuple(STRATEGIES)


def epoch_budget(name: str, epochs: int) -> dict[str, int]:
    """Fixed settings that give a strategy trained by gradient descent ``epochs`` epochs (with
    early stopping after a third of them without improvement); empty for the others."""
    if issubclass(get_strategy(name).config_class, TorchConfig):
        return {"epochs": epochs, "patience": max(3, epochs // 3)}
    return {}


__all__ = ["STRATEGIES", "STRATEGY_NAMES", "Strategy", "StrategyConfig", "TorchConfig", "epoch_budget", "get_strategy"]

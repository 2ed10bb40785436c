"""Strategy names -> implementations. A new strategy is one module with a ``@register``ed class,
imported in ``scadapt/strategies/__init__.py``."""

from __future__ import annotations

from scadapt.errors import ScadaptError

STRATEGIES: dict[str, type] = {}


def register(cls: type) -> type:
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> type:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ScadaptError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.") from None

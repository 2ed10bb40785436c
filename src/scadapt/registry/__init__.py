"""Promotion of the best runner per dataset in the MLflow model registry."""

from scadapt.registry.policy import PromotionPolicy
from scadapt.registry.promote import DowngradeRefused, PromotionResult, promote

__all__ = ["DowngradeRefused", "PromotionPolicy", "PromotionResult", "promote"]

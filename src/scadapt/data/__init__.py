"""Datasets: bundled ones by name and user ``.h5ad`` files."""

from scadapt.data.sources import BUNDLED_DATASETS, load_expression, read_h5ad

__all__ = ["BUNDLED_DATASETS", "load_expression", "read_h5ad"]

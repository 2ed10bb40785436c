"""Where expression data come from: bundled datasets by name, or any ``.h5ad`` path.

Bundled:
  * ``pbmc68k_reduced`` - ships with scanpy; its ``.X`` is scaled, so we use ``.raw``
    (log-normalised, 765 genes, 700 cells).
  * ``pancreas_small`` - a real 500-cell, 5-technology human pancreas subset (raw counts in
    ``X``; obs ``celltype``, ``tech``), shipped inside this package (see bundled/SOURCES.md).
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import anndata as ad
import h5py
from anndata import AnnData

from scadapt.errors import InputDataError

BUNDLED_DATASETS = ("pbmc68k_reduced", "pancreas_small")


def bundled_path(filename: str) -> Path:
    return Path(str(resources.files("scadapt.data") / "bundled" / filename))


def _pbmc68k_reduced() -> AnnData:
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = sc.datasets.pbmc68k_reduced()
    adata = full.raw.to_adata()
    adata.obs = full.obs.copy()
    return adata


def read_h5ad(path: str | Path) -> AnnData:
    """Read an ``.h5ad`` file with errors that say what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(
            f"{path} does not exist. Pass the path of an .h5ad file or one of the bundled "
            f"datasets: {', '.join(BUNDLED_DATASETS)}."
        )
    if not h5py.is_hdf5(path):
        raise InputDataError(
            f"{path} is not an HDF5 file, so not an .h5ad (it may be truncated, or another "
            "format). Write it with adata.write_h5ad(...) or download it again."
        )
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as error:
        raise InputDataError(
            f"{path} could not be read as AnnData ({type(error).__name__}: {str(error)[:200]}). "
            "The file may be truncated; download or write it again."
        ) from None


def load_expression(source: str) -> AnnData:
    """An AnnData for a bundled dataset name or an ``.h5ad`` path."""
    if source == "pbmc68k_reduced":
        return _pbmc68k_reduced()
    if source == "pancreas_small":
        return read_h5ad(bundled_path("pancreas_panc8_small.h5ad"))
    return read_h5ad(source)

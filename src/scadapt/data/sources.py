"""Where the AnnData of a dataset comes from: scanpy, a file inside this package, a download, or
a user's ``.h5ad``. Each source has ``read(cache_dir) -> AnnData`` and says what it is."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anndata as ad
import h5py
from anndata import AnnData

from scadapt.data.download import DownloadedFile
from scadapt.infra.errors import InputDataError


def read_h5ad(path: str | Path) -> AnnData:
    """Read an ``.h5ad`` file with errors that say what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        h5ads = sorted(p.name for p in path.glob("*.h5ad"))[:3]
        raise InputDataError(
            f"{path} is a directory, not an .h5ad file. Pass the file itself"
            + (f" (this directory holds {', '.join(h5ads)})." if h5ads else ".")
        )
    if not path.is_file():
        raise InputDataError(
            f"{path} does not exist. Pass the path of an .h5ad file or a catalogued dataset name "
            "(`scadapt datasets` lists them)."
        )
    if not h5py.is_hdf5(path):
        raise InputDataError(
            f"{path} is not an HDF5 file, so not an .h5ad (it may be truncated, or another "
            "format). Write it with adata.write_h5ad(...) or download it again."
        )
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise InputDataError(
            f"{path} could not be read as AnnData ({type(error).__name__}: {str(error)[:200]}). "
            "The file may be truncated; download or write it again."
        ) from None


@dataclass(frozen=True)
class ScanpyDataset:
    """A dataset shipped inside scanpy (``scanpy.datasets.<function>()``)."""

    function: str

    def read(self, cache_dir: str | Path | None = None) -> AnnData:
        import scanpy as sc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(sc.datasets, self.function)()

    def describe(self) -> str:
        return f"scanpy.datasets.{self.function}()"


@dataclass(frozen=True)
class PackageFile:
    """An ``.h5ad`` shipped inside scadapt (``scadapt/data/bundled``)."""

    filename: str

    @property
    def path(self) -> Path:
        return Path(str(resources.files("scadapt.data") / "bundled" / self.filename))

    def read(self, cache_dir: str | Path | None = None) -> AnnData:
        return read_h5ad(self.path)

    def describe(self) -> str:
        return f"bundled file {self.filename}"


@dataclass(frozen=True)
class LocalFile:
    """A user's ``.h5ad`` file."""

    path: str

    def read(self, cache_dir: str | Path | None = None) -> AnnData:
        return read_h5ad(self.path)

    def describe(self) -> str:
        return str(Path(self.path).resolve())


@dataclass(frozen=True)
class RemoteFile(DownloadedFile):
    """An ``.h5ad`` downloaded once into the scadapt cache."""

    def read(self, cache_dir: str | Path | None = None) -> AnnData:
        return read_h5ad(self.fetch(cache_dir))

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True, eq=False)
class InMemory:
    """An AnnData the caller already holds; it is copied, never changed."""

    adata: AnnData

    def read(self, cache_dir: str | Path | None = None) -> AnnData:
        return self.adata.copy()

    def describe(self) -> str:
        return "in-memory AnnData"


Source = ScanpyDataset | PackageFile | LocalFile | RemoteFile | InMemory

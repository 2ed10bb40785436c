"""Downloading a dataset file into the scadapt cache without ever leaving a half file behind.

The file is streamed into a temporary file next to its final place, checked (byte count against
the server's ``Content-Length``, SHA-256 when one is known, HDF5 signature) and only then renamed
into place. Its SHA-256 is recorded next to it and checked again on every later use, so a file
damaged in the cache is noticed instead of read. ``file://`` URLs go through the same path,
which is how the tests exercise it on a real local file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import h5py
from tqdm.auto import tqdm

from scadapt.infra.errors import InputDataError
from scadapt.infra.storage import atomic_write, default_cache_dir

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_SEC = 60


@dataclass(frozen=True)
class DownloadedFile:
    """A file fetched once from ``url`` into ``<cache>/datasets/<filename>``.

    Args:
        url: ``https://`` or ``file://`` address.
        filename: name in the cache.
        sha256: expected SHA-256, when the publisher gives one (else the first download's hash
            is recorded and later uses are checked against it).
    """

    url: str
    filename: str
    sha256: str | None = None

    def cached_path(self, cache_dir: str | Path | None = None) -> Path:
        return Path(cache_dir or default_cache_dir()) / "datasets" / self.filename

    def fetch(self, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
        """The local path of the file, downloading it first if it is not in the cache."""
        target = self.cached_path(cache_dir)
        if target.is_file():
            self._check_cached(target)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("Downloading %s to %s.", self.url, target)
        hint = self._manual_hint(target)
        digest = hashlib.sha256()
        received = 0
        expected: int | None = None

        def stream(handle) -> None:
            nonlocal received, expected
            response = self._open(hint)
            with response, tqdm(desc=self.filename, unit="B", unit_scale=True, disable=not progress) as bar:
                length = response.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                bar.total = expected
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            self._check_download(handle, received, expected, digest.hexdigest(), hint)

        try:
            atomic_write(target, stream)
        except (OSError, http.client.HTTPException) as error:
            raise InputDataError(
                f"The download of {self.url} broke off after {received:,} of {expected or '?'} bytes "
                f"({type(error).__name__}: {error}). Nothing was kept; run again to retry. {hint}"
            ) from None
        atomic_write(_hash_file(target), lambda f: f.write(digest.hexdigest().encode()))
        log.info("Saved %s (%s bytes, sha256 %s).", target, f"{received:,}", digest.hexdigest()[:16])
        return target

    def _open(self, hint: str):
        try:
            return urllib.request.urlopen(self.url, timeout=TIMEOUT_SEC)  # noqa: S310 (http/https/file only)
        except urllib.error.HTTPError as error:
            raise InputDataError(
                f"The server refused {self.url} (HTTP {error.code} {error.reason}). {hint}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise InputDataError(
                f"Could not download {self.url} ({reason}); this machine may be offline. {hint}"
            ) from None

    def _check_download(self, handle, received: int, expected: int | None, sha256: str, hint: str) -> None:
        handle.flush()
        if expected is not None and received != expected:
            raise InputDataError(
                f"The download of {self.url} stopped after {received:,} of {expected:,} bytes. Nothing was kept; "
                "run again to retry."
            )
        if self.sha256 and sha256 != self.sha256:
            raise InputDataError(
                f"The file from {self.url} has SHA-256 {sha256}, not the expected {self.sha256}; it was not kept. "
                "The server may have changed the file or sent an error page."
            )
        if not h5py.is_hdf5(handle.name):
            raise InputDataError(
                f"{self.url} did not return an HDF5 (.h5ad) file ({received:,} bytes; perhaps an error page). "
                f"Nothing was kept. {hint}"
            )

    def _check_cached(self, path: Path) -> None:
        """A file in the cache must still be HDF5 and have the hash recorded when it arrived."""
        if not h5py.is_hdf5(path):
            raise InputDataError(f"{path} is not an HDF5 file (damaged or replaced). Delete it and run again.")
        recorded = _hash_file(path)
        actual = _sha256_of(path)
        wanted = self.sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
        if wanted is None:  # placed by hand: remember its hash from now on
            log.info("Using %s, placed by hand (sha256 %s).", path, actual[:16])
            atomic_write(recorded, lambda f: f.write(actual.encode()))
        elif actual != wanted:
            raise InputDataError(
                f"{path} has changed since it was downloaded (SHA-256 {actual[:16]}..., expected {wanted[:16]}...): "
                "it is probably damaged. Delete it (and its .sha256 file) and run again to download it anew."
            )

    def _manual_hint(self, target: Path) -> str:
        return (
            f"To install it by hand, download {self.url} on a machine with internet access and copy it to "
            f"{target} (or set SCADAPT_CACHE to a folder holding datasets/{self.filename})."
        )


def _hash_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

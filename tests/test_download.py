"""Downloads into the cache: complete or nothing, checked, and clear when offline.

The network cases use a real HTTP server on 127.0.0.1 and real files, not mocks.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest
from test_data import PANCREAS_FILE

from scadapt.data.download import DownloadedFile
from scadapt.infra.errors import InputDataError


def _leftovers(cache: Path) -> list[str]:
    folder = cache / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def server():
    """Serves ``routes[path] = (status, body, declared_length)`` on 127.0.0.1; a declared length
    larger than the body imitates a connection that breaks off."""
    routes: dict[str, tuple[int, bytes, int]] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            status, body, length = routes.get(self.path, (404, b"not found", 9))
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()
    httpd.server_close()


def test_download_over_http_is_checked_and_recorded(tmp_path, server):
    url, routes = server
    body = PANCREAS_FILE.read_bytes()
    routes["/pancreas"] = (200, body, len(body))
    path = DownloadedFile(url + "/pancreas", "pancreas.h5ad").fetch(progress=False)
    assert path == tmp_path / "cache" / "datasets" / "pancreas.h5ad" and path.read_bytes() == body
    assert (path.parent / "pancreas.h5ad.sha256").read_text() == hashlib.sha256(body).hexdigest()
    assert _leftovers(tmp_path / "cache") == ["pancreas.h5ad", "pancreas.h5ad.sha256"]


def test_cached_file_is_reused_without_the_network(tmp_path):
    source = tmp_path / "source.h5ad"
    shutil.copy(PANCREAS_FILE, source)
    remote = DownloadedFile(source.as_uri(), "pancreas.h5ad")
    first = remote.fetch(progress=False)
    source.unlink()  # a second fetch must not need the source any more
    assert remote.fetch(progress=False) == first


def test_interrupted_download_leaves_nothing(tmp_path, server):
    url, routes = server
    body = PANCREAS_FILE.read_bytes()
    routes["/cut"] = (200, body[:100_000], len(body))
    with pytest.raises(InputDataError, match=r"(broke off|stopped) after .*Nothing was kept; run again"):
        DownloadedFile(url + "/cut", "pancreas.h5ad").fetch(progress=False)
    assert _leftovers(tmp_path / "cache") == []


def test_error_page_is_not_kept(tmp_path, server):
    url, routes = server
    routes["/page"] = (200, b"<html>quota exceeded</html>", 27)
    with pytest.raises(InputDataError, match="did not return an HDF5.*perhaps an error page"):
        DownloadedFile(url + "/page", "pancreas.h5ad").fetch(progress=False)
    with pytest.raises(InputDataError, match="server refused .* \\(HTTP 404"):
        DownloadedFile(url + "/missing", "pancreas.h5ad").fetch(progress=False)
    assert _leftovers(tmp_path / "cache") == []


def test_wrong_checksum_is_not_kept(tmp_path):
    remote = DownloadedFile(PANCREAS_FILE.as_uri(), "pancreas.h5ad", sha256="0" * 64)
    with pytest.raises(InputDataError, match="not the expected 0000"):
        remote.fetch(progress=False)
    assert _leftovers(tmp_path / "cache") == []


def test_offline_message_says_where_to_put_the_file(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = DownloadedFile(f"http://127.0.0.1:{port}/pancreas", "pancreas.h5ad")
    target = tmp_path / "cache" / "datasets" / "pancreas.h5ad"
    with pytest.raises(InputDataError, match=f"may be offline.*copy it to {target}"):
        remote.fetch(progress=False)
    assert _leftovers(tmp_path / "cache") == []


def test_file_placed_by_hand_is_used_and_then_guarded(tmp_path):
    target = tmp_path / "cache" / "datasets" / "pancreas.h5ad"
    target.parent.mkdir(parents=True)
    shutil.copy(PANCREAS_FILE, target)
    remote = DownloadedFile("https://example.invalid/never-used", "pancreas.h5ad")
    assert remote.fetch(progress=False) == target
    assert (target.parent / "pancreas.h5ad.sha256").is_file()
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # damage one byte in the cache
    target.write_bytes(bytes(blob))
    with pytest.raises(InputDataError, match="has changed since it was downloaded.*Delete it"):
        remote.fetch(progress=False)

"""Running ``mlflow models serve`` for a model URI, bound to 127.0.0.1, until the block ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from scadapt.errors import ScadaptError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(model_uri: str, port: int | None = None, workers: int = 1, start_timeout: float = 300,
            request_timeout: int = 60) -> Iterator[str]:
    """Serve ``model_uri`` with MLflow's scoring server in this Python environment; yield its URL.

    ``request_timeout`` (seconds; MLflow's default is 60) bounds one request: at whole-human
    shapes on CPU, 1000 cells take longer and the server answers 504 with the default.
    """
    port = port or free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
         "--host", "127.0.0.1", "-p", str(port), "-w", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(request_timeout)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise ScadaptError(f"The scoring server for {model_uri} did not start (exit code {server.poll()}).")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)

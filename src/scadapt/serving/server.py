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
    shapes on CPU, 1000 cells take longer and the server answers 504 with the default. Without
    ``port`` a free one is chosen; if another process takes it before the server binds it (the
    server exits at once), another port is tried.
    """
    deadline = time.monotonic() + start_timeout
    attempts = 1 if port else 3
    for attempt in range(attempts):
        chosen = port or free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
             "--host", "127.0.0.1", "-p", str(chosen), "-w", str(workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # MLflow starts `uvicorn` by name: this environment's scripts first, activated or not
            env={**os.environ, "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(request_timeout),
                 "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])},
        )
        url = f"http://127.0.0.1:{chosen}"
        if _ready(server, url, deadline):
            break
        if attempt == attempts - 1 or time.monotonic() > deadline:
            _stop(server)
            raise ScadaptError(f"The scoring server for {model_uri} did not start (exit code {server.poll()}).")
    try:
        yield url
    finally:
        _stop(server)


def _ready(server: subprocess.Popen, url: str, deadline: float) -> bool:
    """True once the server answers ``/ping``; False if it exited or the deadline passed."""
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return True
        except requests.RequestException:  # not listening yet, or something else holds the port
            pass
        if server.poll() is not None:
            return False
        time.sleep(0.5)
    return False


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=60)

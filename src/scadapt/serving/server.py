"""Running ``mlflow models serve`` for a model URI, bound to 127.0.0.1, until the block ends, and
the command a user runs to do the same."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from scadapt.infra.errors import ScadaptError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVE_NOTE = ("uv builds the model's own environment from its requirements on first use; in this training "
              "environment, --env-manager local serves at once")


def serve_command(model_uri: str, port: int = 5001) -> str:
    """The command that serves ``model_uri`` in the environment the model carries (see :data:`SERVE_NOTE`)."""
    return f"mlflow models serve -m {model_uri} --env-manager uv -p {port}"


def uv_find_links() -> dict[str, str]:
    """``UV_FIND_LINKS`` set to the folders of local wheels pip is configured with (``PIP_FIND_LINKS``
    or ``find-links`` in pip's configuration), unless it is set already: uv reads no pip
    configuration, so without it uv would fetch another build of torch than pip picks on this host."""
    if "UV_FIND_LINKS" in os.environ:
        return {}
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    if not links:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
        links = [link for value in re.findall(r"^\S*find-links='([^']*)'$", listed, re.M) for link in value.split()]
    return {"UV_FIND_LINKS": ",".join(dict.fromkeys(links))} if links else {}


@contextmanager
def serving(model_uri: str, port: int | None = None, workers: int = 1, start_timeout: float = 300,
            request_timeout: int = 60, env_manager: str = "local", env: dict[str, str] | None = None) -> Iterator[str]:
    """Serve ``model_uri`` with MLflow's scoring server; yield its URL.

    ``env_manager`` ``local`` serves from this Python environment; ``virtualenv`` or ``uv`` from
    the environment the model carries (built by ``mlflow models prepare-env`` beforehand, or here
    within ``start_timeout``; uv is given pip's local wheels, see :func:`uv_find_links`). ``env``
    adds variables to the server's environment.

    ``request_timeout`` (seconds; MLflow's default is 60) bounds one request: at whole-human
    shapes on CPU, 1000 cells take longer and the server answers 504 with the default. Without
    ``port`` a free one is chosen; if another process takes it before the server binds it (the
    server exits at once), another port is tried.
    """
    deadline = time.monotonic() + start_timeout
    env = {**(uv_find_links() if env_manager == "uv" else {}), **(env or {})}
    attempts = 1 if port else 3
    for attempt in range(attempts):
        chosen = port or free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", env_manager,
             "--host", "127.0.0.1", "-p", str(chosen), "-w", str(workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # MLflow starts `uvicorn` by name: this environment's scripts first, activated or not
            env={**os.environ, **env, "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(request_timeout),
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

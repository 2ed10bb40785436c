"""Real servers for the scale-out tests: a throwaway PostgreSQL 15 cluster and an ``mlflow server``
on top of it, both on 127.0.0.1 with free ports, stopped and deleted at the end.

PostgreSQL refuses to run as root, so as root the cluster belongs to the unprivileged
``postgres`` user of Debian's package (its files live in a temp dir that user owns).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from scadapt.serving.server import free_port


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_cluster_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A new cluster; yields ``postgresql://scadapt@127.0.0.1:PORT`` (trust auth, no password).
    Create databases with :func:`create_database`."""
    with postgres_server() as (url, _):
        yield url


@contextmanager
def postgres_server(password: str | None = None) -> Iterator[tuple[str, Path]]:
    """A new cluster; yields its URL and its server log. With ``password``, TCP logins need it
    (scram-sha-256) and the URL holds it percent-encoded."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="scadapt-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    os.chmod(root, 0o700)
    data, port, log = root / "data", free_port(), root / "server.log"
    auth = ["--auth=trust"]
    if password is not None:
        (root / "pw").write_text(password + "\n")
        if os.geteuid() == 0:
            os.chown(root / "pw", owner.pw_uid, owner.pw_gid)
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={root / 'pw'}"]
    try:
        subprocess.run(_as_cluster_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", "scadapt", *auth,
                                          "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
        subprocess.run(_as_cluster_owner([
            str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
            "-o", f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200 -c fsync=off"]),
            check=True, capture_output=True)
        user = "scadapt" if password is None else f"scadapt:{quote(password, safe='')}"
        yield f"postgresql://{user}@127.0.0.1:{port}", log
    finally:
        subprocess.run(_as_cluster_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    """A new database on ``server``; returns its URL."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{server}/{name}"


@contextmanager
def mlflow_server(backend_store: str, artifacts: Path, workers: int = 1) -> Iterator[str]:
    """``mlflow server`` with ``backend_store`` and proxied artifacts under ``artifacts``;
    yields its URL once it answers."""
    port = free_port()
    log = open(artifacts.parent / f"mlflow-server-{port}.log", "w")
    mlflow = str(Path(sys.executable).parent / "mlflow")
    process = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", backend_store, "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, artifacts.parent / f"mlflow-server-{port}.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()


def wait_until_up(url: str, process: subprocess.Popen, log: Path | None = None, timeout: float = 180.0) -> None:
    """Return once the MLflow server at ``url`` answers ``/health``; raise if it exits or never does."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({process.returncode}):\n{log.read_text()[-3000:] if log else ''}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:] if log else ''}")

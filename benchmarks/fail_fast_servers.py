"""How soon a server that is down, refuses the login or never answers is reported, and how many
logins it costs: scadapt's checks against the libraries' own defaults, measured in the same run.

Each case runs `scadapt tune` in a fresh process, against a tracking store that exists already,
and times it to its error message; the reference does the same operation with MLflow's or psycopg's
defaults (what scadapt's messages used to wait for; a bare psycopg connect tries a wrong password
once, as scadapt now does, where scadapt used to retry it eight times), capped at ``--cap`` seconds. A throwaway PostgreSQL cluster that wants a password is
started for the login cases (its log counts the failed logins).

    python benchmarks/fail_fast_servers.py [--cap 400]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from results_table import print_table  # noqa: E402
from servers import postgres_server  # noqa: E402

from scadapt.serving.server import free_port  # noqa: E402

PASSWORD = "right-pw"
REFERENCE = {  # the same operation with the library's own defaults
    "mlflow": "import mlflow\nmlflow.MlflowClient().search_experiments(max_results=1)\n",
    "psycopg": "import sys, psycopg\npsycopg.connect(sys.argv[1])\n",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=400.0, help="seconds after which a reference is stopped")
    args = parser.parse_args()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts and never answers, like a host behind a firewall that drops packets
    with postgres_server(PASSWORD) as (url, log), tempfile.TemporaryDirectory() as tmp:
        host = url.rsplit("@", 1)[1]
        wrong = f"postgresql://scadapt:wrong-pw@{host}/postgres"
        cases = [
            ("tracking server down", {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}, "sqlite:///o.db",
             "mlflow", []),
            ("tracking store: wrong PostgreSQL password", {"MLFLOW_TRACKING_URI": wrong}, "sqlite:///o.db", "mlflow",
             []),
            ("study storage: wrong PostgreSQL password", {}, wrong, "psycopg", [wrong]),
            ("study storage: server never answers", {}, f"postgresql://scadapt@127.0.0.1:{silent.getsockname()[1]}/x",
             "psycopg", [f"postgresql://scadapt@127.0.0.1:{silent.getsockname()[1]}/x"]),
        ]
        runs = []
        for number, (name, env, storage, reference, ref_args) in enumerate(cases):
            folder = Path(tmp) / f"case{number}"
            folder.mkdir()
            base = {**os.environ, "SCADAPT_CACHE": str(folder / "cache"), "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/m.db"}
            # a tracking store that exists already (creating one takes seconds that are not the failure's)
            subprocess.run([sys.executable, "-c", REFERENCE["mlflow"]], env=base, cwd=folder, check=True,
                           capture_output=True)
            runs.append((name, {**base, **env}, folder, storage, reference, ref_args))
        ours = []  # scadapt's cases first, while the machine is otherwise idle
        for _name, env, folder, storage, *_ in runs:
            before = _failed_logins(log)
            seconds = _timed([sys.executable, "-m", "scadapt.cli", "tune", "--data", "pancreas_small", "--strategy",
                              "logreg", "--storage", storage], env, folder, args.cap)
            ours.append((seconds, _failed_logins(log) - before))
        rows = []
        for (name, env, folder, _, reference, ref_args), (seconds, logins) in zip(runs, ours, strict=True):
            before = _failed_logins(log)
            theirs = _timed([sys.executable, "-c", REFERENCE[reference], *ref_args], env, folder, args.cap)
            rows.append((name, _seconds(seconds, args.cap), logins, _seconds(theirs, args.cap),
                         _failed_logins(log) - before, _ratio(theirs, seconds, args.cap)))
    silent.close()
    print_table(["case", "scadapt s", "failed logins", f"{'/'.join(REFERENCE)} defaults s", "failed logins",
                 "ratio"], rows)


def _timed(command: list[str], env: dict[str, str], cwd: Path, cap: float) -> float:
    started = time.perf_counter()
    try:
        subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return cap
    return time.perf_counter() - started


def _ratio(theirs: float, ours: float, cap: float) -> str:
    if theirs >= cap:
        return f"> {cap / ours:.0f}x"
    return f"{theirs / ours:.0f}x" if theirs > ours else "same speed (one try each)"


def _seconds(value: float, cap: float) -> str:
    return f"> {cap:.0f} (stopped)" if value >= cap else f"{value:.1f}"


def _failed_logins(log: Path) -> int:
    return log.read_text().count("password authentication failed")


if __name__ == "__main__":
    main()

"""Screenshots of the MLflow UI on a finished pipeline's store, for the README.

Starts ``mlflow ui`` on the store (127.0.0.1, a free port) and drives headless Chromium (Debian
package ``chromium``) over the DevTools protocol on a pipe (no extra Python package), writing:

- ``runs.png``: the dataset's experiment, its runs table (a study per strategy, trials inside);
- ``charts.png``: the same runs as metric charts, comparing the strategies;
- ``champion.png``: the registered model of the dataset with its ``@champion`` alias.

The UI is put in its model-training mode and its assistant panel closed first (both are UI
settings kept in the browser), so the pictures show the runs.

    python docs/ui_screenshots.py --store sqlite:///mlflow.db --dataset pbmc68k_reduced --output docs/ui
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from scadapt.tracking.contract import CANDIDATE_TAG

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import wait_until_up  # noqa: E402  (tests/servers.py)

WIDTH, HEIGHT = 1700, 1000
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-pipe", f"--window-size={WIDTH},{HEIGHT}"]
# browser-side UI settings of MLflow 3.17 (localStorage, "<key>_v<version>" -> JSON): the model-training
# view, and no assistant panel over the page
UI_SETTINGS = {"mlflow.workflowType_v1": "machine_learning", "mlflow.assistant.panelOpen_v1": False,
               "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True}


class DevTools:
    """The Chrome DevTools protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out, NUL-framed JSON)."""

    def __init__(self, chromium: str, profile: str):
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def wire() -> None:  # in the child: our pipes become its fds 3 and 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        pass_fds=(3, 4, to_browser, from_browser), preexec_fn=wire,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # skip events until our answer
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str, settle: float) -> None:
        """Load ``url`` afresh (a hash change alone would keep the page's state) and let it render."""
        self.call("Page.navigate", session=True, url="about:blank")
        self.call("Page.navigate", session=True, url=url)
        loaded = "location.protocol.startsWith('http') && document.readyState === 'complete'"
        deadline = time.monotonic() + 60
        while not self.evaluate(loaded) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(settle)  # the UI fetches and renders after the load event

    def evaluate(self, expression: str) -> object:
        reply = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return reply.get("result", {}).get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite:///mlflow.db", help="tracking URI of a finished pipeline")
    parser.add_argument("--dataset", default="pbmc68k_reduced")
    parser.add_argument("--output", default=str(Path(__file__).parent / "ui"))
    parser.add_argument("--settle", type=float, default=8.0, help="seconds each page gets to render")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or sys.exit("Install Debian's chromium first: apt-get install chromium")
    os.environ["MLFLOW_TRACKING_URI"] = args.store
    import mlflow

    from scadapt.serving.server import free_port

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(f"scadapt-{args.dataset}") or sys.exit(
        f"No experiment scadapt-{args.dataset} in {args.store}: run the pipeline first.")
    model = f"scadapt-{args.dataset}"
    client.get_model_version_by_alias(model, "champion")  # fails clearly if nothing was promoted
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.store,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_until_up(base, server)
        except RuntimeError as error:
            sys.exit(f"mlflow ui did not start at {base}: {error}")
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        # the candidates (each strategy's result) side by side: nested under the pipeline's run, the
        # runs table would show that run alone
        candidates = quote(f"tags.`{CANDIDATE_TAG}` = 'true'")
        runs = f"{base}/#/experiments/{experiment.experiment_id}/runs?searchFilter={candidates}"
        pages = {"runs": runs, "charts": f"{runs}&compareRunsMode=CHART", "champion": f"{base}/#/models/{model}"}
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
            browser = DevTools(chromium, profile)
            try:
                browser.open(f"{base}/", settle=1)
                browser.evaluate("".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))});"
                                         for k, v in UI_SETTINGS.items()))
                for name, url in pages.items():
                    browser.open(url, args.settle)
                    browser.screenshot(output / f"{name}.png")
                    print(f"{output / f'{name}.png'}  <- {url}")
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

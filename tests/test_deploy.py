"""The registered champion deploys without this repository: it carries its code, weights and an
environment of public packages, and serves from an environment built from the model alone.

The fast tests read the logged model and the Dockerfile MLflow generates for it. The ``deploy``
tests (``python -m pytest -m deploy``; minutes, they reach the package index) build the model's
environment with MLflow's own environment managers where scadapt is not installed, serve the
champion from it and check every pin the Dockerfile installs exists on the public index.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from conftest import REPO

from scadapt.jobs.config import TrainJob
from scadapt.jobs.train import train
from scadapt.registry import promote
from scadapt.registry.policy import DEFAULT_POLICY
from scadapt.serving.package import served_requirements
from scadapt.serving.server import serving, uv_find_links

CHAMPION = "models:/scadapt-pancreas_small@champion"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[a-z0-9,_-]+\])?==(?P<version>[0-9][0-9a-z.]*)$")
QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@pytest.fixture
def champion(tiny_checkpoint, tmp_path, monkeypatch):
    """A promoted LoRA champion on the tiny backbone: code, annotator, backbone and peft all served."""
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    policy = tmp_path / "policy.yaml"
    policy.write_text(DEFAULT_POLICY.read_text().replace("val_macro_f1: 0.2", "val_macro_f1: 0.0")
                      .replace("test_macro_f1: 0.2", "test_macro_f1: 0.0"))
    train(TrainJob(data="pancreas_small", strategy="lora", checkpoint=str(tiny_checkpoint), hparams={"epochs": 1},
                   max_seq_len=64, min_genes=50, progress=False, umap=False))
    promote("pancreas_small", policy)
    return CHAMPION


def _model_dir(uri: str, destination: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination)))


def _repository_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if (match := PIN.match(line.strip())) is not None:
            pins[match["name"].lower()] = line.strip()
    return pins


def _cells(pancreas, n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(pancreas.X[:n].toarray(), columns=pancreas.var_names.astype(str))


def test_served_model_carries_its_code_and_public_pins_that_agree(champion, tmp_path):
    model = _model_dir(champion, tmp_path / "model")
    requirements = (model / "requirements.txt").read_text().split()
    assert requirements == served_requirements()
    repository = _repository_pins()
    for requirement in requirements:  # public releases only, each the repository's own pin
        match = PIN.match(requirement)
        assert match is not None and "+" not in requirement, requirement
        assert repository.get(match["name"].lower()) == requirement
    assert not any(r.lower().startswith("scadapt") for r in requirements)  # the code travels with the model
    assert {"torch", "mlflow", "peft", "safetensors"} <= {PIN.match(r)["name"] for r in requirements}

    python_env = yaml.safe_load((model / "python_env.yaml").read_text())
    conda = yaml.safe_load((model / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert python_env["dependencies"] == ["-r requirements.txt"] and pip_section == requirements
    assert f"python={python_env['python']}" in conda["dependencies"]
    assert all("+" not in d for d in python_env["build_dependencies"])
    flavor = yaml.safe_load((model / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["python_version"] == python_env["python"] and flavor["code"] == "code"

    code = model / "code" / "scadapt"
    for module in ("serving/model.py", "models/annotator.py", "strategies/lora.py", "backbone/model.py"):
        assert (code / module).is_file(), module
    assert not list(code.rglob("*.pyc")) and not list(code.rglob("*.h5ad"))
    assert {p.name for p in (model / "artifacts").iterdir()} == {"annotator", "serving", "tiny_ckpt"}
    assert {"args.json", "vocab.json", "best_model.pt"} <= {p.name for p in (model / "artifacts/tiny_ckpt").iterdir()}


def test_generated_dockerfile_installs_only_the_models_pins(champion, tmp_path):
    build = tmp_path / "docker"
    subprocess.run([sys.executable, "-m", "mlflow", "models", "generate-dockerfile", "-m", champion, "-d", str(build)],
                   check=True, capture_output=True, env={**os.environ, **QUIET})
    steps = _install_steps(build)
    python = yaml.safe_load((build / "model_dir" / "python_env.yaml").read_text())["python"]
    assert steps["base"] == f"python:{python}-slim"
    assert steps["pip"] == [f"mlflow=={mlflow.__version__}"]  # the one package the Dockerfile names itself
    assert steps["model_dir"] == "/opt/ml/model"  # the rest: the model's own environment files
    assert (build / "model_dir" / "code" / "scadapt" / "serving" / "model.py").is_file()
    assert (build / "model_dir" / "requirements.txt").read_text().split() == served_requirements()


def _install_steps(build: Path) -> dict:
    """What the Dockerfile installs: base image, packages named on ``pip install`` lines, and the
    model folder whose environment files ``_install_pyfunc_deps`` installs."""
    text = (build / "Dockerfile").read_text()
    pip = [arg for line in re.findall(r"^RUN pip install (.+)$", text, re.M) for arg in line.split()]
    deps = re.search(r"_install_pyfunc_deps\('([^']+)'", text)
    return {"base": re.search(r"^FROM (\S+)", text, re.M)[1], "pip": pip, "model_dir": deps and deps[1]}


# -- deploy: the model's environment built from the package index --------------------------------------
def _available(manager: str) -> bool:
    return shutil.which("uv" if manager == "uv" else "pyenv") is not None


@pytest.mark.deploy
@pytest.mark.parametrize("manager", ["uv", "virtualenv"])
def test_champion_serves_from_an_environment_built_from_the_model_alone(champion, manager, pancreas, tmp_path):
    if not _available(manager):
        pytest.skip(f"{manager} needs {'uv' if manager == 'uv' else 'pyenv'} on PATH")
    env = {**QUIET, **(uv_find_links() if manager == "uv" else {}), "MLFLOW_ENV_ROOT": str(tmp_path / "envs"),
           "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    prepared = subprocess.run([sys.executable, "-m", "mlflow", "models", "prepare-env", "-m", champion,
                               "--env-manager", manager], capture_output=True, text=True, env={**os.environ, **env})
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    (environment,) = (tmp_path / "envs").glob("mlflow-*")
    python = environment / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import scadapt"], capture_output=True).returncode != 0
    assert subprocess.run([str(python), "-c", "import torch, mlflow, peft"], capture_output=True).returncode == 0

    cells = _cells(pancreas)
    expected = mlflow.pyfunc.load_model(champion).predict(cells)
    with serving(champion, env_manager=manager, env=env, start_timeout=600) as url:
        assert requests.get(f"{url}/ping", timeout=10).status_code == 200
        answer = requests.post(f"{url}/invocations", json={"dataframe_split": cells.to_dict(orient="split")},
                               timeout=120)
        assert answer.status_code == 200, answer.text
        served = pd.DataFrame(answer.json()["predictions"])
        assert served["label"].tolist() == expected["label"].tolist()
        np.testing.assert_allclose(served["confidence"], expected["confidence"], rtol=1e-5, atol=1e-7)
        bad = requests.post(f"{url}/invocations", json={"dataframe_split": cells.iloc[:, :50].to_dict(orient="split")},
                            timeout=60)
        assert bad.status_code == 400 and "genes this model reads" in bad.json()["message"]


@pytest.mark.deploy
def test_every_pin_the_dockerfile_installs_is_on_the_public_index(champion, tmp_path):
    build = tmp_path / "docker"
    subprocess.run([sys.executable, "-m", "mlflow", "models", "generate-dockerfile", "-m", champion, "-d", str(build)],
                   check=True, capture_output=True, env={**os.environ, **QUIET})
    steps = _install_steps(build)
    python_env = yaml.safe_load((build / "model_dir" / "python_env.yaml").read_text())
    pins = steps["pip"] + python_env["build_dependencies"] + (build / "model_dir" / "requirements.txt").read_text().split()
    pinned = [p for p in pins if "==" in p]
    assert len(pinned) >= len(pins) - 1  # at most an unpinned build tool (MLflow's "wheel")
    with ThreadPoolExecutor(4) as pool:
        missing = [pin for pin, found in zip(pinned, pool.map(_on_public_index, pinned), strict=True) if not found]
    assert not missing, f"not on the public package index: {missing}"


def _on_public_index(pin: str) -> bool:
    """Whether the release ``name==version`` is on the default public index (pip without this
    host's configuration: no local wheels or mirrors)."""
    match = PIN.match(pin)
    listed = subprocess.run([sys.executable, "-m", "pip", "--isolated", "index", "versions", match["name"]],
                            capture_output=True, text=True, timeout=300).stdout
    versions = re.search(r"Available versions: (.*)", listed)
    return versions is not None and match["version"] in {v.strip() for v in versions[1].split(",")}


def test_uv_is_given_the_local_wheels_pip_is_configured_with(monkeypatch):
    monkeypatch.delenv("UV_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_FIND_LINKS", "/wheels/a /wheels/b /wheels/a")
    assert uv_find_links() == {"UV_FIND_LINKS": "/wheels/a,/wheels/b"}
    monkeypatch.setenv("UV_FIND_LINKS", "/mine")  # the host's own uv setting wins
    assert uv_find_links() == {}

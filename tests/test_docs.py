"""The documentation's code runs as written: every code block of README.md and docs/ is run here,
or says on the line before it why it cannot run on this machine (``<!-- not runnable: why -->``).

The runnable blocks run in page order (README.md, then docs/ by name), each in one fresh folder
holding the user's files the pages name (``cells.h5ad``: raw counts in ``layers["counts"]``, gene
symbols in ``var["feature_name"]``, ``obs["cell_type"]`` and ``obs["assay"]``; ``new_cells.h5ad``:
counts with symbols as ``var_names``), made from the bundled pancreas cells. So that they take
minutes, not hours, the test gives the main job one trial of the strategies without a backbone
(options added after the block's own, which they override) and lora a tiny demo backbone; the
commands and calls are otherwise those printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anndata
import mlflow
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import REPO

BLOCK = re.compile(r"(?ms)^(?:<!-- not runnable: (?P<why>[^\n]*?) -->\n)?```(?P<lang>\w*)[^\n]*\n(?P<code>.*?)^```")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FAST_PIPELINE = " --n-trials 1 --strategies pca_logreg,logreg"  # after the block's own options: these win
FAST_NOTEBOOK = {"n_trials=5": 'n_trials=1, strategies="pca_logreg,logreg"', "n_trials=10": "n_trials=1"}


def blocks() -> list[tuple[Path, str, str, str | None]]:
    return [(page, m["lang"], m["code"], m["why"]) for page in PAGES for m in BLOCK.finditer(page.read_text())]


def test_every_code_block_runs_or_says_why_it_cannot():
    found = blocks()
    assert len(found) == sum(page.read_text().count("\n```") for page in PAGES) // 2  # every fence is a block
    for page, lang, code, why in found:
        assert why or lang in ("bash", "python"), (page.name, code[:80])
    runnable = [(page.name, lang) for page, lang, _, why in found if not why]
    assert ("tutorial.md", "python") in runnable and ("README.md", "bash") in runnable


@pytest.mark.integration
def test_the_documentation_code_runs_as_written(tmp_path, pancreas):
    _user_files(tmp_path, pancreas)
    _tiny_demo_backbone(pancreas)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TQDM_DISABLE": "1"}
    ran = 0
    for page, lang, code, why in blocks():
        if why:
            continue
        if lang == "bash":
            lines = [line for line in code.splitlines() if line.strip() and not line.startswith("#")]
            command = "\n".join(line + FAST_PIPELINE if line.startswith("scadapt pipeline") else line for line in lines)
            argv = ["bash", "-euo", "pipefail", "-c", command]
        else:
            for slow, fast in FAST_NOTEBOOK.items():
                code = code.replace(slow, fast)
            argv = [sys.executable, "-c", code]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{page.name}:\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        ran += 1
    assert ran >= 8
    assert (tmp_path / "new_cells_annotated.h5ad").is_file() and (tmp_path / "splits" / "splits.csv").is_file()
    # the tutorial's request body (the champion's input example) is one the served model answers
    example = Path(mlflow.artifacts.download_artifacts("models:/scadapt-cells@champion/serving_input_example.json",
                                                       dst_path=str(tmp_path / "example")))
    table = json.loads(example.read_text())["dataframe_split"]
    answer = mlflow.pyfunc.load_model("models:/scadapt-cells@champion").predict(
        pd.DataFrame(table["data"], columns=table["columns"]))
    assert len(answer) == len(table["data"]) and answer["label"].notna().all()


def _user_files(folder: Path, pancreas: anndata.AnnData) -> None:
    counts = sp.csr_matrix(np.round(pancreas.X.toarray() if sp.issparse(pancreas.X) else pancreas.X))
    logged = counts.copy()
    logged.data = np.log1p(logged.data)  # what a user's X often holds beside the counts
    cells = anndata.AnnData(logged, obs=pd.DataFrame({"cell_type": pancreas.obs["celltype"].astype(str).to_numpy(),
                                                      "assay": pancreas.obs["tech"].astype(str).to_numpy()},
                                                     index=pancreas.obs_names),
                            var=pd.DataFrame({"feature_name": pancreas.var_names.astype(str)},
                                             index=[f"ENSG{i:011d}" for i in range(pancreas.n_vars)]))
    cells.layers["counts"] = counts
    cells.write_h5ad(folder / "cells.h5ad")
    new = anndata.AnnData(counts[:120], obs=pd.DataFrame(index=pancreas.obs_names[:120]),
                          var=pd.DataFrame(index=pancreas.var_names.astype(str)))
    new.write_h5ad(folder / "new_cells.h5ad")


def _tiny_demo_backbone(pancreas: anndata.AnnData) -> None:
    """The demo backbone ``scadapt.train(adata, "lora", ...)`` uses, tiny and random: the tutorial's
    own job pretrains it when its strategies include one with a backbone."""
    from conftest import random_backbone

    from scadapt.backbone import save_backbone
    from scadapt.infra.storage import demo_backbone_dir
    from scadapt.tokenization import GeneVocab

    vocab = GeneVocab.from_genes(pancreas.var_names)
    save_backbone(random_backbone(vocab), vocab, demo_backbone_dir())

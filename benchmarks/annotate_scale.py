"""Annotating atlas-sized files: cells per second and peak memory of ``scadapt predict``'s path
(``scadapt.annotation.annotate_h5ad``) as the file grows, against the limit measured in the same
run: reading the same file chunk by chunk plus scikit-learn's ``predict_proba`` alone.

Run:  python benchmarks/annotate_scale.py  [--sizes 10000 100000 1000000] [--wide 100000]
                                           [--backbone-sizes 10000 100000] [--keep DIR]

Files are the bundled pancreas cells (2,000 genes, counts) drawn with replacement, written as
sparse ``.h5ad`` chunk by chunk; the wide file adds 18,000 genes of the whole-human vocabulary with
sparse Poisson counts (20,000 genes). Champions: ``pca_logreg`` trained on the bundled cells
(expression) and ``frozen_probe`` on the demo backbone (pretrained on first use). Each
measurement runs in its own process; peak memory is that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from results_table import print_table  # benchmarks/results_table.py (scripts here run with their folder on sys.path)

HERE = Path(__file__).resolve().parent
WRITE_CHUNK = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--wide", type=int, nargs="*", default=[100_000], help="cells of the 20,000-gene files")
    parser.add_argument("--backbone-sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--keep", help="folder for the files and models (default: a temporary one)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "MODEL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        os.environ.setdefault("SCADAPT_CACHE", str(folder / "cache"))
        os.chdir(folder)  # a SQLite store's artifacts go under ./mlruns
        expression = champion(folder, "pca_logreg")
        backbone = champion(folder, "frozen_probe") if args.backbone_sizes else None
        rows = []
        plan = [(n, 2_000, "expression") for n in args.sizes] + [(n, 20_000, "expression") for n in args.wide] + \
               [(n, 2_000, "backbone") for n in args.backbone_sizes]
        for n_cells, n_genes, kind in plan:
            path = folder / f"cells_{n_cells}x{n_genes}.h5ad"
            if not path.is_file():
                write_cells(path, n_cells, n_genes)
            model = expression if kind == "expression" else backbone
            ours = measure("annotate", model, path)
            limit = measure("limit", expression, path) if kind == "expression" else None
            rows.append([kind, f"{n_cells:,}", f"{n_genes:,}", f"{path.stat().st_size / 2**20:.0f}",
                         f"{ours['startup']:.1f}", f"{ours['seconds']:.1f}", f"{n_cells / ours['seconds']:,.0f}",
                         f"{ours['seconds'] / n_cells * 1e6:.1f}", f"{ours['peak_mb']:.0f}",
                         f"{limit['seconds']:.1f}" if limit else "-", f"{limit['peak_mb']:.0f}" if limit else "-",
                         f"{ours['seconds'] / limit['seconds']:.2f}x" if limit else "-"])
            print(rows[-1], flush=True)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {date.today()}.")
    for kind in ("expression", "backbone"):
        print_linearity(kind, [(int(r[1].replace(",", "")), float(r[7])) for r in rows if r[0] == kind and r[2] == "2,000"])
    print_table(["champion", "cells", "genes", "file (MB)", "start-up (s)", "annotate (s)", "cells/s", "us per cell",
                 "peak RSS (MB)", "limit (s)", "limit peak RSS (MB)", "annotate vs limit"], rows)


def print_linearity(kind: str, per_cell: list[tuple[int, float]]) -> None:
    """Time linear in cells: the same time per added cell at every size. Start-up (imports) is
    left out of every row; what a call pays once (loading the model, creating the output) still
    weighs on the smallest file, so the cost per added cell between successive sizes is printed too."""
    if len(per_cell) < 2:
        return
    costs = [us for _, us in per_cell]
    print(f"{kind}: " + ", ".join(f"{us:.1f} us per cell at {n:,}" for n, us in per_cell) +
          f" (largest / smallest {max(costs) / min(costs):.2f}x)")
    added = [((n2 * us2 - n1 * us1) / (n2 - n1), n1, n2) for (n1, us1), (n2, us2) in zip(per_cell, per_cell[1:],
                                                                                          strict=False)]
    print(f"{kind}: " + ", ".join(f"{us:.1f} us per added cell from {n1:,} to {n2:,}" for us, n1, n2 in added) +
          (f" (largest / smallest {max(a[0] for a in added) / min(a[0] for a in added):.2f}x)" if len(added) > 1 else ""))


def champion(folder: Path, strategy: str) -> Path:
    """The annotator folder of ``strategy`` trained on the bundled pancreas cells (default settings)."""
    import scadapt
    from scadapt.jobs.demo_backbone import ensure_demo_backbone
    from scadapt.strategies import get_strategy

    target = folder / f"{strategy}_annotator"
    if not target.is_dir():
        if get_strategy(strategy).needs_backbone:
            ensure_demo_backbone()  # the demo backbone, pretrained on first use (minutes)
        scadapt.train("pancreas_small", strategy, progress=False, umap=False).annotator.save(target)
    return target


def write_cells(path: Path, n_cells: int, n_genes: int, seed: int = 0) -> None:
    """``n_cells`` bundled pancreas cells drawn with replacement (plus extra genes with sparse
    counts up to ``n_genes``), written as a CSR ``.h5ad`` one chunk at a time."""
    import h5py
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import write_elem

    from scadapt.data import load_expression
    from scadapt.tokenization import GeneVocab

    source = load_expression("pancreas_small")
    genes = list(source.var_names)
    if n_genes > len(genes):
        known = set(genes)
        vocab = GeneVocab.from_file(HERE.parent / "tests" / "data" / "scgpt_human" / "vocab.json")
        genes += [g for g in vocab.to_dict() if g not in known and not g.startswith("<")][: n_genes - len(genes)]
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(source.X)
    with h5py.File(path, "w") as out:
        out.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        group = out.create_group("X")
        group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, len(genes))})
        data = group.create_dataset("data", (0,), maxshape=(None,), dtype="float32", chunks=(1 << 18,))
        indices = group.create_dataset("indices", (0,), maxshape=(None,), dtype="int32", chunks=(1 << 18,))
        indptr = [np.zeros(1, dtype=np.int64)]
        for start in range(0, n_cells, WRITE_CHUNK):
            size = min(WRITE_CHUNK, n_cells - start)
            part = counts[rng.integers(0, counts.shape[0], size)]
            if len(genes) > counts.shape[1]:
                extra = sp.random(size, len(genes) - counts.shape[1], density=0.05, format="csr", random_state=rng,
                                  data_rvs=lambda k: rng.poisson(1.0, k) + 1.0)
                part = sp.hstack([part, extra], format="csr")
            offset = data.shape[0]
            data.resize((offset + part.nnz,))
            indices.resize((offset + part.nnz,))
            data[offset:] = part.data.astype(np.float32)
            indices[offset:] = part.indices.astype(np.int32)
            indptr.append(part.indptr[1:].astype(np.int64) + offset)
        group.create_dataset("indptr", data=np.concatenate(indptr))
        write_elem(out, "obs", pd.DataFrame(index=pd.Index([f"cell{i}" for i in range(n_cells)], dtype=str)))
        write_elem(out, "var", pd.DataFrame(index=pd.Index(genes, dtype=str)))
        for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(out, name, {})


def measure(kind: str, model: Path, path: Path) -> dict[str, float]:
    """Run one child process; its wall time and peak resident memory."""
    output = subprocess.run([sys.executable, __file__, "--child", kind, str(model), str(path)], check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def child(kind: str, model: str, path: str) -> None:
    """One measurement: the libraries imported first (start-up, paid once whatever the size), then
    the annotation or the limit, model loading included."""
    launched = time.perf_counter()
    import anndata  # noqa: F401
    import sklearn.decomposition  # noqa: F401
    import sklearn.linear_model  # noqa: F401

    from scadapt.annotation import annotate_h5ad

    started = time.perf_counter()
    if kind == "annotate":
        annotate_h5ad(model, path, Path(path).with_suffix(".annotated.h5ad"), progress=False)
        Path(path).with_suffix(".annotated.h5ad").unlink()
    else:
        limit(model, path)
    peak_mb = peak_resident_mb()
    print(json.dumps({"startup": started - launched, "seconds": time.perf_counter() - started, "peak_mb": peak_mb}))


def peak_resident_mb() -> float:
    """This process's peak resident memory (``VmHWM``: unlike ``ru_maxrss``, it does not carry the
    parent's peak over ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def limit(model: str, path: str) -> None:
    """The least any tool must do: read the file in chunks of the same size, log-normalise the
    model's genes, and scikit-learn's PCA transform and ``predict_proba``."""
    import anndata
    import numpy as np
    import pandas as pd
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    from scadapt.annotation.query import CHUNK_CELLS
    from scadapt.artifacts.annotators import read_annotator
    from scadapt.data.preprocess import log_normalized

    annotator = read_annotator(model)
    arrays = annotator.arrays
    pca = PCA(n_components=len(arrays["pca_components"]))
    pca.components_, pca.mean_ = arrays["pca_components"], arrays["pca_mean"]
    classifier = LogisticRegression()
    classifier.coef_ = arrays["coef"] / arrays["score_scale"]  # standardising folded into the weights
    classifier.intercept_ = arrays["intercept"] - classifier.coef_ @ arrays["score_mean"]
    classifier.classes_ = np.arange(len(annotator.classes))
    cells = anndata.read_h5ad(path, backed="r")
    columns = pd.Index(cells.var_names).get_indexer(annotator.genes)
    for start in range(0, cells.n_obs, CHUNK_CELLS):
        chunk = log_normalized(cells.X[start: start + CHUNK_CELLS])[:, columns]
        classifier.predict_proba(pca.transform(chunk.toarray()))
    cells.file.close()


if __name__ == "__main__":
    main()

"""The architecture as the imports show it: the layers contract in pyproject.toml holds, and no
import cycle exists between files or between packages (imports inside functions and type-only
imports included); the package keeps its size budget."""

from __future__ import annotations

import graphlib
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    """Each scadapt module -> the scadapt modules it imports (anywhere in the file)."""
    graph = grimp.build_graph("scadapt", exclude_type_checking_imports=False, cache_dir=None)
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


def test_the_layers_contract_holds():
    # in a process of its own: import-linter configures logging, which would silence later tests' loggers
    run = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    done = subprocess.run([sys.executable, "-c", run], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout[-4000:] + done.stderr[-2000:]


def _cycle(edges: dict[str, set[str]]) -> tuple[str, ...] | None:
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as error:
        return tuple(error.args[1])
    return None


def test_no_import_cycle_between_files(imports):
    assert _cycle(imports) is None, " -> ".join(_cycle(imports))


def test_no_import_cycle_between_packages(imports):
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for module, imported in imports.items():
        edges.setdefault(package(module), set()).update(package(m) for m in imported if package(m) != package(module))
    edges.pop("scadapt", None)  # the root package's lazy names are imported on first use only
    for targets in edges.values():
        targets.discard("scadapt")
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


SRC = ROOT / "src" / "scadapt"


def test_the_package_keeps_its_shape():
    """At most 20 entries at the top of the package, no file over 350 lines, no function over 50
    lines in the benchmark (issue 41's budget: the centre does not grow back)."""
    import ast

    assert len([p for p in SRC.iterdir() if p.name != "__pycache__"]) <= 20
    long_files = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 350}
    assert not long_files
    long_functions = [f"{p.name}:{node.name}" for p in (SRC / "benchmark").rglob("*.py")
                      for node in ast.walk(ast.parse(p.read_text()))
                      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 50]
    assert not long_functions


def test_a_strategy_is_looked_up_by_name_only_where_a_name_comes_in():
    """``get_strategy`` where a name comes from outside (the command, a job's option, the benchmark's
    list, a saved manifest): the object travels from there; no reach into Optuna's private state."""
    outside = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               if "get_strategy(" in p.read_text() and p.parent.name != "strategies"}
    assert len(outside) <= 3, outside
    private = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               for attribute in ("._storage", "._trial_id", "._trial.") if attribute in p.read_text()}
    assert not private, private

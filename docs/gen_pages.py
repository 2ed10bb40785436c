"""Pages written from the code when the site is built (mkdocs-gen-files runs this script).

Nothing here is committed as Markdown: the strategies, the command reference and the MLflow
contract come from the registry, the option declarations and ``tracking/contract.py`` of the
checkout being built, and the results page is ``benchmarks/RESULTS.md`` itself.
"""

import sys
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from reference import cli_reference, contract_reference, strategies_reference, unknown_options  # noqa: E402

PAGES = {
    "strategies.md": lambda: strategies_reference(ROOT / "tests" / "data" / "scgpt_human"),
    "reference/cli.md": cli_reference,
    "reference/mlflow.md": contract_reference,
    "results.md": lambda: (ROOT / "benchmarks" / "RESULTS.md").read_text(),
}

# a page, or the README, that still names an option no command declares fails the build
stale = {f"{path.relative_to(ROOT)}: {', '.join(sorted(names))}" for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
         if (names := unknown_options(path.read_text()))}
if stale:
    raise SystemExit("Options named in the documentation that no command declares:\n" + "\n".join(sorted(stale)))

for page, write in PAGES.items():
    with mkdocs_gen_files.open(page, "w") as out:
        out.write(write())
    mkdocs_gen_files.set_edit_path(page, Path("..") / "docs" / "gen_pages.py")

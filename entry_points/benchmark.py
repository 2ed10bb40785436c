"""MLflow entry point `benchmark`: arguments are those of `scadapt benchmark`."""

import sys

from scadapt.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))

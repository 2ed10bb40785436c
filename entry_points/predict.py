"""MLflow entry point `predict`: arguments are those of `scadapt predict`."""

import sys

from scadapt.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))

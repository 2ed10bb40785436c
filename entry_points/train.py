"""MLflow entry point `train`: arguments are those of `scadapt train`."""

import sys

from scadapt.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

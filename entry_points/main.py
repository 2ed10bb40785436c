"""MLflow entry point `main` (the default `mlflow run .`): arguments are those of `scadapt pipeline`."""

import sys

from scadapt.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))

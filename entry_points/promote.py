"""MLflow entry point `promote`: arguments are those of `scadapt promote`."""

import sys

from scadapt.cli import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]]))

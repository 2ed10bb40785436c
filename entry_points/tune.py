"""MLflow entry point `tune`: arguments are those of `scadapt tune`."""

import sys

from scadapt.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))

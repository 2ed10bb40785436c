"""MLflow entry point `pretrain`: arguments are those of `scadapt pretrain`."""

import sys

from scadapt.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))

"""The ``scadapt`` console command. Each subcommand parses arguments and calls library code.

Errors caused by input (:class:`~scadapt.errors.ScadaptError`) are printed as one readable
message with exit status 2, never as a stack trace.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from scadapt.errors import ScadaptError


def _optional(text: str) -> str | None:
    """MLflow passes every parameter as a string; an empty one means "not given"."""
    return text or None


def _integer(text: str) -> int:
    """An integer, also when MLflow renders it as a float ("10.0")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def _add_pretrain(subparsers) -> None:
    from scadapt.training.pretrain import PretrainConfig

    d = PretrainConfig()
    p = subparsers.add_parser("pretrain", help="masked-value pretraining of a backbone")
    p.add_argument("--data", default=",".join(d.data),
                   help="comma-separated bundled dataset names or .h5ad paths (default: %(default)s)")
    p.add_argument("--layer", type=_optional, default=None, help="AnnData layer with counts or log-normalised values (default: X)")
    p.add_argument("--checkpoint", type=_optional, default=None,
                   help="scGPT model directory to continue pretraining; omit for a new small model")
    p.add_argument("--output-dir", type=_optional, default=None,
                   help="where to write the checkpoint (default: the demo backbone folder in the scadapt cache)")
    for name in ("d_model", "nlayers", "nhead", "d_hid", "max_seq_len", "n_bins", "epochs", "batch_size",
                 "warmup_steps", "min_genes", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=_integer, default=getattr(d, name))
    for name in ("dropout", "lr", "weight_decay", "val_fraction"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    p.add_argument("--mask-ratios", default=",".join(map(str, d.mask_ratios)))
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--experiment", default=d.experiment)
    p.set_defaults(handler=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> None:
    from scadapt.training.pretrain import PretrainConfig, pretrain

    fields = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
    fields["data"] = tuple(s.strip() for s in args.data.split(",") if s.strip())
    try:
        fields["mask_ratios"] = tuple(float(r) for r in args.mask_ratios.split(","))
    except ValueError:
        raise ScadaptError(f"--mask-ratios must be comma-separated numbers, got {args.mask_ratios!r}.") from None
    result = pretrain(PretrainConfig(**fields))
    print(f"Pretrained backbone written to {result.checkpoint_dir}")
    print(f"  weights hash {result.weights_hash[:16]}, validation loss {result.val_loss:.4f}, MLflow run {result.run_id}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scadapt", description="Adapt scGPT to cell-type annotation.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_pretrain(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except ScadaptError as error:
        print(f"scadapt: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Backbone hyperparameters and their mapping to scGPT's ``args.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scadapt.infra.errors import CheckpointError


@dataclass(frozen=True)
class BackboneConfig:
    """Shape and behaviour of a scGPT-compatible encoder.

    ``attention_dropout`` is dropout on the attention probabilities. scGPT's code ties it to
    ``dropout``; we keep it separate and default it to 0 because fused attention kernels on CPU do
    not support it, and with it every layer must materialise the full ``L x L`` attention matrix
    (see benchmarks/RESULTS.md). Eval-mode outputs do not depend on either dropout.
    """

    vocab_size: int
    d_model: int = 512
    nhead: int = 8
    d_hid: int = 512
    nlayers: int = 12
    dropout: float = 0.2
    attention_dropout: float = 0.0
    n_bins: int = 51
    max_seq_len: int = 1200
    pad_token: str = "<pad>"
    pad_value: float = -2.0
    mask_value: float = -1.0
    max_value: float = 512.0
    layer_norm_eps: float = 1e-5
    do_mvc: bool = True

    def __post_init__(self) -> None:
        if self.d_model % self.nhead:
            raise CheckpointError(
                f"embsize={self.d_model} is not divisible by nheads={self.nhead}; "
                "check args.json."
            )

    @classmethod
    def from_args(cls, args: dict[str, Any], vocab_size: int) -> BackboneConfig:
        """Build from a scGPT ``args.json`` dict; refuse settings this backbone does not implement."""
        style = args.get("input_emb_style", "continuous")
        if style != "continuous":
            raise CheckpointError(
                f"args.json has input_emb_style={style!r}; scadapt supports only 'continuous' "
                "(the style of the released whole-body and organ models)."
            )
        if args.get("pre_norm", False):
            raise CheckpointError("args.json asks for pre_norm=True; scadapt supports post-norm only.")
        for key in ("embsize", "nheads", "d_hid", "nlayers"):
            if key not in args:
                raise CheckpointError(
                    f"args.json lacks '{key}'. A scGPT args.json needs embsize, nheads, d_hid and "
                    "nlayers; use the file that came with the checkpoint."
                )
        return cls(
            vocab_size=vocab_size,
            d_model=int(args["embsize"]),
            nhead=int(args["nheads"]),
            d_hid=int(args["d_hid"]),
            nlayers=int(args["nlayers"]),
            dropout=float(args.get("dropout", 0.2)),
            attention_dropout=float(args.get("attention_dropout", 0.0)),
            n_bins=int(args.get("n_bins", 51)),
            max_seq_len=int(args.get("max_seq_len", 1200)),
            pad_token=str(args.get("pad_token", "<pad>")),
            pad_value=float(args.get("pad_value", -2)),
            mask_value=float(args.get("mask_value", -1)),
            do_mvc=bool(args.get("MVC", True)),
        )

    def to_args(self) -> dict[str, Any]:
        """The ``args.json`` written next to our checkpoints (scGPT's key names)."""
        return {
            "embsize": self.d_model,
            "nheads": self.nhead,
            "d_hid": self.d_hid,
            "nlayers": self.nlayers,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "n_bins": self.n_bins,
            "max_seq_len": self.max_seq_len,
            "pad_token": self.pad_token,
            "pad_value": self.pad_value,
            "mask_value": self.mask_value,
            "input_emb_style": "continuous",
            "input_style": "binned",
            "MVC": self.do_mvc,
            "fast_transformer": True,
            "n_layers_cls": 3,
        }

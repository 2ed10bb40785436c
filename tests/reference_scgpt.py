"""The reference scGPT implementation (``scgpt==0.2.4``) as a test oracle.

``import scgpt`` needs torchtext (whose last release only loads with torch 2.3), IPython and
datasets; none is used by the parts we compare against, so small stand-in modules are placed in
``sys.modules`` before the import. Install the package with ``pip install --no-deps scgpt==0.2.4``.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch


def _stand_in(name: str, **attrs) -> str | None:
    """Put a stand-in module in ``sys.modules`` unless a real one exists; return its name if placed."""
    if name in sys.modules:
        return None
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return name


def import_scgpt():
    """The ``scgpt`` module, or skip the test when it is not installed."""
    try:
        import importlib.util

        if importlib.util.find_spec("scgpt") is None:
            missing = "scgpt==0.2.4 is not installed (pip install --no-deps scgpt==0.2.4)"
            if os.environ.get("CI"):  # the oracle must run in CI: a missing package fails there
                pytest.fail(missing)
            pytest.skip(missing)
    except ValueError:
        pass

    class Vocab:  # the base class of scgpt.tokenizer.GeneVocab
        def __init__(self, *args, **kwargs):
            pass

    if "scgpt" in sys.modules:
        return sys.modules["scgpt"]
    placed = [
        _stand_in("torchtext"),
        _stand_in("torchtext.vocab", Vocab=Vocab, vocab=lambda *a, **k: Vocab()),
        _stand_in("IPython", get_ipython=lambda: None),
        _stand_in("datasets", Dataset=object, load_dataset=lambda *a, **k: None),
    ]
    if placed[0]:
        sys.modules["torchtext"].vocab = sys.modules["torchtext.vocab"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import scgpt
    finally:
        # scgpt has bound what it needs; other libraries (matplotlib probes IPython) must not
        # see the stand-ins.
        for name in filter(None, placed):
            sys.modules.pop(name, None)
    return scgpt


def reference_model(model_dir: Path, dropout: float | None = None) -> torch.nn.Module:
    """The reference ``TransformerModel`` built from ``args.json`` and loaded from our checkpoint.

    Loading goes through the reference's own ``load_pretrained`` (which renames ``Wqkv.`` to
    ``in_proj_``); we then check that it really loaded every encoder tensor, since it skips
    mismatches silently.
    """
    import json

    scgpt = import_scgpt()
    from scgpt.utils import load_pretrained

    args = json.loads((model_dir / "args.json").read_text())
    vocab = json.loads((model_dir / "vocab.json").read_text())
    model = scgpt.model.TransformerModel(
        ntoken=len(vocab),
        d_model=args["embsize"],
        nhead=args["nheads"],
        d_hid=args["d_hid"],
        nlayers=args["nlayers"],
        nlayers_cls=args.get("n_layers_cls", 3),
        n_cls=1,
        vocab=vocab,
        dropout=args["dropout"] if dropout is None else dropout,
        pad_token=args["pad_token"],
        pad_value=args["pad_value"],
        do_mvc=args.get("MVC", True),
        input_emb_style="continuous",
        n_input_bins=args["n_bins"],
        cell_emb_style="cls",
        use_fast_transformer=False,
    )
    state = torch.load(model_dir / "best_model.pt", map_location="cpu", weights_only=True)
    load_pretrained(model, state, verbose=False)
    converted = {k.replace("Wqkv.", "in_proj_"): v for k, v in state.items()}
    for key, value in model.state_dict().items():
        if key.startswith("cls_decoder."):
            continue  # the classification head is not part of a release checkpoint
        assert key in converted, f"reference key {key} missing from our checkpoint"
        assert torch.equal(value, converted[key]), f"reference did not load {key}"
    return model.eval()


def reference_cls_embeddings(model, gene_ids, values, padding_mask) -> torch.Tensor:
    with torch.no_grad():
        hidden = model._encode(gene_ids, values, padding_mask)
    return hidden[:, 0, :]

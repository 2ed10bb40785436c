"""Reading and writing scGPT model directories (``args.json``, ``vocab.json``, ``best_model.pt``).

Release checkpoints store each layer's attention as packed ``self_attn.Wqkv`` ([3d, d], q/k/v
stacked) and ``self_attn.out_proj``; PyTorch-trained ones use ``in_proj_weight/in_proj_bias``.
We split both into our ``q/k/v/out`` modules on load and write packed ``Wqkv`` on save, so our
files load in the reference implementation. Every key is accounted for: anything missing,
unexpected or of the wrong shape is an error, except keys known not to affect the encoder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from scadapt.backbone.config import BackboneConfig
from scadapt.backbone.model import ScGPTBackbone
from scadapt.infra.errors import CheckpointError
from scadapt.infra.storage import atomic_write
from scadapt.tokenization.vocab import GeneVocab

ARGS_FILE = "args.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "best_model.pt"

# Heads and objectives of scGPT's pretraining/fine-tuning that the encoder never reads.
_UNUSED_ALWAYS = re.compile(
    r"^(cls_decoder\.|grad_reverse_discriminator\.|decoder\.zero_logit\.|mvc_decoder\.W_zero_logit)"
)
_DECODERS = re.compile(r"^(decoder\.|mvc_decoder\.)")
_PACKED = re.compile(r"^(.*\.self_attn\.)(Wqkv\.|in_proj_)(weight|bias)$")
_OUT_PROJ = re.compile(r"^(.*\.self_attn\.)out_proj\.(weight|bias)$")
_OURS_QKV = re.compile(r"^(.*\.self_attn\.)([qkv])\.(weight|bias)$")
_OURS_OUT = re.compile(r"^(.*\.self_attn\.)out\.(weight|bias)$")


@dataclass
class LoadedBackbone:
    """A backbone with everything needed to feed it: its vocabulary, config and provenance."""

    model: ScGPTBackbone
    vocab: GeneVocab
    config: BackboneConfig
    weights_hash: str
    source: str
    ignored_keys: list[str]


def weights_hash(state: dict[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the encoder weights in our layout.

    The pretraining decoders are left out, and the same weights hash the same whether they were
    stored packed (``Wqkv``) or not, so the hash identifies what a fine-tuned runner builds on.
    """
    digest = hashlib.sha256()
    for key in sorted(k for k in state if not _DECODERS.match(k)):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def to_our_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Split packed ``Wqkv``/``in_proj_*`` into ``q/k/v`` and rename ``out_proj`` to ``out``."""
    converted: dict[str, Tensor] = {}
    for key, tensor in state.items():
        packed = _PACKED.match(key)
        out_proj = _OUT_PROJ.match(key)
        if packed:
            prefix, _, kind = packed.groups()
            if tensor.shape[0] % 3:
                raise CheckpointError(
                    f"{key} has shape {tuple(tensor.shape)}; a packed q/k/v tensor needs a first "
                    "dimension divisible by 3. The checkpoint is not a scGPT model."
                )
            for name, part in zip("qkv", tensor.chunk(3, dim=0), strict=True):
                converted[f"{prefix}{name}.{kind}"] = part
        elif out_proj:
            prefix, kind = out_proj.groups()
            converted[f"{prefix}out.{kind}"] = tensor
        else:
            converted[key] = tensor
    return converted


def to_release_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`to_our_layout`: pack ``q/k/v`` into ``Wqkv`` and name ``out`` ``out_proj``."""
    release: dict[str, Tensor] = {}
    pending: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, tensor in state.items():
        qkv = _OURS_QKV.match(key)
        out = _OURS_OUT.match(key)
        if qkv:
            prefix, name, kind = qkv.groups()
            pending.setdefault((prefix, kind), {})[name] = tensor
        elif out:
            prefix, kind = out.groups()
            release[f"{prefix}out_proj.{kind}"] = tensor
        else:
            release[key] = tensor
    for (prefix, kind), parts in pending.items():
        release[f"{prefix}Wqkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return release


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """``torch.load(weights_only=True)`` with errors that say what to do."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty. Copy the weights file again.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and was refused "
            f"(scadapt loads weights with weights_only=True for safety): {str(error)[:300]}. "
            "Save a plain state dict with torch.save(model.state_dict(), path)."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} could not be read; it is probably truncated or corrupt ({type(error).__name__}: "
            f"{str(error)[:200]}). Download or copy best_model.pt again and check its size."
        ) from None
    for wrapper in ("model_state_dict", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict (a mapping of parameter names to tensors)."
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def checkpoint_digest(model_dir: str | Path) -> str:
    """Content hash of a model directory's three files, without loading the model (tells a
    retrained checkpoint in the same folder apart)."""
    _check_files(Path(model_dir))
    digest = hashlib.blake2b(digest_size=16)
    for name in (ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE):
        digest.update(name.encode())
        with (Path(model_dir) / name).open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def read_vocabulary(model_dir: str | Path) -> GeneVocab:
    """The vocabulary of a model directory, checked without loading its weights."""
    model_dir = Path(model_dir)
    _check_files(model_dir)
    read_args(model_dir / ARGS_FILE)
    return GeneVocab.from_file(model_dir / VOCAB_FILE)


def _check_files(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise CheckpointError(
            f"Model directory {model_dir} does not exist. Pass a scGPT model directory holding "
            f"{ARGS_FILE}, {VOCAB_FILE} and {WEIGHTS_FILE}, or leave it out to use the demo backbone."
        )
    missing = [n for n in (ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE) if not (model_dir / n).is_file()]
    if missing:
        raise CheckpointError(
            f"Model directory {model_dir} lacks {', '.join(missing)}. A scGPT model directory "
            f"holds {ARGS_FILE}, {VOCAB_FILE} and {WEIGHTS_FILE} (as released by scGPT, or as "
            "written by `scadapt pretrain`)."
        )


def read_args(path: Path) -> dict:
    """The model settings of a checkpoint's ``args.json``, refused with a remedy when unreadable."""
    try:
        args = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); copy it again.") from None
    if not isinstance(args, dict):
        raise CheckpointError(f"{path} must hold a JSON object of model settings.")
    return args


def _account_for_keys(
    model: ScGPTBackbone, state: dict[str, Tensor], with_decoders: bool
) -> tuple[dict[str, Tensor], list[str]]:
    """Match file keys to model keys; raise listing every problem, return (usable, ignored)."""
    expected = model.state_dict()
    usable: dict[str, Tensor] = {}
    ignored, unexpected, mismatched = [], [], []
    for key, tensor in state.items():
        if key in expected:
            if tuple(tensor.shape) != tuple(expected[key].shape):
                mismatched.append(
                    f"{key}: file {tuple(tensor.shape)} vs model {tuple(expected[key].shape)}"
                )
            else:
                usable[key] = tensor
        elif _UNUSED_ALWAYS.match(key) or (not with_decoders and _DECODERS.match(key)):
            ignored.append(key)
        else:
            unexpected.append(key)
    missing = sorted(set(expected) - set(state))
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
            if keys:
                shown = "; ".join(keys[:8]) + (f"; ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{len(keys)} {label} key(s): {shown}")
        raise CheckpointError(
            "The weights do not fit the model described by args.json and vocab.json. "
            + " | ".join(parts)
            + ". Check that the three files come from the same model directory."
        )
    return usable, ignored


def load_backbone(
    model_dir: str | Path,
    with_decoders: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedBackbone:
    """Load a scGPT model directory into a :class:`ScGPTBackbone` (eval mode, float32).

    Args:
        model_dir: folder with ``args.json``, ``vocab.json``, ``best_model.pt``.
        with_decoders: also load the pretraining decoders (needed to continue pretraining).
        device: where to put the model.
    """
    model_dir = Path(model_dir)
    _check_files(model_dir)
    args = read_args(model_dir / ARGS_FILE)
    vocab = GeneVocab.from_file(model_dir / VOCAB_FILE)
    state = to_our_layout(read_state_dict(model_dir / WEIGHTS_FILE))
    embedding = state.get("encoder.embedding.weight")
    if embedding is not None and embedding.shape[0] != len(vocab):
        raise CheckpointError(
            f"{VOCAB_FILE} has {len(vocab)} tokens (special tokens included) but the gene "
            f"embedding in {WEIGHTS_FILE} has {embedding.shape[0]} rows: the vocabulary does not "
            "belong to these weights. Use the vocab.json released with this checkpoint."
        )
    pad_token = args.get("pad_token", "<pad>")
    if pad_token not in vocab:
        raise CheckpointError(f"args.json names pad_token {pad_token!r}, which is not in {VOCAB_FILE}.")
    config = BackboneConfig.from_args(args, vocab_size=len(vocab))
    if with_decoders and config.do_mvc and not any(k.startswith("mvc_decoder.") for k in state):
        raise CheckpointError(
            f"args.json says MVC=true but {WEIGHTS_FILE} has no mvc_decoder weights; "
            "set MVC to false in args.json or use the complete checkpoint."
        )
    model = ScGPTBackbone(config, pad_id=vocab[pad_token], with_decoders=with_decoders)
    usable, ignored = _account_for_keys(model, state, with_decoders)
    model.load_state_dict({k: v.float() for k, v in usable.items()}, strict=True)
    model.to(device).eval()
    return LoadedBackbone(
        model=model,
        vocab=vocab,
        config=config,
        weights_hash=weights_hash(model.state_dict()),
        source=str(model_dir),
        ignored_keys=sorted(ignored),
    )


def save_backbone(model: ScGPTBackbone, vocab: GeneVocab, model_dir: str | Path) -> str:
    """Write ``model`` as a scGPT release-format directory; return the weights hash.

    Files are written to temporaries and renamed, so an interrupted save never leaves a file that
    looks complete.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()}
    atomic_write(model_dir / ARGS_FILE, lambda f: f.write(json.dumps(model.config.to_args(), indent=2).encode()))
    atomic_write(model_dir / VOCAB_FILE, lambda f: f.write(json.dumps(vocab.to_dict()).encode()))
    atomic_write(model_dir / WEIGHTS_FILE, lambda f: torch.save(to_release_layout(state), f))
    return weights_hash(state)



def checkpoint_weights_hash(model_dir: str | Path) -> str | None:
    """The weights hash :func:`load_backbone` reports for a model directory (None if it holds no
    loadable checkpoint); remembered per weights file while that file is unchanged."""
    weights = Path(model_dir) / WEIGHTS_FILE
    try:
        stat = weights.stat()
    except OSError:
        return None
    return _weights_hash_of(str(Path(model_dir).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _weights_hash_of(model_dir: str, mtime_ns: int, size: int) -> str | None:
    try:
        return load_backbone(model_dir).weights_hash
    except CheckpointError:
        return None

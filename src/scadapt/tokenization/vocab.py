"""The gene vocabulary of a scGPT model (``vocab.json``: a plain ``{token: id}`` dict)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from scadapt.infra.errors import CheckpointError

PAD_TOKEN = "<pad>"
CLS_TOKEN = "<cls>"
EOC_TOKEN = "<eoc>"
SPECIAL_TOKENS = (PAD_TOKEN, CLS_TOKEN, EOC_TOKEN)


class GeneVocab:
    """Bidirectional map between gene symbols (and special tokens) and integer ids.

    Ids must be exactly ``0..n-1``: they index rows of the gene embedding. Special tokens that a
    checkpoint's vocabulary lacks are appended at the end, as scGPT itself does, so the ids of
    real genes never move.
    """

    def __init__(self, token_to_id: Mapping[str, int]):
        ids = sorted(token_to_id.values())
        if ids != list(range(len(ids))):
            raise CheckpointError(
                "The vocabulary ids are not exactly 0..n-1 (duplicates or gaps), so they cannot "
                "index an embedding table. Use the vocab.json that came with the checkpoint."
            )
        self._token_to_id = dict(token_to_id)
        self._id_to_token = [""] * len(ids)
        for token, index in self._token_to_id.items():
            self._id_to_token[index] = token
        self.appended_special_tokens: list[str] = []
        for token in SPECIAL_TOKENS:
            if token not in self._token_to_id:
                self._token_to_id[token] = len(self._id_to_token)
                self._id_to_token.append(token)
                self.appended_special_tokens.append(token)

    @classmethod
    def from_file(cls, path: str | Path) -> GeneVocab:
        """Read a ``vocab.json``; a broken file raises :class:`CheckpointError`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"Vocabulary file {path} does not exist.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(
                f"Vocabulary file {path} is not valid JSON ({error}). It may be truncated: "
                "copy it again from the original model directory."
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in data.items()
        ):
            raise CheckpointError(
                f"Vocabulary file {path} must hold a JSON object mapping gene symbols to integer ids."
            )
        return cls(data)

    @classmethod
    def from_genes(cls, genes: Iterable[str]) -> GeneVocab:
        """A new vocabulary over ``genes`` (sorted, deduplicated) plus the special tokens."""
        unique = sorted({str(g) for g in genes} - set(SPECIAL_TOKENS))
        return cls({gene: index for index, gene in enumerate(unique)})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self._token_to_id, indent=0, sort_keys=False))

    def __len__(self) -> int:
        return len(self._id_to_token)

    def __contains__(self, token: object) -> bool:
        return token in self._token_to_id

    def __getitem__(self, token: str) -> int:
        return self._token_to_id[token]

    def get(self, token: str, default: int = -1) -> int:
        return self._token_to_id.get(token, default)

    def token(self, index: int) -> str:
        return self._id_to_token[index]

    def to_dict(self) -> dict[str, int]:
        return dict(self._token_to_id)

    @property
    def pad_id(self) -> int:
        return self._token_to_id[PAD_TOKEN]

    @property
    def cls_id(self) -> int:
        return self._token_to_id[CLS_TOKEN]

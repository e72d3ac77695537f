"""Text data for language models: CSV files with a text column (and a label column for
classifiers), the shipped ``builtin:sentiment`` dataset, and a small word-level tokenizer.

No hub tokenizer is downloaded: the vocabulary is built from the training texts and saved with
the model (``vocab.json``). Every data problem is a ``FailJob`` naming the file and line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from consumers import artifacts
from consumers.data import BUILTIN_PREFIX, find_label_column, open_data, read_csv
from consumers.frameworks.base import FailJob

DATASETS_DIR = Path(__file__).with_name("datasets")
TEXT_BUILTINS = {"sentiment": DATASETS_DIR / "sentiment.csv"}
TEXT_CANDIDATES = ("text", "sentence", "review", "prompt")
PAD, UNK, CLS, BOS, EOS = "[PAD]", "[UNK]", "[CLS]", "[BOS]", "[EOS]"
SPECIALS = (PAD, UNK, CLS, BOS, EOS)
PAD_ID, UNK_ID, CLS_ID, BOS_ID, EOS_ID = range(len(SPECIALS))
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_GLUE = re.compile(r" ([.,!?;:)])")


@dataclass(frozen=True, slots=True)
class TextTable:
    """Texts and (for classification) their labels, as strings."""

    texts: list[str]
    labels: list[str] | None
    text_column: str
    label_column: str | None


def tokenize(text: str) -> list[str]:
    """Lower-cased words, contractions kept whole, punctuation as separate tokens."""
    return _WORD.findall(text.lower())


class Vocab:
    """Word-level vocabulary; ids 0-4 are the special tokens."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError("a vocabulary starts with the special tokens")
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Sequence[str], max_size: int = 20_000, min_freq: int = 1) -> Vocab:
        """The most frequent words (ties alphabetical, so the result is deterministic)."""
        counts = Counter(word for text in texts for word in tokenize(text))
        words = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIALS),
                       key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words[: max(0, max_size - len(SPECIALS))]])

    def ids(self, text: str) -> list[int]:
        return [self.index.get(word, UNK_ID) for word in tokenize(text)]

    def decode(self, ids: Sequence[int]) -> str:
        words = [self.tokens[i] for i in ids if len(SPECIALS) <= i < len(self.tokens)]
        return _GLUE.sub(r"\1", " ".join(words))

    def save(self, path: Path) -> None:
        artifacts.write_json_atomic(path, {"tokens": self.tokens})

    @classmethod
    def load(cls, path: Path) -> Vocab:
        try:
            return cls(artifacts.read_json(path)["tokens"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FailJob(f"vocabulary {path.name} is unreadable: {exc}",
                             code="model_unreadable") from exc


def encode(vocab: Vocab, texts: Sequence[str], max_length: int,
           causal: bool = False) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(input_ids, attention_mask)``, both N x max_length, padded with ``[PAD]``.

    Classifiers get ``[CLS] words...``; causal language models ``[BOS] words... [EOS]``."""
    ids = np.full((len(texts), max_length), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(texts), max_length), dtype=np.int64)
    for row, text in enumerate(texts):
        tokens = [BOS_ID, *vocab.ids(text), EOS_ID] if causal else [CLS_ID, *vocab.ids(text)]
        tokens = tokens[:max_length]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def _text_index(header: list[str], text_column: str | None, shown: str) -> int:
    if text_column is not None:
        if text_column not in header:
            raise FailJob(f"{shown}: text column {text_column!r} not in the header {header}",
                             code="invalid_data")
        return header.index(text_column)
    for name in TEXT_CANDIDATES:
        if name in header:
            return header.index(name)
    raise FailJob(f"{shown}: no text column in the header {header}; name one of "
                     f"{', '.join(TEXT_CANDIDATES)} or set the text_column hyperparameter",
                     code="invalid_data")


def _label_index(header: list[str], label_column: str | None, shown: str,
                 required: bool) -> int | None:
    found = find_label_column(header, label_column, shown)
    if found is None and required:
        raise FailJob(f"{shown}: no label column in the header {header}; name it label or "
                         "set the label_column hyperparameter", code="invalid_data")
    return found


def _open_csv(data_root: Path, data_path: str) -> AbstractContextManager[BinaryIO]:
    """The CSV, opened: a file under the data root (checked, see ``open_data``) or a shipped one."""
    if not data_path.startswith(BUILTIN_PREFIX):
        return open_data(data_root, data_path)
    name = data_path.removeprefix(BUILTIN_PREFIX)
    if name not in TEXT_BUILTINS:
        known = ", ".join(BUILTIN_PREFIX + n for n in TEXT_BUILTINS)
        raise FailJob(f"unknown built-in text dataset {data_path!r}; known: {known}",
                         code="unknown_dataset")
    return TEXT_BUILTINS[name].open("rb")


def _column(rows: list[tuple[int, list[str]]], index: int, name: str, shown: str) -> list[str]:
    values = []
    for line, row in rows:
        value = row[index].strip()
        if not value:
            raise FailJob(f"{shown} line {line}: empty value in column {name!r}",
                             code="invalid_data")
        values.append(value)
    return values


def load_text(data_root: Path, data_path: str, *, text_column: str | None = None,
              label_column: str | None = None, labelled: bool = True) -> TextTable:
    """A text CSV under the data root or ``builtin:sentiment``. With ``labelled`` a label column
    with at least two classes is required; without, labels are read only when present."""
    with _open_csv(data_root, data_path) as fh:
        header, rows = read_csv(fh, data_path)
    ti = _text_index(header, text_column, data_path)
    li = _label_index(header, label_column, data_path, required=labelled)
    texts = _column(rows, ti, header[ti], data_path)
    labels = None if li is None else _column(rows, li, header[li], data_path)
    if labelled and labels is not None and len(set(labels)) < 2:
        raise FailJob(f"{data_path}: label column {header[li or 0]!r} has "
                         f"{len(set(labels))} distinct value(s); classification needs at least 2",
                         code="invalid_data")
    return TextTable(texts=texts, labels=labels, text_column=header[ti],
                     label_column=None if li is None else header[li])


def inline_texts(inputs: list[list[Any]]) -> list[str]:
    """Inference inputs ``[["a text"], ...]``: the first cell of each row, a non-empty string."""
    if not inputs:
        raise FailJob("inputs is empty; give at least one text", code="invalid_inputs")
    texts = []
    for r, row in enumerate(inputs):
        if not row or not isinstance(row[0], str) or not row[0].strip():
            raise FailJob(f"inputs row {r}: expected [\"some text\"], got {row!r:.80}",
                             code="invalid_inputs")
        texts.append(row[0])
    return texts

"""BERT's WordPiece tokenizer: trained with `tokenizers`, or built from an existing BERT vocab.txt.

Both functions return transformers' own `BertTokenizer`, so `save_pretrained` writes tokenizer.json
plus a tokenizer_config.json naming `BertTokenizer`, and `AutoTokenizer.from_pretrained(dir)` loads
it without this package. `BertTokenizer.__init__` rebuilds the backend from the vocabulary and its
flags (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`) on every load, ignoring the
normaliser in tokenizer.json; constructing ours through that same `__init__` is what makes a reload
identical.
"""
from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import WordPiece
from transformers import BertTokenizer

from ..data.corpus import iter_lines

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-4 in a trained vocabulary


def train_wordpiece_tokenizer(
    files: Iterable[str | os.PathLike] | str | os.PathLike | None = None,
    *,
    iterator: Iterable[str] | None = None,
    vocab_size: int = 30522,
    min_frequency: int = 2,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    model_max_length: int = 512,
    show_progress: bool = False,
) -> BertTokenizer:
    """Train a BERT WordPiece tokenizer on UTF-8 text files or on an iterator of strings.

    Normalisation is BERT's: control characters removed, CJK characters split into one token each,
    optional lower-casing; `strip_accents=None` strips accents exactly when `lowercase` is on.
    `tokenizers` breaks ties between equally frequent merges in hash order
    (huggingface/tokenizers#1794), so two runs on the same text can differ in a few rare tokens.
    """
    if (files is None) == (iterator is None):
        raise ValueError("Pass exactly one of `files` (UTF-8 text files) or `iterator` (strings).")
    if isinstance(iterator, str):
        raise ValueError("`iterator` must yield strings, not be one: pass e.g. `iterator=[text]`.")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room beyond the {len(SPECIAL_TOKENS)} special tokens "
            f"{SPECIAL_TOKENS}; use a few thousand or more (BERT uses 30522)."
        )
    lines = iter_lines(files) if files is not None else iter(iterator)
    # Reading the first line now fails fast on an empty corpus or a first file that is not UTF-8.
    first = next(lines, None)
    if first is None:
        raise ValueError("The iterator yielded no text; pass an iterator of non-empty strings.")

    backend = Tokenizer(WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=show_progress,
    )
    backend.train_from_iterator(itertools.chain([first], lines), trainer)

    vocab = backend.get_vocab()
    if len(vocab) == len(SPECIAL_TOKENS):
        raise ValueError("The training text contains no characters (only whitespace or control characters).")
    if len(vocab) > vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for this corpus: its single characters (with their "
            f"'##' continuations) and the special tokens already take {len(vocab)} entries. "
            f"Use a vocab_size well above {len(vocab)}."
        )
    return _bert_tokenizer(vocab, lowercase, strip_accents, model_max_length)


def wordpiece_tokenizer_from_vocab(
    vocab_file: str | os.PathLike,
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    model_max_length: int = 512,
) -> BertTokenizer:
    """A BERT tokenizer from a vocab.txt (one token per line; a token's id is its line number)."""
    path = os.fspath(vocab_file)
    if not os.path.isfile(path):
        raise OSError(f"Vocabulary file {path!r} does not exist; pass a BERT vocab.txt (one token per line).")
    # Split on "\n" only, as BERT does: str.splitlines() would also split tokens such as "\u2028"
    # (bert-base-chinese has one), shifting every later id.
    try:
        with open(path, encoding="utf-8") as handle:
            tokens = [line.rstrip("\n") for line in handle]
    except UnicodeDecodeError as err:
        raise ValueError(f"Vocabulary file {path!r} is not UTF-8 (byte {err.start}).") from None
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        duplicates = sorted(token for token, count in Counter(tokens).items() if count > 1)[:5]
        raise ValueError(f"Vocabulary file {path!r} repeats tokens {duplicates}; each line must be unique.")
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(
            f"Vocabulary file {path!r} lacks the special tokens {missing}; BERT needs all of {SPECIAL_TOKENS}."
        )
    return _bert_tokenizer(vocab, lowercase, strip_accents, model_max_length)


def _bert_tokenizer(
    vocab: dict[str, int], lowercase: bool, strip_accents: bool | None, model_max_length: int
) -> BertTokenizer:
    # padding_side given here is saved in tokenizer_config.json and wins on reload; without it the
    # direction the backend last padded with (stored in tokenizer.json) would come back instead.
    return BertTokenizer(
        vocab=vocab,
        do_lower_case=lowercase,
        strip_accents=strip_accents,
        tokenize_chinese_chars=True,
        model_max_length=model_max_length,
        padding_side="right",
    )

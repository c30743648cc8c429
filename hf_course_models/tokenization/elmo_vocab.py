"""The word vocabulary of ELMo's tokenizer: counted on a corpus, or read from a bilm-tf vocab file.

Kept apart from `elmo.py`, which must import nothing from this package (remote code copies it alone);
training reads corpora through the package's corpus reader so that errors name the file.
"""
from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterable

from tqdm.auto import tqdm

from ..data.corpus import iter_lines
from .elmo import HfcmElmoTokenizer

SPECIAL_TOKENS = ["<pad>", "<S>", "</S>", "<UNK>"]  # ids 0-3 of a trained vocabulary
BILM_SPECIAL_TOKENS = ["<S>", "</S>", "<UNK>"]  # what a bilm-tf vocab file must hold
_LINES_PER_BATCH = 1000


def train_elmo_tokenizer(
    files: Iterable[str | os.PathLike] | str | os.PathLike | None = None,
    *,
    iterator: Iterable[str] | None = None,
    vocab_size: int = 50_000,
    min_frequency: int = 2,
    lowercase: bool = False,
    chinese_segmentation: str = "characters",
    split_punctuation: bool = True,
    model_max_length: int | None = None,
    show_progress: bool = False,
) -> HfcmElmoTokenizer:
    """An ELMo tokenizer whose vocabulary is the corpus's most frequent words.

    The words are counted exactly as the tokenizer will cut them (same splitting, jieba and
    lower-casing). Vocabulary: `<pad>`, `<S>`, `</S>`, `<UNK>` (ids 0-3), then the words seen at
    least `min_frequency` times, most frequent first, ties in code-point order, up to `vocab_size`
    entries in all.
    """
    if (files is None) == (iterator is None):
        raise ValueError("Pass exactly one of `files` (UTF-8 text files) or `iterator` (strings).")
    if isinstance(iterator, str):
        raise ValueError("`iterator` must yield strings, not be one: pass e.g. `iterator=[text]`.")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room for words beyond the {len(SPECIAL_TOKENS)} special tokens "
            f"{SPECIAL_TOKENS}; use a few thousand or more (bilm-tf's 1B Word Benchmark vocabulary has 793,471)."
        )
    settings = {"do_lower_case": lowercase, "chinese_segmentation": chinese_segmentation,
                "split_punctuation": split_punctuation}
    splitter = HfcmElmoTokenizer(**settings)  # checks the settings
    lines = iter_lines(files) if files is not None else iter(iterator)
    first = next(lines, None)  # fails fast on an empty corpus or a first file that is not UTF-8
    if first is None:
        raise ValueError("The iterator yielded no text; pass an iterator of non-empty strings.")

    counts = Counter()
    lines = tqdm(itertools.chain([first], lines), desc="Counting words", unit=" lines", disable=not show_progress)
    for batch in iter(lambda: list(itertools.islice(lines, _LINES_PER_BATCH)), []):
        for words in splitter.split_words(batch):
            counts.update(words)
    frequent = sorted((word for word, count in counts.items()
                       if count >= min_frequency and word not in SPECIAL_TOKENS),
                      key=lambda word: (-counts[word], word))
    if not frequent:
        raise ValueError(
            f"No word occurs min_frequency={min_frequency} times or more in the training text "
            f"({len(counts)} distinct words); lower min_frequency or give more text."
        )
    words = SPECIAL_TOKENS + frequent[: vocab_size - len(SPECIAL_TOKENS)]
    optional = {} if model_max_length is None else {"model_max_length": model_max_length}
    return HfcmElmoTokenizer({word: index for index, word in enumerate(words)}, **settings, **optional)


def elmo_tokenizer_from_vocab(
    vocab_file: str | os.PathLike,
    *,
    lowercase: bool = False,
    chinese_segmentation: str = "characters",
    split_punctuation: bool = True,
) -> HfcmElmoTokenizer:
    """An ELMo tokenizer from a bilm-tf vocab file: one word per line, a word's id is its line number.

    The file must hold `<S>`, `</S>` and `<UNK>` (anywhere); a `!!!MAXTERMID` line is skipped without
    taking an id, as bilm-tf does. `<pad>` keeps its line if the file has one, else it gets the next id
    after the last line. bilm-tf's vocabularies come from Moses-tokenised text (e.g. "U.S.", "--"): pass
    `split_punctuation=False` to look such words up whole.
    """
    path = os.fspath(vocab_file)
    if not os.path.isfile(path):
        raise OSError(f"Vocabulary file {path!r} does not exist; pass a bilm-tf vocab file (one word per line).")
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]  # bilm-tf strips every line
    except UnicodeDecodeError as err:
        raise ValueError(f"Vocabulary file {path!r} is not UTF-8 (byte {err.start}).") from None
    blank = [number for number, word in enumerate(lines, start=1) if not word]
    if blank:
        raise ValueError(f"Vocabulary file {path!r} has blank lines {blank[:5]}; remove them (one word per line).")
    words = [word for word in lines if word != "!!!MAXTERMID"]
    repeated = sorted(word for word, count in Counter(words).items() if count > 1)
    if repeated:
        raise ValueError(f"Vocabulary file {path!r} repeats the words {repeated[:5]}; each line must be unique.")
    missing = [token for token in BILM_SPECIAL_TOKENS if token not in words]
    if missing:
        raise ValueError(
            f"Vocabulary file {path!r} lacks the special tokens {missing}; add a line for each "
            f"({BILM_SPECIAL_TOKENS} are bilm-tf's sentence boundaries and unknown word)."
        )
    if SPECIAL_TOKENS[0] not in words:
        words.append(SPECIAL_TOKENS[0])
    return HfcmElmoTokenizer({word: index for index, word in enumerate(words)}, do_lower_case=lowercase,
                             chinese_segmentation=chinese_segmentation, split_punctuation=split_punctuation)

"""GPT-2's byte-level BPE tokenizer: trained with `tokenizers`, or built from an existing GPT-2 vocabulary.

Both functions return transformers' own `GPT2Tokenizer`, so `save_pretrained` writes tokenizer.json
plus a tokenizer_config.json naming `GPT2Tokenizer`, and `AutoTokenizer.from_pretrained(dir)` loads
it without this package. `GPT2Tokenizer.__init__` rebuilds the backend from the vocabulary and merges
on every load (ByteLevel pre-tokenizer with GPT-2's split regex, no prefix space, ByteLevel decoder);
constructing ours through that same `__init__` is what makes a reload identical.

Byte-level BPE (Radford et al. 2019, §2.2) works on the UTF-8 bytes of the text, each byte shown as
one of 256 printable characters, so every string encodes without unknown tokens and decodes back to
exactly itself: no normalisation, no clean-up of spaces.
"""
from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import GPT2Tokenizer

from ..data.corpus import _paths, read_text

END_OF_TEXT = "<|endoftext|>"  # GPT-2's only special token: document separator, bos, eos and unk
BYTE_ALPHABET = frozenset(pre_tokenizers.ByteLevel.alphabet())  # the 256 characters standing for bytes
LINES_PER_TRAINING_TEXT = 1000


def train_bpe_tokenizer(
    files: Iterable[str | os.PathLike] | str | os.PathLike | None = None,
    *,
    iterator: Iterable[str] | None = None,
    vocab_size: int = 50257,
    min_frequency: int = 2,
    model_max_length: int = 1024,
    show_progress: bool = False,
) -> GPT2Tokenizer:
    """Train a GPT-2 byte-level BPE tokenizer on UTF-8 text files or on an iterator of strings.

    The vocabulary is `<|endoftext|>` (id 0), the 256 byte symbols, then merges in the order they
    were learned, up to `vocab_size` entries; a corpus with too few repeated pairs (below
    `min_frequency`) stops earlier, so check `len(tokenizer)` when sizing a model. Files are read
    whole, line breaks and indentation included, because GPT-2 merges those too.
    `tokenizers` breaks ties between equally frequent merges in hash order
    (huggingface/tokenizers#1794), so two runs on the same text can differ in a few rare tokens.

    As GPT-2, the tokenizer adds no special tokens and has no pad token. To pad a batch, reuse the
    end-of-text token: `tokenizer.pad_token = tokenizer.eos_token` (the attention mask hides it).
    Padding goes on the left, where batched generation needs it.
    """
    if (files is None) == (iterator is None):
        raise ValueError("Pass exactly one of `files` (UTF-8 text files) or `iterator` (strings).")
    if isinstance(iterator, str):
        raise ValueError("`iterator` must yield strings, not be one: pass e.g. `iterator=[text]`.")
    if vocab_size <= len(BYTE_ALPHABET) + 1:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room for merges: the 256 byte symbols and {END_OF_TEXT} "
            f"already take {len(BYTE_ALPHABET) + 1} entries. Use a few thousand or more (GPT-2 uses 50257)."
        )
    if files is not None:
        paths = _paths(files)
        texts = _training_texts(paths)
        nothing_to_learn = f"The corpus is empty: {paths} contain no text besides whitespace."
    else:
        texts = iter(iterator)
        nothing_to_learn = "The iterator yielded no text besides whitespace; pass an iterator of strings."
    # Reading the first text now fails fast on an empty corpus or a first file that is not UTF-8.
    first = next((text for text in texts if text.strip()), None)
    if first is None:
        raise ValueError(nothing_to_learn)

    backend = Tokenizer(BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=sorted(BYTE_ALPHABET),  # all 256 bytes, seen in the corpus or not
        show_progress=show_progress,
    )
    backend.train_from_iterator(itertools.chain([first], texts), trainer)
    model = json.loads(backend.to_str())["model"]
    return _gpt2_tokenizer(model["vocab"], [tuple(pair) for pair in model["merges"]], model_max_length)


def bpe_tokenizer_from_files(
    vocab_json: str | os.PathLike,
    merges_txt: str | os.PathLike,
    *,
    model_max_length: int = 1024,
) -> GPT2Tokenizer:
    """A GPT-2 tokenizer from a `vocab.json` + `merges.txt` pair (OpenAI's names: `encoder.json` + `vocab.bpe`).

    `vocab.json` maps each token to its id; `merges.txt` lists one merge per line ("Ġ t"), highest
    priority first, after a `#version` header. The files are read here and handed over as data:
    `GPT2Tokenizer(vocab_file=..., merges_file=...)` in transformers 5.24 silently builds a 1-token
    vocabulary instead.
    """
    vocab = _read_vocab(os.fspath(vocab_json))
    merges = _read_merges(os.fspath(merges_txt), vocab, os.fspath(vocab_json))
    return _gpt2_tokenizer(vocab, merges, model_max_length)


def _training_texts(paths: list[str]) -> Iterator[str]:
    """Each file in pieces of whole lines, line breaks kept, so the trainer can work on pieces in parallel."""
    for path in paths:
        lines = read_text(path).splitlines(keepends=True)
        for start in range(0, len(lines), LINES_PER_TRAINING_TEXT):
            yield "".join(lines[start:start + LINES_PER_TRAINING_TEXT])


def _read_vocab(path: str) -> dict[str, int]:
    text = _read_file(path, "Vocabulary", "GPT-2's vocab.json (or encoder.json)")
    try:
        vocab = json.loads(text)
    except json.JSONDecodeError as err:
        raise OSError(f"Vocabulary file {path!r} is not valid JSON ({err}); pass GPT-2's vocab.json.") from None
    if not isinstance(vocab, dict) or not all(type(index) is int for index in vocab.values()):
        raise OSError(f"Vocabulary file {path!r} must be a JSON object mapping each token to an integer id.")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise OSError(
            f"Vocabulary file {path!r} does not number its {len(vocab)} tokens 0..{len(vocab) - 1} "
            "(ids repeat or leave gaps); the model's embedding rows are indexed by these ids."
        )
    missing_bytes = sorted(BYTE_ALPHABET - vocab.keys())
    if missing_bytes:
        raise OSError(
            f"Vocabulary file {path!r} lacks {len(missing_bytes)} of the 256 byte symbols (e.g. "
            f"{missing_bytes[:5]}), so some text could not be encoded; it is not a byte-level BPE vocabulary."
        )
    if END_OF_TEXT not in vocab:
        raise OSError(f"Vocabulary file {path!r} has no {END_OF_TEXT} token (GPT-2's is id 50256).")
    return vocab


def _read_merges(path: str, vocab: dict[str, int], vocab_path: str) -> list[tuple[str, str]]:
    lines = _read_file(path, "Merges", "GPT-2's merges.txt (or vocab.bpe)").split("\n")
    # Only a "#version" header is skipped: lines such as "# #" are real merges.
    first = 1 if lines[0].startswith("#version") else 0
    merges = []
    for number, line in enumerate(lines[first:], start=first + 1):
        if not line:
            continue
        pair = tuple(line.split(" "))
        if len(pair) != 2 or not all(pair):
            raise OSError(f"Merges file {path!r} line {number} is {line!r}; each line must be two tokens "
                          "separated by one space, e.g. 'Ġ t'.")
        unknown = [token for token in (*pair, "".join(pair)) if token not in vocab]
        if unknown:
            raise OSError(f"Merges file {path!r} line {number} ({line!r}) uses {unknown}, which are not in "
                          f"{vocab_path!r}; pass the merges that belong to this vocabulary.")
        merges.append(pair)
    return merges


def _read_file(path: str, what: str, expected: str) -> str:
    if not os.path.isfile(path):
        raise OSError(f"{what} file {path!r} does not exist (or is not a file); pass {expected}.")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as err:
        raise OSError(f"{what} file {path!r} is not UTF-8 (byte {err.start}); pass {expected}.") from None


def _gpt2_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], model_max_length: int) -> GPT2Tokenizer:
    # padding_side given here is saved in tokenizer_config.json and wins on reload; without it the
    # direction the backend last padded with (stored in tokenizer.json) would come back instead.
    # clean_up_tokenization_spaces=False is saved too, so decode stays exact in any transformers version.
    return GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        add_prefix_space=False,
        model_max_length=model_max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )

"""Reading plain-text corpora with errors that name the file.

Format (as BERT's create_pretraining_data expects): one sentence per line, a blank line between
documents. Everything else (datasets, streaming) builds on these few functions.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator


def read_text(path: str | os.PathLike) -> str:
    """The whole file as text; OSError if missing, ValueError if it is not UTF-8."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OSError(f"Corpus file {path!r} does not exist (or is not a file); check the path.")
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"Corpus file {path!r} is not UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r}). "
            "Convert it first, e.g. `iconv -f GB18030 -t UTF-8 in.txt > out.txt`."
        ) from None


def _paths(files) -> list[str]:
    """One path or several, as strings; ValueError if there are none."""
    paths = [os.fspath(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files)]
    if not paths:
        raise ValueError("No corpus files were given; pass at least one UTF-8 text file.")
    return paths


def iter_lines(files: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Non-blank lines of every file, stripped; ValueError if there are none at all."""
    files = _paths(files)
    seen_any = False
    for path in files:
        for line in read_text(path).splitlines():
            line = line.strip()
            if line:
                seen_any = True
                yield line
    if not seen_any:
        raise ValueError(f"The corpus is empty: {files} contain no non-blank line.")


def read_documents(files: Iterable[str | os.PathLike]) -> list[list[str]]:
    """Documents as lists of sentences: one sentence per line, blank lines separate documents.

    Each file also ends a document. ValueError if no file holds any text.
    """
    files = _paths(files)
    documents: list[list[str]] = []
    for path in files:
        current: list[str] = []
        for line in read_text(path).splitlines():
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                documents.append(current)
                current = []
        if current:
            documents.append(current)
    if not documents:
        raise ValueError(f"The corpus is empty: {files} contain no non-blank line.")
    return documents

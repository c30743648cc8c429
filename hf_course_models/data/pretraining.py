"""Pre-training data for BERT, GPT and ELMo through 🤗 datasets: read, tokenise, shape, collate, evaluate.

A corpus is one or more files: plain text (.txt: one sentence per line, a blank line between
documents, as BERT's create_pretraining_data reads it), JSON lines (.jsonl/.json) or CSV (.csv),
the last two with a "text" column holding one document per row, its sentences on separate lines.
Rows are documents; tokenisation is a batched `datasets.map` (parallel with `num_proc`, cached by
datasets' fingerprint, so a second run on the same files and tokenizer skips it).

Per family (`build_pretraining_data`):
- "gpt": the token stream with end-of-text after each document, cut into blocks of `seq_len`.
- "elmo": one row per sentence, `<S> … </S>`, word ids and character ids; a sentence longer than
  `seq_len` continues in the next row.
- "bert": `[CLS] A [SEP] B [SEP]` next-sentence pairs (nsp.py), masked 80/10/10 when collated
  (masking.py). NotNext pairs draw from the whole corpus, so BERT needs the documents in memory:
  streaming supports "gpt" and "elmo" only.

Everything random is a pure function of `seed` and the example: the NSP pairs of the seed and the
corpus, each pair's masks of the seed and its `example_id` (static masks, as BERT's own data).
So batches collated in any grouping, order or process hold the same masks, which is what lets
two processes with batch B reproduce one process with batch 2B.
"""
from __future__ import annotations

import codecs
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import torch
import torch.nn.functional as F

from . import bilm, clm
from .corpus import _paths
from .masking import DataCollatorForBertPretraining
from .nsp import create_nsp_examples_from_ids

logger = logging.getLogger(__name__)

FAMILIES = ("bert", "gpt", "elmo")
BUILDERS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".csv": "csv"}
_CHECK_CHUNK_BYTES = 1 << 20
_UNBOUNDED_LENGTH = 10**12  # tokenizers without a real limit report int(1e30) as model_max_length


def _count_attended_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum())


@dataclass
class TrainingData:
    """What a training loop needs: rows, how to batch them, how to score a model, how to count tokens."""

    train_dataset: datasets.Dataset | datasets.IterableDataset
    collator: Callable[[list[dict]], dict[str, torch.Tensor]]
    eval_dataset: datasets.Dataset | None = None
    evaluate: Callable[[torch.nn.Module, torch.utils.data.DataLoader, object], dict[str, float]] | None = None
    count_tokens: Callable[[dict[str, torch.Tensor]], int] = _count_attended_tokens


# ---------------------------------------------------------------------------------------------- reading

def load_text_files(files, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    """The files' documents as a dataset with one column, "text" (a document's sentences, one per line).

    OSError for a missing file; ValueError naming the file for an empty or non-UTF-8 one, an unknown
    suffix or a table without a "text" column. `streaming=True` returns an IterableDataset that reads
    the files as it goes, for corpora larger than memory.
    """
    paths = _paths(files)
    for path in paths:
        _check_file(path)
    parts = [_load(list(run), builder, streaming) for builder, run in itertools.groupby(paths, key=_builder)]
    corpus = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if not streaming and len(corpus) == 0:
        raise ValueError(f"The corpus is empty: {paths} hold no rows; give files with text in them.")
    return corpus


def _builder(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in BUILDERS:
        raise ValueError(
            f"Corpus file {path!r} has the suffix {suffix!r}; use .txt (one sentence per line, blank lines "
            "between documents), .jsonl/.json or .csv (a 'text' column, one document per row)."
        )
    return BUILDERS[suffix]


def _check_file(path: str) -> None:
    """OSError if missing; ValueError if not UTF-8 or holding only white space. Reads in chunks, so any size works."""
    _builder(path)
    if not os.path.isfile(path):
        raise OSError(f"Corpus file {path!r} does not exist (or is not a file); check the path.")
    decoder = codecs.getincrementaldecoder("utf-8")()
    has_text, offset = False, 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHECK_CHUNK_BYTES)
            try:
                has_text = bool(decoder.decode(chunk, final=not chunk).strip()) or has_text
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"Corpus file {path!r} is not UTF-8 (near byte {offset + err.start}). Convert it first, "
                    "e.g. `iconv -f GB18030 -t UTF-8 in.txt > out.txt`."
                ) from None
            if not chunk:
                break
            offset += len(chunk)
    if not has_text:
        raise ValueError(f"Corpus file {path!r} is empty (or only white space); give a file with text in it.")


def _load(paths: list[str], builder: str, streaming: bool):
    # "paragraph": a row per blank-line-separated block, i.e. per document.
    options = {"sample_by": "paragraph"} if builder == "text" else {}
    corpus = datasets.load_dataset(builder, data_files=paths, split="train", streaming=streaming, **options)
    columns = corpus.column_names or list(next(iter(corpus)))  # a JSON stream knows its columns only once read
    if "text" not in columns:
        raise ValueError(
            f"{paths} have the columns {columns} but no 'text' column; name the column holding the documents "
            "'text' (one document per row, one sentence per line)."
        )
    # one type for every format (JSON gives large_string), so files of different formats concatenate
    return corpus.select_columns(["text"]).cast_column("text", datasets.Value("string"))


def sentences(text: str | None) -> list[str]:
    """A document's non-blank lines, stripped."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- building

def build_pretraining_data(family: str, tokenizer, files, seq_len: int, *, seed: int = 0, validation_files=None,
                           validation_fraction: float = 0.05, streaming: bool = False, num_proc: int | None = None,
                           whole_word_masking: bool = False) -> TrainingData:
    """Training (and validation) rows for `family`, with its collator, evaluation and token count.

    Validation: `validation_files` if given, else `validation_fraction` of the documents held out
    (seeded; 0 for none). A stream cannot be split by fraction: with `streaming=True` only
    `validation_files` give a validation set (read into memory).
    """
    _check_arguments(family, tokenizer, seq_len, validation_fraction, streaming, whole_word_masking)
    corpus = load_text_files(files, streaming=streaming)
    validation = load_text_files(validation_files) if validation_files is not None else None
    if validation is None and validation_fraction > 0:
        if streaming:
            logger.warning("A stream cannot be split by validation_fraction; pass validation_files for a "
                           "validation set. Training without one.")
        else:
            corpus, validation = _hold_out(corpus, validation_fraction, seed, minimum=2 if family == "bert" else 1)
    build = {"gpt": _gpt, "elmo": _elmo, "bert": _bert}[family]
    return build(tokenizer, corpus, validation, seq_len, seed=seed, num_proc=None if streaming else num_proc,
                 whole_word_masking=whole_word_masking)


def _check_arguments(family, tokenizer, seq_len, validation_fraction, streaming, whole_word_masking) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: use one of {FAMILIES}.")
    if streaming and family == "bert":
        raise ValueError(
            "streaming=True supports 'gpt' and 'elmo' only: BERT's NotNext pairs take their second half from "
            "a random other document of the whole corpus. Use streaming=False (or split the corpus into parts)."
        )
    if whole_word_masking and family != "bert":
        raise ValueError(f"whole_word_masking applies to BERT's masked LM only, not to family={family!r}.")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction} must lie in [0, 1); 0 holds out nothing.")
    minimum = {"bert": 5, "gpt": 2, "elmo": 3}[family]  # [CLS] A [SEP] B [SEP]; a target; <S> w </S>
    if not isinstance(seq_len, int) or seq_len < minimum:
        raise ValueError(f"seq_len={seq_len!r} is too short for {family}: use at least {minimum}.")
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < _UNBOUNDED_LENGTH and seq_len > limit:
        raise ValueError(
            f"seq_len={seq_len} is larger than the tokenizer's context, model_max_length={limit}; "
            f"use seq_len <= {limit} (or a model and tokenizer with a longer context)."
        )


def _hold_out(corpus: datasets.Dataset, fraction: float, seed: int, minimum: int):
    """(train, validation): a seeded random `fraction` of the documents, at least `minimum` on each side."""
    n_held_out = max(minimum, round(fraction * len(corpus)))
    if len(corpus) - n_held_out < minimum:
        raise ValueError(
            f"The corpus has {len(corpus)} documents: too few to hold out {n_held_out} for validation and keep "
            f"{minimum} for training. Pass validation_files, or validation_fraction=0 for no validation."
        )
    split = corpus.train_test_split(test_size=n_held_out, seed=seed)
    return split["train"], split["test"]


def _tokenize(documents, function, tokenizer, num_proc, features=None, **kwargs):
    """`function(batch, tokenizer, ...)` over the documents with `datasets.map`: batched, parallel, cached."""
    options = {"num_proc": num_proc, "desc": "Tokenizing"} if isinstance(documents, datasets.Dataset) else {}
    return documents.map(function, batched=True, remove_columns=["text"], features=features,
                         fn_kwargs={"tokenizer": tokenizer, **kwargs}, **options)


# ------------------------------------------------------------------------------------------------- GPT

def _gpt_token_ids(batch: dict, tokenizer) -> dict:
    """Each non-empty document's ids followed by the end-of-text id."""
    texts = ["\n".join(lines) for lines in map(sentences, batch["text"]) if lines]
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    return {"input_ids": [document + [tokenizer.eos_token_id] for document in ids]}


def _gpt(tokenizer, corpus, validation, seq_len, *, seed, num_proc, whole_word_masking) -> TrainingData:
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "GPT packing separates documents with the end-of-text token, but the tokenizer has none; add one "
            "with `tokenizer.add_special_tokens({'eos_token': '<|endoftext|>'})` (train_bpe_tokenizer has it)."
        )
    tokenized = _tokenize(corpus, _gpt_token_ids, tokenizer, num_proc)
    if isinstance(tokenized, datasets.IterableDataset):
        train = clm.stream_blocks(tokenized, seq_len)
    else:
        train = _nonempty(clm.pack_blocks(tokenized, seq_len), "training", seq_len)
    eval_dataset = None
    if validation is not None:
        eval_dataset = _nonempty(clm.pack_blocks(_tokenize(validation, _gpt_token_ids, tokenizer, num_proc),
                                                 seq_len), "validation", seq_len)
    return TrainingData(train, clm.collate_blocks, eval_dataset, _evaluator(clm.token_losses, clm.summarise),
                        clm.count_block_tokens)


def _nonempty(rows: datasets.Dataset, what: str, seq_len: int) -> datasets.Dataset:
    if len(rows) == 0:
        raise ValueError(
            f"The {what} text has fewer tokens than one block of seq_len={seq_len}; give more text or a smaller seq_len."
        )
    return rows


# ------------------------------------------------------------------------------------------------ ELMo

def _elmo_rows(batch: dict, tokenizer, seq_len: int) -> dict:
    return bilm.token_rows([line for text in batch["text"] for line in sentences(text)], tokenizer, seq_len)


_ELMO_FEATURES = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                    "char_ids": datasets.List(datasets.List(datasets.Value("int16")))})


def _elmo(tokenizer, corpus, validation, seq_len, *, seed, num_proc, whole_word_masking) -> TrainingData:
    collator = bilm.DataCollatorForBidirectionalLM(tokenizer)
    rows = {"tokenizer": tokenizer, "num_proc": num_proc, "features": _ELMO_FEATURES, "seq_len": seq_len}
    train = _tokenize(corpus, _elmo_rows, **rows)
    eval_dataset = _tokenize(validation, _elmo_rows, **rows) if validation is not None else None
    return TrainingData(train, collator, eval_dataset, _evaluator(bilm.direction_losses, bilm.summarise))


# ------------------------------------------------------------------------------------------------ BERT

def _sentence_token_ids(batch: dict, tokenizer) -> dict:
    """Each non-empty document as its sentences' token ids (no special tokens)."""
    documents = [lines for lines in map(sentences, batch["text"]) if lines]
    flat = [line for lines in documents for line in lines]
    ids = tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"] if flat else []
    starts = list(itertools.accumulate(map(len, documents), initial=0))
    return {"sentences": [ids[start:end] for start, end in zip(starts, starts[1:])]}


def _nsp_rows(tokenizer, documents, seq_len, seed, num_proc, first_example_id) -> datasets.Dataset:
    """NSP pairs of the documents, numbered from `first_example_id` (the number seeds each pair's masks)."""
    tokenized = _tokenize(documents, _sentence_token_ids, tokenizer, num_proc)
    examples = create_nsp_examples_from_ids(tokenized["sentences"], tokenizer, max_seq_length=seq_len, seed=seed)
    columns = ("input_ids", "token_type_ids", "next_sentence_label")
    rows = {column: [example[column] for example in examples] for column in columns}
    rows["example_id"] = list(range(first_example_id, first_example_id + len(examples)))
    return datasets.Dataset.from_dict(rows)


def _bert(tokenizer, corpus, validation, seq_len, *, seed, num_proc, whole_word_masking) -> TrainingData:
    collator = DataCollatorForBertPretraining(tokenizer, whole_word_mask=whole_word_masking, seed=seed)
    train = _nsp_rows(tokenizer, corpus, seq_len, seed, num_proc, first_example_id=0)
    eval_dataset = None
    if validation is not None:
        eval_dataset = _nsp_rows(tokenizer, validation, seq_len, seed, num_proc, first_example_id=len(train))
    return TrainingData(train, collator, eval_dataset, _evaluator(_bert_statistics, _bert_summary))


def _bert_statistics(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row: [MLM NLL sum, masked tokens, correct masked, NSP NLL, NSP correct, 1], float64."""
    outputs = model(**batch)
    labels = batch["labels"]
    selected = labels != -100
    logits = outputs.prediction_logits
    if logits.dim() == 3:  # a sparse MLM head already returns the labelled positions only (row-major)
        logits = logits[selected]
    logits, targets, rows = logits.float(), labels[selected], selected.nonzero()[:, 0]
    per_row = torch.zeros(len(labels), 2, dtype=torch.float64, device=labels.device)
    token_stats = torch.stack([F.cross_entropy(logits, targets, reduction="none"),
                               (logits.argmax(-1) == targets).float()], dim=1)
    per_row.index_add_(0, rows, token_stats.double())
    nsp_logits, nsp_labels = outputs.seq_relationship_logits.float(), batch["next_sentence_label"]
    return torch.stack([
        per_row[:, 0], selected.sum(1).double(), per_row[:, 1],
        F.cross_entropy(nsp_logits, nsp_labels, reduction="none").double(),
        (nsp_logits.argmax(-1) == nsp_labels).double(), torch.ones_like(per_row[:, 0]),
    ], dim=1)


def _bert_summary(totals: torch.Tensor) -> dict[str, float]:
    mlm_loss, nsp_loss = float(totals[0] / totals[1]), float(totals[3] / totals[5])
    return {"loss": mlm_loss + nsp_loss, "mlm_loss": mlm_loss, "mlm_accuracy": float(totals[2] / totals[1]),
            "nsp_loss": nsp_loss, "nsp_accuracy": float(totals[4] / totals[5])}


# ------------------------------------------------------------------------------------------ evaluation

def _evaluator(row_statistics, summarise):
    """An `evaluate(model, dataloader, accelerator)` summing per-row statistics over every process.

    `row_statistics(model, batch)` gives a float64 [rows, k] tensor of sums and counts; gathering rows
    (gather_for_metrics drops the duplicates that even out the last batch) and summing makes the result
    independent of batch size and process count; `summarise` turns the k totals into named floats.
    """

    def evaluate(model, dataloader, accelerator) -> dict[str, float]:
        was_training = model.training
        model.eval()
        totals = 0
        try:
            with torch.no_grad():
                for batch in dataloader:
                    with accelerator.autocast():
                        statistics = row_statistics(model, batch)
                    totals = totals + accelerator.gather_for_metrics(statistics).sum(0)
        finally:
            model.train(was_training)
        return summarise(totals.cpu())

    return evaluate

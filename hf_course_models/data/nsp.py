"""Next-sentence-prediction pairs from documents, built as BERT's create_pretraining_data builds them.

Sentences are collected until a target length is reached, the chunk is split at a random point into
A and B, and half of the time B is replaced by text from another document (NotNext). Masking is
left to `DataCollatorForBertPretraining`, which draws new masks every epoch.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

IS_NEXT, NOT_NEXT = 0, 1  # transformers' BertForPreTraining convention for `next_sentence_label`


def create_nsp_examples(
    documents: Sequence[Sequence[str]],
    tokenizer,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    nsp_probability: float = 0.5,
    seed: int | None = None,
    dupe_factor: int = 1,
) -> list[dict]:
    """`[CLS] A [SEP] B [SEP]` examples from documents given as lists of sentences, in shuffled order.

    Each dict holds `input_ids`, `token_type_ids` (0 up to the first [SEP], 1 after),
    `next_sentence_label` (0 = IsNext, 1 = NotNext) and `document_index` (the document A comes
    from); NotNext examples also hold `random_document_index`, the other document B comes from.
    Every document is gone through `dupe_factor` times, with different splits each time.

    One departure from create_pretraining_data: a chunk of a single sentence is cut inside that
    sentence, where the original forces NotNext, which pushes the NotNext share above
    `nsp_probability` (for short targets, far above).
    """
    _validate_documents(documents)
    tokenized = [_tokenize(document, tokenizer) for document in documents]
    return create_nsp_examples_from_ids(tokenized, tokenizer, max_seq_length, short_seq_prob, nsp_probability,
                                        seed, dupe_factor)


def create_nsp_examples_from_ids(
    documents: Sequence[Sequence[Sequence[int]]],
    tokenizer,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    nsp_probability: float = 0.5,
    seed: int | None = None,
    dupe_factor: int = 1,
) -> list[dict]:
    """`create_nsp_examples` for documents already tokenised: lists of sentences, each a list of token ids
    without special tokens (as a `datasets.map` over a corpus gives them); empty sentences are skipped."""
    _validate(tokenizer, max_seq_length, short_seq_prob, nsp_probability, dupe_factor)
    tokenized = [[list(sentence) for sentence in document if len(sentence)] for document in documents]
    pool = [index for index, document in enumerate(tokenized) if document]
    if nsp_probability > 0 and len(pool) < 2:
        raise ValueError(
            f"NotNext pairs take B from a different document, but only {len(pool)} of the {len(documents)} "
            "documents hold any text; give at least two (blank lines separate documents in a corpus file)."
        )
    rng = random.Random(seed)
    examples = []
    for _ in range(dupe_factor):
        for slot in range(len(pool)):
            examples += _examples_from_document(tokenized, pool, slot, max_seq_length - 3, short_seq_prob,
                                                nsp_probability, tokenizer, rng)
    rng.shuffle(examples)
    return examples


def _validate_documents(documents) -> None:
    if any(isinstance(document, str) for document in documents):
        raise ValueError(
            "Each document must be a list of sentences, not a string: pass [[sentence, ...], ...] "
            "(hf_course_models.data.corpus.read_documents returns this form)."
        )


def _validate(tokenizer, max_seq_length, short_seq_prob, nsp_probability, dupe_factor) -> None:
    if max_seq_length < 5:
        raise ValueError(
            f"max_seq_length={max_seq_length} leaves no room for A and B next to [CLS] and two [SEP]; "
            "use 5 or more (BERT uses 128, then 512)."
        )
    for name, value in (("short_seq_prob", short_seq_prob), ("nsp_probability", nsp_probability)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name}={value} must be a probability between 0 and 1.")
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor={dupe_factor} must be at least 1 (passes over the documents).")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError("The tokenizer needs [CLS] and [SEP] tokens; add them with add_special_tokens.")


def _tokenize(document: Sequence[str], tokenizer) -> list[list[int]]:
    """Token ids of each sentence (no special tokens); empty sentences dropped."""
    if not document:
        return []
    # verbose=False: a sentence longer than the model is fine here, pairs are truncated later.
    ids = tokenizer(list(document), add_special_tokens=False, verbose=False)["input_ids"]
    return [sentence for sentence in ids if sentence]


def _examples_from_document(documents, pool, slot, max_num_tokens, short_seq_prob, nsp_probability,
                            tokenizer, rng) -> list[dict]:
    document = documents[pool[slot]]
    # Mostly fill the sequence; sometimes aim shorter, so the model also sees short inputs. Drawn once
    # per document and pass, as the original does.
    target = rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens
    examples, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if len(chunk) > 1 or len(chunk[0]) > 1:  # a lone one-token sentence makes no pair
                example, used = _pair(chunk, documents, pool, slot, target, max_num_tokens, nsp_probability,
                                      tokenizer, rng)
                examples.append(example)
                i -= len(chunk) - used  # unused sentences go back: they start the next chunk
            chunk, length = [], 0
        i += 1
    return examples


def _pair(chunk, documents, pool, slot, target, max_num_tokens, nsp_probability, tokenizer, rng):
    """One example from a chunk of sentences, and how many of the chunk's sentences it used."""
    tokens_a, tokens_b, sentences_in_a = _split(chunk, rng)
    example = {"next_sentence_label": IS_NEXT, "document_index": pool[slot]}
    used = len(chunk)
    if rng.random() < nsp_probability:
        k = rng.randrange(len(pool) - 1)
        other = pool[k + (k >= slot)]  # any document but this one
        tokens_b = _sentences_from(documents[other], target - len(tokens_a), rng)
        example.update(next_sentence_label=NOT_NEXT, random_document_index=other)
        used = sentences_in_a
    _truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    example["input_ids"] = [cls, *tokens_a, sep, *tokens_b, sep]
    example["token_type_ids"] = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    return example, used


def _split(chunk: list[list[int]], rng: random.Random) -> tuple[list[int], list[int], int]:
    """A and B from a chunk of sentences, cut between sentences (inside the only one if just one)."""
    if len(chunk) == 1:
        cut = rng.randint(1, len(chunk[0]) - 1)
        return chunk[0][:cut], chunk[0][cut:], 1
    a_end = rng.randint(1, len(chunk) - 1)
    tokens_a = [token for sentence in chunk[:a_end] for token in sentence]
    tokens_b = [token for sentence in chunk[a_end:] for token in sentence]
    return tokens_a, tokens_b, a_end


def _sentences_from(document: list[list[int]], target_length: int, rng: random.Random) -> list[int]:
    """Sentences from a random start in `document` until `target_length` tokens (at least one sentence)."""
    tokens = []
    for sentence in document[rng.randint(0, len(document) - 1):]:
        tokens += sentence
        if len(tokens) >= target_length:
            break
    return tokens


def _truncate_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Shorten the longer side, one token at a time from the front or the back at random, until both fit."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        del longer[0 if rng.random() < 0.5 else -1]

"""create_nsp_examples: BERT's next-sentence pairs, checked over tens of thousands of examples."""
import importlib.resources
import re
import string
from collections import Counter

import pytest
from transformers import BertTokenizer

from hf_course_models.data.corpus import read_documents
from hf_course_models.data.nsp import create_nsp_examples

MAX_SEQ_LENGTH = 32


@pytest.fixture(scope="module")
def documents():
    """The embedded corpus: 154 sonnets and 313 Tang poems, one document each."""
    corpora = importlib.resources.files("hf_course_models") / "corpora"
    return read_documents([corpora / "sonnets.txt", corpora / "tang300.txt"])


@pytest.fixture(scope="module")
def tokenizer(documents):
    """A WordPiece vocabulary built deterministically: every character, `##` + each letter, and the
    2000 commonest English words whole (a trained one breaks ties differently run to run)."""
    text = " ".join(sentence for document in documents for sentence in document).lower()
    counts = Counter(re.findall(r"[a-z]+", text))
    words = sorted(counts, key=lambda word: (-counts[word], word))[:2000]
    chars = sorted(set(text) - set(string.whitespace))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
    vocab += ["##" + letter for letter in string.ascii_lowercase] + [word for word in words if len(word) > 1]
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})


@pytest.fixture(scope="module")
def examples(documents, tokenizer):
    return create_nsp_examples(documents, tokenizer, max_seq_length=MAX_SEQ_LENGTH, seed=0, dupe_factor=18)


def split(example, tokenizer):
    """(A, B) token ids of one example."""
    ids = example["input_ids"]
    first_sep = ids.index(tokenizer.sep_token_id)
    return ids[1:first_sep], ids[first_sep + 1 : -1]


def as_text(ids):
    """Token ids as a string, one character per token, so that str.find finds token runs."""
    return "".join(map(chr, ids))


def test_half_of_the_pairs_are_not_next(examples):
    assert len(examples) >= 40_000
    not_next = sum(example["next_sentence_label"] for example in examples) / len(examples)
    print(f"\n{len(examples)} pairs, NotNext {not_next:.2%}")
    assert abs(not_next - 0.5) <= 0.01


def test_layout_is_cls_a_sep_b_sep_with_segment_ids(examples, tokenizer):
    for example in examples:
        ids, types = example["input_ids"], example["token_type_ids"]
        a, b = split(example, tokenizer)
        assert len(ids) <= MAX_SEQ_LENGTH and len(a) >= 1 and len(b) >= 1
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.sep_token_id not in a + b and tokenizer.cls_token_id not in a + b
        assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert example["next_sentence_label"] in (0, 1)
    lengths = [len(example["input_ids"]) for example in examples]
    assert max(lengths) == MAX_SEQ_LENGTH and sum(lengths) / len(lengths) > 0.8 * MAX_SEQ_LENGTH


def test_is_next_follows_a_and_not_next_comes_from_another_document(examples, documents, tokenizer):
    streams = [as_text(tokenizer(" ".join(document), add_special_tokens=False)["input_ids"])
               for document in documents]
    adjacent = gapped = 0
    for example in examples:
        a, b = map(as_text, split(example, tokenizer))
        source = streams[example["document_index"]]
        assert a in source
        if example["next_sentence_label"] == 1:
            other = example["random_document_index"]
            assert other != example["document_index"]
            assert b in streams[other]
            continue
        assert "random_document_index" not in example
        if a + b in source:
            adjacent += 1
        else:  # only truncation (A's end or B's start trimmed) may open a gap between them
            assert len(a) + len(b) == MAX_SEQ_LENGTH - 3
            assert source.find(b, source.find(a) + len(a)) >= 0, "B of an IsNext pair must come after A"
            gapped += 1
    assert adjacent > 1000 and gapped > 1000  # both the plain and the truncated case occurred


def test_single_sentence_documents_still_split_half_and_half(tokenizer):
    # The original algorithm makes every pair of a one-sentence chunk NotNext.
    words = "the quiet river carried autumn leaves past the old mill toward the sea".split()
    documents = [[" ".join(words[i % 7 :] + words[: i % 7] + words)] for i in range(200)]
    examples = create_nsp_examples(documents, tokenizer, max_seq_length=16, seed=3, dupe_factor=25)
    assert len(examples) == 5000
    assert all(len(example["input_ids"]) == 16 for example in examples)
    assert abs(sum(example["next_sentence_label"] for example in examples) / len(examples) - 0.5) <= 0.03


def test_same_seed_same_examples_other_seed_others(documents, tokenizer):
    first = create_nsp_examples(documents[:60], tokenizer, seed=7)
    assert first == create_nsp_examples(documents[:60], tokenizer, seed=7)
    assert first != create_nsp_examples(documents[:60], tokenizer, seed=8)


def test_probability_extremes_short_sequences_and_empty_documents(documents, tokenizer):
    for probability, label in ((0.0, 0), (1.0, 1)):
        examples = create_nsp_examples(documents, tokenizer, nsp_probability=probability)
        assert {example["next_sentence_label"] for example in examples} == {label}
    assert create_nsp_examples(documents[:1], tokenizer, nsp_probability=0.0)  # one document is enough then

    def mean_length(short_seq_prob):
        examples = create_nsp_examples(documents, tokenizer, short_seq_prob=short_seq_prob, seed=0)
        return sum(len(e["input_ids"]) for e in examples) / len(examples)

    assert mean_length(1.0) < 0.75 * mean_length(0.0)

    with_blanks = [documents[0], [], documents[1], [""], documents[2]]
    examples = create_nsp_examples(with_blanks, tokenizer, seed=0, dupe_factor=20)
    assert {e["document_index"] for e in examples} == {0, 2, 4}
    assert {e.get("random_document_index", 0) for e in examples} == {0, 2, 4}


@pytest.mark.parametrize(
    "docs, kwargs, match",
    [
        ([["Only one document here.", "It has two sentences."]], {}, "at least two"),
        ([["A fine document."], []], {}, "at least two"),
        (["Documents given as plain strings.", "Not lists of sentences."], {}, "list of sentences"),
        ([["One."], ["Two."]], {"max_seq_length": 4}, "max_seq_length=4"),
        ([["One."], ["Two."]], {"nsp_probability": 1.5}, "nsp_probability=1.5"),
        ([["One."], ["Two."]], {"short_seq_prob": -0.1}, "short_seq_prob=-0.1"),
        ([["One."], ["Two."]], {"dupe_factor": 0}, "dupe_factor=0"),
    ],
)
def test_bad_input_is_named(docs, kwargs, match, tokenizer):
    with pytest.raises(ValueError, match=match):
        create_nsp_examples(docs, tokenizer, **kwargs)

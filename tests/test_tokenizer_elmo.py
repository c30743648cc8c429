"""ELMo's tokenizer: words and bilm-tf character ids, padding, Chinese (characters or jieba), vocabularies, reloads."""
import copy
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import jieba
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, DataCollatorWithPadding

from elmo_fixtures import elmo_fixture_dir
from hf_course_models.corpora import corpus_files
from hf_course_models.tokenization.elmo import BOS_CHAR_IDS, EOS_CHAR_IDS, HfcmElmoTokenizer, elmo_char_ids
from hf_course_models.tokenization.elmo_vocab import elmo_tokenizer_from_vocab, train_elmo_tokenizer

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Shall I compare thee to a summer's day?",
    "The dog sleeps, the fox runs, and the day ends.",
    "A summer's day is short; the lazy dog sleeps all day.",
    "Thou art more lovely and more temperate.",
]
CHINESE = ["我爱北京天安门。", "今天天气很好，我们去公园散步。", "春眠不觉晓，处处闻啼鸟。", "我们在北京学习中文。"]
SENTENCES = ["Shall I compare thee to a summer's day?", "", "春眠不觉晓，处处闻啼鸟。", "the dog",
             "Floccinaucinihilipilification-and-antidisestablishmentarianism-combined 北京 😀"]
LONG_WORD = "a" * 60
CUT_INSIDE_CHARACTER = "a" + "中" * 20  # 61 UTF-8 bytes: the 48-byte cut keeps 2 of the 16th character's 3
CUT_INSIDE_ACCENT = "a" + "é" * 24  # one word for the tokenizer (no Chinese split); 49 bytes, cut inside the last é


def reference_char_ids(word):
    """bilm-tf's UnicodeCharsVocabulary._convert_word_to_char_ids (0-based ids), plus one as its Batcher adds."""
    max_word_length, bow_char, eow_char, pad_char = 50, 258, 259, 260
    code = [pad_char] * max_word_length
    word_encoded = word.encode("utf-8", "ignore")[: max_word_length - 2]
    code[0] = bow_char
    for k, chr_id in enumerate(word_encoded, start=1):
        code[k] = chr_id
    code[len(word_encoded) + 1] = eow_char
    return [c + 1 for c in code]


@pytest.fixture(scope="module")
def tokenizer():
    return train_elmo_tokenizer(iterator=ENGLISH * 2 + CHINESE * 2, vocab_size=300)


@pytest.fixture(scope="module")
def jieba_tokenizer():
    return train_elmo_tokenizer(iterator=ENGLISH * 2 + CHINESE * 2, vocab_size=300, chinese_segmentation="jieba")


def test_char_ids_of_words_and_sentence_boundaries():
    assert elmo_char_ids("Hello") == [259, 73, 102, 109, 109, 112, 260] + [261] * 43
    assert elmo_char_ids("北") == [259, 0xE5 + 1, 0x8C + 1, 0x97 + 1, 260] + [261] * 45  # 3 UTF-8 bytes
    assert elmo_char_ids("😀") == [259, 0xF0 + 1, 0x9F + 1, 0x98 + 1, 0x80 + 1, 260] + [261] * 44
    assert elmo_char_ids(LONG_WORD) == [259] + [ord("a") + 1] * 48 + [260]
    cut = elmo_char_ids(CUT_INSIDE_CHARACTER)
    assert bytes(c - 1 for c in cut[1:49]) == CUT_INSIDE_CHARACTER.encode("utf-8")[:48] and cut[49] == 260
    assert cut[-3:-1] == [0xE4 + 1, 0xB8 + 1]  # the first two bytes of 中 (E4 B8 AD): cut mid-character
    assert elmo_char_ids(CUT_INSIDE_ACCENT)[-2] == 0xC3 + 1  # the first of é's two bytes (C3 A9)
    for word in ["Hello", "北京", "😀", "", LONG_WORD, CUT_INSIDE_CHARACTER, CUT_INSIDE_ACCENT, "é" * 25, "x" * 48,
                 "x" * 49]:
        assert elmo_char_ids(word) == reference_char_ids(word), word
    assert list(BOS_CHAR_IDS) == [259, 257, 260] + [261] * 47
    assert list(EOS_CHAR_IDS) == [259, 258, 260] + [261] * 47


def test_encoding_gives_reference_char_ids_and_warns_about_cut_words(tokenizer, caplog):
    text = f"Hello 北京 😀 {LONG_WORD} {CUT_INSIDE_CHARACTER} {CUT_INSIDE_ACCENT} again {LONG_WORD}"
    with caplog.at_level(logging.WARNING, logger="hf_course_models.tokenization.elmo"):
        encoding = tokenizer(text)
    words = ["Hello", "北", "京", "😀", LONG_WORD, "a", *"中" * 20, CUT_INSIDE_ACCENT, "again", LONG_WORD]
    assert encoding["char_ids"] == [list(BOS_CHAR_IDS)] + [reference_char_ids(w) for w in words] + [list(EOS_CHAR_IDS)]
    assert len(caplog.records) == 1  # one warning per call, naming each cut word once
    assert f"[{LONG_WORD!r}, {CUT_INSIDE_ACCENT!r}]" in caplog.messages[0] and "48" in caplog.messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_course_models.tokenization.elmo"):
        tokenizer(["Hello", "a short sentence"])
    assert not caplog.records


def test_model_inputs_and_special_tokens(tokenizer):
    assert tokenizer.model_input_names == ["input_ids", "attention_mask", "char_ids"]
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == (
        "<pad>", "<S>", "</S>", "<UNK>")
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        0, 1, 2, 3)
    encoding = tokenizer("the dog")
    assert set(encoding) == {"input_ids", "attention_mask", "char_ids"}  # no token_type_ids
    assert tokenizer.convert_ids_to_tokens(encoding["input_ids"]) == ["<S>", "the", "dog", "</S>"]
    assert tokenizer.tokenize("the dog") == ["the", "dog"]
    assert tokenizer("the dog", add_special_tokens=False)["char_ids"] == [reference_char_ids("the"),
                                                                          reference_char_ids("dog")]
    assert tokenizer("the <S> dog")["char_ids"][2] == list(BOS_CHAR_IDS)  # as bilm-tf reads a literal <S>
    tensors = tokenizer("the dog", return_tensors="pt")
    assert tensors["char_ids"].shape == (1, 4, 50) and tensors["char_ids"][0].tolist() == encoding["char_ids"]


def test_unknown_word_keeps_its_own_characters(tokenizer):
    encoding = tokenizer("the zebra")
    assert encoding["input_ids"] == [1, tokenizer.convert_tokens_to_ids("the"), 3, 2]
    assert encoding["char_ids"][2] == reference_char_ids("zebra")
    assert tokenizer("the quagga")["char_ids"][2] == reference_char_ids("quagga")


def test_cased_by_default_and_lowercasing_applies_to_characters_too(tokenizer):
    assert tokenizer("The the")["input_ids"][1] != tokenizer("The the")["input_ids"][2]
    assert tokenizer("The")["char_ids"][1] == reference_char_ids("The")
    lower = train_elmo_tokenizer(iterator=ENGLISH * 2, vocab_size=60, lowercase=True)
    assert "The" not in lower.get_vocab() and "the" in lower.get_vocab()
    encoding = lower("The THE")
    assert encoding["input_ids"][1] == encoding["input_ids"][2] == lower.convert_tokens_to_ids("the")
    assert encoding["char_ids"][1] == encoding["char_ids"][2] == reference_char_ids("the")


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_equals_each_sentence_alone(tokenizer, jieba_tokenizer, side):
    for tok in (tokenizer, jieba_tokenizer):
        batch = tok(SENTENCES, padding=True, padding_side=side, return_tensors="pt")
        length = max(len(tok(s)["input_ids"]) for s in SENTENCES)
        assert batch["char_ids"].shape == (len(SENTENCES), length, 50) and batch["char_ids"].dtype == torch.long
        for row, sentence in enumerate(SENTENCES):
            alone = tok(sentence)
            n = len(alone["input_ids"])
            real = slice(length - n, length) if side == "left" else slice(0, n)
            padding = slice(0, length - n) if side == "left" else slice(n, length)
            assert batch["input_ids"][row, real].tolist() == alone["input_ids"]
            assert batch["char_ids"][row, real].tolist() == alone["char_ids"]
            assert batch["attention_mask"][row, real].tolist() == [1] * n
            assert batch["input_ids"][row, padding].eq(0).all() and batch["attention_mask"][row, padding].eq(0).all()
            assert batch["char_ids"][row, padding].eq(0).all()  # padding rows are all-zero


def test_empty_sentences(tokenizer):
    assert tokenizer("") == {"input_ids": [1, 2], "attention_mask": [1, 1],
                             "char_ids": [list(BOS_CHAR_IDS), list(EOS_CHAR_IDS)]}
    assert tokenizer("   ")["input_ids"] == [1, 2]
    batch = tokenizer(["", ""], padding=True, return_tensors="pt")
    assert batch["char_ids"].shape == (2, 2, 50) and batch["attention_mask"].eq(1).all()


def test_pad_and_data_collator_pad_char_ids(tokenizer):
    features = [tokenizer(sentence) for sentence in SENTENCES]
    for side in ("right", "left"):
        expected = tokenizer(SENTENCES, padding=True, padding_side=side, return_tensors="pt")
        padded = tokenizer.pad(features, padding_side=side, return_tensors="pt")
        assert set(padded) == set(expected)
        for key in expected:
            assert torch.equal(padded[key], expected[key]), (side, key)
    collated = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)(features)
    assert collated["char_ids"].shape == (len(SENTENCES), 16, 50)  # 15 tokens at most, padded to 16
    expected = tokenizer(SENTENCES, padding=True, pad_to_multiple_of=8, return_tensors="pt")
    assert all(torch.equal(collated[key], expected[key]) for key in expected)
    # tensors in, tensors out, padded to a fixed length
    fixed = tokenizer.pad({"input_ids": torch.tensor([1, 5, 2]), "char_ids": torch.ones(3, 50, dtype=torch.long)},
                          padding="max_length", max_length=5)
    assert fixed["char_ids"].tolist() == [[1] * 50] * 3 + [[0] * 50] * 2 and fixed["input_ids"].tolist() == [
        1, 5, 2, 0, 0]


def test_truncation_and_overflow_keep_sentence_boundaries(tokenizer):
    text = "the quick brown fox jumps over the lazy dog"
    truncated = tokenizer(text, truncation=True, max_length=5)
    assert tokenizer.convert_ids_to_tokens(truncated["input_ids"]) == ["<S>", "the", "quick", "brown", "</S>"]
    assert truncated["char_ids"] == [list(BOS_CHAR_IDS)] + [reference_char_ids(w) for w in text.split()[:3]] + [
        list(EOS_CHAR_IDS)]
    from_the_left = copy.deepcopy(tokenizer)
    from_the_left.truncation_side = "left"
    left = from_the_left(text, truncation=True, max_length=4)
    assert from_the_left.convert_ids_to_tokens(left["input_ids"]) == ["<S>", "lazy", "dog", "</S>"]
    assert left["char_ids"][1:3] == [reference_char_ids("lazy"), reference_char_ids("dog")]

    windows = tokenizer([text, "the dog"], truncation=True, max_length=6, stride=1, return_overflowing_tokens=True)
    words = text.split()
    assert windows["overflow_to_sample_mapping"] == [0, 0, 0, 1]
    expected_words = [words[0:4], words[3:7], words[6:9], ["the", "dog"]]
    for ids, char_ids, window in zip(windows["input_ids"], windows["char_ids"], expected_words):
        assert ids[0] == 1 and ids[-1] == 2
        assert char_ids == [list(BOS_CHAR_IDS)] + [reference_char_ids(w) for w in window] + [list(EOS_CHAR_IDS)]


def test_pairs_and_pre_split_words(tokenizer):
    pair = tokenizer("the dog", "北京 zebra")
    assert tokenizer.convert_ids_to_tokens(pair["input_ids"]) == [
        "<S>", "the", "dog", "</S>", "<S>", "北", "京", "<UNK>", "</S>"]
    assert pair["char_ids"] == [list(BOS_CHAR_IDS), reference_char_ids("the"), reference_char_ids("dog"),
                                list(EOS_CHAR_IDS), list(BOS_CHAR_IDS), reference_char_ids("北"),
                                reference_char_ids("京"), reference_char_ids("zebra"), list(EOS_CHAR_IDS)]
    words = [["the", "zebra's", "北京"], ["dog"]]
    batch = tokenizer(words, is_split_into_words=True, padding=True)
    assert batch["char_ids"][0] == [list(BOS_CHAR_IDS)] + [reference_char_ids(w) for w in
                                                         ["the", "zebra", "'", "s", "北", "京"]] + [list(EOS_CHAR_IDS)]
    assert batch["char_ids"][1][:3] == [list(BOS_CHAR_IDS), reference_char_ids("dog"), list(EOS_CHAR_IDS)]
    assert batch.word_ids(0) == [None, 0, 1, 1, 1, 2, 2, None]


def test_chinese_as_characters_or_jieba_words_with_offsets_into_the_text(tokenizer, jieba_tokenizer):
    text = "我爱北京天安门"
    assert tokenizer.tokenize(text) == list(text)
    segmenter = HfcmElmoTokenizer(chinese_segmentation="jieba")
    assert segmenter.split_words([text]) == [jieba.lcut(text)] == [["我", "爱", "北京", "天安门"]]

    mixed = "Hi, 我爱北京天安门！ Tom's 今天天气很好。"
    expected = ["Hi", ",", *jieba.lcut("我爱北京天安门"), "！", "Tom", "'", "s", *jieba.lcut("今天天气很好"), "。"]
    encoding = jieba_tokenizer(mixed, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    assert [mixed[start:end] for start, end in offsets[1:-1]] == expected
    assert encoding["char_ids"][1:-1] == [reference_char_ids(word) for word in expected]
    assert encoding.word_ids() == [None, *range(len(expected)), None]
    assert encoding.token_to_chars(3) == (offsets[3][0], offsets[3][1])
    by_characters = tokenizer(mixed, return_offsets_mapping=True)
    assert [mixed[s:e] for s, e in by_characters["offset_mapping"][1:-1]] == [
        "Hi", ",", *"我爱北京天安门", "！", "Tom", "'", "s", *"今天天气很好", "。"]


def test_decode_joins_words_with_spaces_but_chinese_without(tokenizer, jieba_tokenizer):
    text = "Shall I compare thee to a summer's day? 春眠不觉晓，处处闻啼鸟。 the dog"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == (
        "Shall I compare thee to a summer ' s day ? 春眠不觉晓，处处闻啼鸟。 the dog")
    assert tokenizer.decode(ids).startswith("<S> Shall") and tokenizer.decode(ids).endswith("dog </S>")
    jieba_ids = jieba_tokenizer("我们在北京学习中文。")["input_ids"]
    assert jieba_tokenizer.decode(jieba_ids, skip_special_tokens=True) == "我们在北京学习中文。"
    assert tokenizer.decode(tokenizer("the zebra")["input_ids"]) == "<S> the <UNK> </S>"


def test_trained_vocabulary_size_and_order():
    corpus = ENGLISH * 3 + ["The fox, the dog and the day.", "A day; a dog."]
    # ASCII text: a word is a run of letters/digits, every other non-space character is a token.
    counts = Counter(w for line in corpus for w in re.findall(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]", line))
    ranked = sorted((w for w, n in counts.items() if n >= 3), key=lambda w: (-counts[w], w))
    assert len(ranked) > 20
    trained = train_elmo_tokenizer(iterator=corpus, vocab_size=20, min_frequency=3)
    assert trained.convert_ids_to_tokens(list(range(len(trained)))) == ["<pad>", "<S>", "</S>", "<UNK>", *ranked[:16]]
    everything = train_elmo_tokenizer(iterator=corpus, vocab_size=1000, min_frequency=3)
    assert len(everything) == 4 + len(ranked)

    embedded = train_elmo_tokenizer(corpus_files(), vocab_size=500)
    assert len(embedded) == 500 and embedded.tokenize("明月") == ["明", "月"]


def test_jieba_vocabulary_counts_jieba_words():
    corpus = CHINESE * 3 + ["北京欢迎你。", "我爱北京。"]
    counts = Counter(w for line in corpus for w in jieba.lcut(line))
    ranked = sorted((w for w, n in counts.items() if n >= 2), key=lambda w: (-counts[w], w))
    trained = train_elmo_tokenizer(iterator=corpus, vocab_size=100, chinese_segmentation="jieba")
    assert trained.convert_ids_to_tokens(list(range(len(trained)))) == ["<pad>", "<S>", "</S>", "<UNK>", *ranked]
    assert "北京" in ranked and "天安门" in ranked


def settings(tok):
    return {
        "class": type(tok).__name__,
        "chinese_segmentation": tok.chinese_segmentation,
        "do_lower_case": tok.do_lower_case,
        "split_punctuation": tok.split_punctuation,
        "padding_side": tok.padding_side,
        "model_max_length": tok.model_max_length,
        "special_tokens": tok.all_special_tokens,
        "special_ids": tok.all_special_ids,
    }


def encodings(tok):
    """Everything a user sees from the tokenizer on our sample inputs."""
    return {
        "single": [dict(tok(text, return_offsets_mapping=True)) for text in SENTENCES],
        "batch": dict(tok(SENTENCES, padding=True)),
        "pair": dict(tok(SENTENCES[0], SENTENCES[2])),
        "truncated": dict(tok(SENTENCES[0], truncation=True, max_length=6)),
        "decoded": tok.decode(tok(SENTENCES[2])["input_ids"], skip_special_tokens=True),
        "vocab": tok.get_vocab(),
    }


@pytest.fixture(scope="module")
def variants(tokenizer, jieba_tokenizer):
    lowercased = train_elmo_tokenizer(iterator=ENGLISH * 2, vocab_size=40, lowercase=True, split_punctuation=False,
                                      model_max_length=64)
    return {"characters": tokenizer, "jieba": jieba_tokenizer, "lowercased": lowercased}


def test_save_and_reload_is_identical(variants, tmp_path):
    for name, tok in variants.items():
        tok(SENTENCES[:2], padding=True, padding_side="left")  # leaves "Left" in the backend; the config must win
        tok.save_pretrained(tmp_path / name)
        config = json.loads((tmp_path / name / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert config["tokenizer_class"] == "HfcmElmoTokenizer"
        assert config["chinese_segmentation"] == tok.chinese_segmentation
        Tokenizer.from_file(str(tmp_path / name / "tokenizer.json"))  # the backend alone is serialisable
        reloaded = AutoTokenizer.from_pretrained(tmp_path / name)
        assert settings(reloaded) == settings(tok), name
        assert encodings(reloaded) == encodings(tok), name
        assert reloaded(SENTENCES[:2], padding=True)["attention_mask"][1][-1] == 0  # still right-padded
    assert variants["jieba"].tokenize("我们在北京学习中文") == jieba.lcut("我们在北京学习中文")


BLOCK_OUR_PACKAGE = textwrap.dedent("""
    import importlib.abc, json, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hf_course_models":
                raise ImportError("hf_course_models is blocked in this process")

    sys.meta_path.insert(0, Blocker())
    from transformers import AutoTokenizer
    SENTENCES = json.loads(sys.argv[1])
    results = {}
    for directory in sys.argv[2:]:
        tok = AutoTokenizer.from_pretrained(directory, trust_remote_code=True)
        results[directory] = [type(tok).__module__, settings(tok), encodings(tok)]
    print(json.dumps(results))
""")


def test_remote_code_reload_where_our_package_cannot_be_imported(variants, tmp_path):
    previous = HfcmElmoTokenizer._auto_class
    HfcmElmoTokenizer.register_for_auto_class("AutoTokenizer")  # what saving with remote code does
    try:
        for name, tok in variants.items():
            tok.save_pretrained(tmp_path / name)
    finally:
        HfcmElmoTokenizer._auto_class = previous
    assert sorted(os.listdir(tmp_path / "jieba")) == ["elmo.py", "tokenizer.json", "tokenizer_config.json"]
    helpers = "\n".join(inspect.getsource(helper) for helper in (settings, encodings))
    result = subprocess.run(
        [sys.executable, "-c", helpers + BLOCK_OUR_PACKAGE, json.dumps(SENTENCES),
         *(str(tmp_path / name) for name in variants)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    for name, tok in variants.items():
        module, *rest = reloaded[str(tmp_path / name)]
        assert module.startswith("transformers_modules"), module
        assert rest == json.loads(json.dumps([settings(tok), encodings(tok)])), name


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bilm_tf_vocab_file(tmp_path):
    lines = ["the", "<S>", "!!!MAXTERMID", "U.S.", "</S>", "dog", "<UNK>", "--", "北京"]
    tok = elmo_tokenizer_from_vocab(write_lines(tmp_path / "vocab.txt", lines), split_punctuation=False)
    ids = {"the": 0, "<S>": 1, "U.S.": 2, "</S>": 3, "dog": 4, "<UNK>": 5, "--": 6, "北京": 7, "<pad>": 8}
    assert tok.get_vocab() == ids  # line numbers, !!!MAXTERMID taking none (as bilm-tf), <pad> after the last
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (1, 3, 5, 8)
    assert tok("the U.S. dog -- cat")["input_ids"] == [1, 0, 2, 4, 6, 5, 3]
    table = tok.vocabulary_char_ids()
    assert table[1] == list(BOS_CHAR_IDS) and table[3] == list(EOS_CHAR_IDS) and table[8] == [0] * 50
    assert table[2] == reference_char_ids("U.S.") and table[5] == reference_char_ids("<UNK>")

    with_pad = elmo_tokenizer_from_vocab(write_lines(tmp_path / "pad.txt", ["<pad>", "<S>", "</S>", "<UNK>", "a"]))
    assert with_pad.get_vocab() == {"<pad>": 0, "<S>": 1, "</S>": 2, "<UNK>": 3, "a": 4}


def test_real_bilm_tf_vocab_file():
    reference = elmo_fixture_dir()  # bilm-tf's fixture: ../shared, else from the allennlp==0.9.0 wheel
    vocab_file, sentences_file = reference / "vocab_test.txt", reference / "sentences.json"
    with open(vocab_file, encoding="utf-8") as handle:
        words = [line.strip() for line in handle]
    tok = elmo_tokenizer_from_vocab(vocab_file, split_punctuation=False)
    assert len(tok) == len(words) + 1 == 459
    assert tok.convert_ids_to_tokens(list(range(len(words)))) == words
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (
        words.index("<S>"), words.index("</S>"), words.index("<UNK>"))
    word_to_id = {word: index for index, word in enumerate(words)}
    sentences = [s for group in json.loads(sentences_file.read_text(encoding="utf-8")) for s in group]
    batch = tok(sentences)
    for sentence, ids, char_ids in zip(sentences, batch["input_ids"], batch["char_ids"]):
        tokens = sentence.split()  # bilm-tf's test sentences are whitespace-tokenised
        assert ids == [word_to_id["<S>"], *(word_to_id.get(w, word_to_id["<UNK>"]) for w in tokens), word_to_id["</S>"]]
        assert char_ids[1:-1] == [reference_char_ids(w) for w in tokens]


def test_bad_inputs_name_the_problem_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=4 leaves no room"):
        train_elmo_tokenizer(iterator=ENGLISH, vocab_size=4)
    with pytest.raises(OSError, match=r"missing\.txt.*does not exist"):
        train_elmo_tokenizer([tmp_path / "missing.txt"], vocab_size=100)
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("中国人喜欢喝茶".encode("gbk"))
    with pytest.raises(ValueError, match=r"gbk\.txt.*not UTF-8"):
        train_elmo_tokenizer([gbk], vocab_size=100)
    with pytest.raises(ValueError, match="exactly one of"):
        train_elmo_tokenizer()
    with pytest.raises(ValueError, match="lower min_frequency"):
        train_elmo_tokenizer(iterator=["every word once"], vocab_size=100, min_frequency=2)
    with pytest.raises(ValueError, match=r"chinese_segmentation='words'.*'characters'.*'jieba'"):
        train_elmo_tokenizer(iterator=ENGLISH, chinese_segmentation="words")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['<S>', '</S>'\].*train_elmo_tokenizer"):
        HfcmElmoTokenizer({"<pad>": 0, "<UNK>": 1, "the": 2})
    with pytest.raises(ValueError, match=r"ids must be 0\.\.4"):
        HfcmElmoTokenizer({"<pad>": 0, "<S>": 1, "</S>": 2, "<UNK>": 3, "the": 7})

    with pytest.raises(OSError, match=r"nowhere\.txt.*does not exist"):
        elmo_tokenizer_from_vocab(tmp_path / "nowhere.txt")
    with pytest.raises(ValueError, match=r"no_specials\.txt.*lacks.*'</S>', '<UNK>'.*add a line"):
        elmo_tokenizer_from_vocab(write_lines(tmp_path / "no_specials.txt", ["<S>", "the"]))
    with pytest.raises(ValueError, match=r"blank\.txt.*blank lines \[3\]"):
        elmo_tokenizer_from_vocab(write_lines(tmp_path / "blank.txt", ["<S>", "</S>", "", "<UNK>"]))
    with pytest.raises(ValueError, match=r"repeated\.txt.*repeats.*'the'"):
        elmo_tokenizer_from_vocab(write_lines(tmp_path / "repeated.txt", ["<S>", "</S>", "<UNK>", "the", "the"]))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("<S>\n</S>\n<UNK>\ncafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt.*not UTF-8"):
        elmo_tokenizer_from_vocab(latin)

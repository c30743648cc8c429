"""`hfcm` end to end, as a user runs it (`python -m hf_course_models ...` in a subprocess)."""
import subprocess
import sys

import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForMaskedLM

import hf_course_models
from hf_course_models.corpora import corpus_files


def hfcm(*args):
    return subprocess.run([sys.executable, "-m", "hf_course_models", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_train_tokenizer_then_fill_mask(tmp_path):
    out = tmp_path / "tok"
    result = hfcm("train-tokenizer", "wordpiece", "--files", *corpus_files(), "--vocab-size", 4000, "--out", out)
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 4000 and tokenizer.tokenize("明月") == ["明", "月"]

    config = hf_course_models.HfcmBertConfig(preset="tiny", vocab_size=len(tokenizer), max_position_embeddings=64)
    hf_course_models.HfcmBertForMaskedLM(config).save_pretrained(out)
    result = hfcm("fill-mask", out, "shall i compare thee to a summer's [MASK]?", "--top-k", 3)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and all("[MASK]" not in line for line in lines)

    result = hfcm("embed", out, "春眠不觉晓")
    assert result.returncode == 0, result.stderr
    assert '"shape": [7, 64]' in result.stdout  # [CLS] + 5 characters + [SEP], hidden 64


def test_train_bpe_tokenizer(tmp_path):
    out = tmp_path / "bpe"
    result = hfcm("train-tokenizer", "bpe", "--files", *corpus_files(), "--vocab-size", 1000, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Saved a 1000-token byte-level BPE tokenizer" in result.stdout
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(tokenizer).__name__ == "GPT2Tokenizer" and len(tokenizer) == 1000
    assert (tokenizer.eos_token, tokenizer.model_max_length, tokenizer.padding_side) == ("<|endoftext|>", 1024, "left")
    text = "Shall I compare thee to a summer's day?\r\n春眠不觉晓 😀\t\x07"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text

    result = hfcm("train-tokenizer", "bpe", "--files", *corpus_files(), "--cased", "--out", tmp_path / "cased")
    assert result.returncode == 2 and "--cased is a wordpiece option" in result.stderr
    result = hfcm("train-tokenizer", "bpe", "--files", *corpus_files(), "--vocab-size", 100, "--out", out)
    assert result.returncode == 2 and "vocab_size=100 leaves no room" in result.stderr


def test_train_elmo_tokenizer(tmp_path):
    out = tmp_path / "elmo"
    result = hfcm("train-tokenizer", "elmo", "--files", *corpus_files(), "--vocab-size", 800,
                  "--chinese-segmentation", "jieba", "--out", out)
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(tokenizer, hf_course_models.HfcmElmoTokenizer)
    assert len(tokenizer) == 800 and tokenizer.chinese_segmentation == "jieba" and not tokenizer.do_lower_case
    encoding = tokenizer("Shall I compare thee 春眠不觉晓", return_tensors="pt")
    assert tokenizer.convert_ids_to_tokens(encoding["input_ids"][0])[:4] == ["<S>", "Shall", "I", "compare"]
    assert encoding["char_ids"].shape == (1, encoding["input_ids"].shape[1], 50)


def test_elmo_only_options_are_refused_for_other_tokenizers(tmp_path, capsys):
    from hf_course_models.cli import main

    assert main(["train-tokenizer", "bpe", "--files", *corpus_files(), "--chinese-segmentation", "jieba",
                 "--out", str(tmp_path / "bpe")]) == 2
    assert "--chinese-segmentation are elmo options" in capsys.readouterr().err
    assert main(["train-tokenizer", "elmo", "--files", *corpus_files(), "--cased", "--out", str(tmp_path / "e")]) == 2
    assert "--lowercase" in capsys.readouterr().err


def test_convert_there_and_back(tmp_path):
    torch.manual_seed(0)
    reference = BertForMaskedLM(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=64)).eval()
    reference.save_pretrained(tmp_path / "bert")
    assert hfcm("convert", tmp_path / "bert", tmp_path / "ours").returncode == 0
    result = hfcm("convert", tmp_path / "ours", tmp_path / "back", "--to", "transformers")
    assert result.returncode == 0, result.stderr
    back = BertForMaskedLM.from_pretrained(tmp_path / "back").eval()
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, reference(ids).logits, atol=1e-5, rtol=0)


def test_convert_elmo_options_and_weights(tmp_path):
    from elmo_fixtures import batch_char_ids, elmo_fixture_dir

    from hf_course_models.convert.elmo import load_allennlp_elmo

    fixtures = elmo_fixture_dir()
    options, weights = fixtures / "options.json", fixtures / "lm_weights.hdf5"
    result = hfcm("convert", options, weights, tmp_path / "elmo")
    assert result.returncode == 0, result.stderr
    char_ids = batch_char_ids([["Hello", "world", "."], ["春眠不觉晓"]])
    with torch.no_grad():
        converted = AutoModel.from_pretrained(tmp_path / "elmo")(char_ids=char_ids).last_hidden_state
        torch.testing.assert_close(converted, load_allennlp_elmo(options, weights)(char_ids=char_ids).last_hidden_state,
                                   rtol=0, atol=0)
    result = hfcm("convert", weights, options, tmp_path / "swapped")
    assert result.returncode == 2 and "options.json followed by its weights.hdf5" in result.stderr


def test_generate_greedy_and_seeded_sampling(tmp_path, capsys):
    from transformers import set_seed

    from hf_course_models.cli import main

    tokenizer = hf_course_models.train_bpe_tokenizer(corpus_files(), vocab_size=1000)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = hf_course_models.HfcmGptForCausalLM(hf_course_models.HfcmGptConfig(
        preset="tiny", vocab_size=len(tokenizer), max_position_embeddings=128, bos_token_id=eos, eos_token_id=eos))
    with torch.no_grad():  # peaked next-token distributions: no near-ties for greedy decoding to flip on
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    model.eval().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompt = "Shall I compare thee 春眠"
    inputs = tokenizer(prompt, return_tensors="pt")

    def continuations(ids):
        return [prompt + tokenizer.decode(row[inputs.input_ids.shape[1]:]) for row in ids]

    result = hfcm("generate", tmp_path, prompt, "--max-new-tokens", 8)
    assert result.returncode == 0, result.stderr
    assert result.stdout == continuations(model.generate(**inputs, max_new_tokens=8, do_sample=False))[0] + "\n"

    sampling = dict(temperature=1.2, top_k=20, num_return_sequences=2)
    flags = ["--temperature", 1.2, "--top-k", 20, "--num-return-sequences", 2, "--seed", 3]
    result = hfcm("generate", tmp_path, prompt, "--max-new-tokens", 8, "--do-sample", *flags)
    assert result.returncode == 0, result.stderr
    set_seed(3)
    first, second = continuations(model.generate(**inputs, max_new_tokens=8, do_sample=True, **sampling))
    assert result.stdout == f"--- 1 ---\n{first}\n--- 2 ---\n{second}\n"

    assert main(["generate", str(tmp_path), prompt, "--top-k", "5"]) == 2
    assert "--top-k given without --do-sample" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), prompt, "--num-return-sequences", "2"]) == 2
    assert "--num-return-sequences 2 needs --do-sample" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), prompt, "--do-sample", "--top-p", "1.5"]) == 2
    assert "top_p=1.5 is outside (0, 1]" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), prompt, "--max-new-tokens", "200"]) == 2
    assert "max_new_tokens <= " in capsys.readouterr().err


def test_user_errors_exit_2_with_the_reason(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    result = hfcm("train-tokenizer", "wordpiece", "--files", bad, "--out", tmp_path / "t")
    assert result.returncode == 2 and "latin1.txt" in result.stderr and "UTF-8" in result.stderr
    result = hfcm("convert", tmp_path / "nowhere", tmp_path / "out")
    assert result.returncode == 2 and "nowhere" in result.stderr

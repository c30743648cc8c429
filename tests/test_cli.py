"""`hfcm` end to end, as a user runs it (`python -m hf_course_models ...` in a subprocess)."""
import subprocess
import sys

import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

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


def test_user_errors_exit_2_with_the_reason(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    result = hfcm("train-tokenizer", "wordpiece", "--files", bad, "--out", tmp_path / "t")
    assert result.returncode == 2 and "latin1.txt" in result.stderr and "UTF-8" in result.stderr
    result = hfcm("convert", tmp_path / "nowhere", tmp_path / "out")
    assert result.returncode == 2 and "nowhere" in result.stderr

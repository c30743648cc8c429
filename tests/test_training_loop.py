"""The training loop: optimiser groups, schedule, accumulation, NaN stop, precision checks, what a run writes, and
one short `hfcm pretrain` run per family. GPT tiny without dropout wherever runs are compared."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from matplotlib.image import imread
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForPreTraining, AutoTokenizer, pipeline

import hf_course_models
from hf_course_models.cli import main as hfcm
from hf_course_models.tokenization.elmo_vocab import train_elmo_tokenizer
from hf_course_models.tokenization.wordpiece import train_wordpiece_tokenizer
from hf_course_models.training import NonFiniteLossError, TrainingArguments
from hf_course_models.training.checkpoints import latest_checkpoint
from hf_course_models.training.loop import parameter_groups
from hf_course_models.training.pretrain import pretrain

NO_DROPOUT = dict(hidden_dropout_prob=0, embedding_dropout_prob=0, attention_probs_dropout_prob=0)


def run_gpt(out, bpe_dir, corpus, **training):
    """`pretrain` of GPT tiny (no dropout) on the corpus: 32-token blocks, a 5% validation split."""
    options = dict(max_steps=4, batch_size=4, save_steps=100, logging_steps=1) | training
    return pretrain("gpt", bpe_dir, [corpus], "tiny", TrainingArguments(str(out), **options), seq_len=32,
                    **NO_DROPOUT)


def records(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def test_no_weight_decay_on_biases_and_layer_norm_weights():
    for model in (hf_course_models.HfcmGptForCausalLM(hf_course_models.HfcmGptConfig(preset="tiny", vocab_size=100,
                                                                                     bos_token_id=0, eos_token_id=0)),
                  hf_course_models.HfcmBertForPreTraining(hf_course_models.HfcmBertConfig(preset="tiny"))):
        names = {id(parameter): name for name, parameter in model.named_parameters()}
        layer_norms = {f"{module_name}.weight" for module_name, module in model.named_modules()
                       if isinstance(module, torch.nn.LayerNorm)}
        decayed, exempt = parameter_groups(model, 0.01)
        assert decayed["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
        exempt_names = {names[id(parameter)] for parameter in exempt["params"]}
        decayed_names = {names[id(parameter)] for parameter in decayed["params"]}
        assert exempt_names == {name for name in names.values() if name.endswith(".bias") or name in layer_norms}
        assert decayed_names == set(names.values()) - exempt_names
        assert any("embeddings" in name or "wte" in name for name in decayed_names)  # embeddings are decayed


def test_a_run_logs_schedules_plots_summarises_and_saves_a_loadable_model(tmp_path, verse_bpe_dir, verse_corpus,
                                                                           capsys):
    out = tmp_path / "run"
    summary = run_gpt(out, verse_bpe_dir, verse_corpus, max_steps=10, warmup_steps=3, logging_steps=2, eval_steps=5)

    # linear warm-up to the peak over 3 steps, then linear decay to 0 at step 10 (logged after each step)
    train_records = [record for record in records(out) if "loss" in record]
    assert [record["step"] for record in train_records] == [2, 4, 6, 8, 10]
    for record in train_records:
        step = record["step"]
        expected = 5e-4 * min(step / 3, (10 - step) / (10 - 3))
        assert record["learning_rate"] == pytest.approx(expected, abs=1e-12), step
        assert math.isfinite(record["loss"]) and record["tokens_per_second"] > 0
    assert TrainingArguments("x", max_steps=50).warmup == 5  # default: 10% of the steps

    eval_records = [record for record in records(out) if "eval_perplexity" in record]
    assert [record["step"] for record in eval_records] == [5, 10]
    assert eval_records[-1]["eval_perplexity"] == pytest.approx(math.exp(eval_records[-1]["eval_loss"]))
    assert summary["steps"] == 10 and summary["metrics"]["perplexity"] == eval_records[-1]["eval_perplexity"]
    assert json.load(open(out / "summary.json")) == json.loads(json.dumps(summary))
    printed = capsys.readouterr().out
    assert "Trained 10 steps" in printed and str(out) in printed and "perplexity" in printed
    for plot in ("loss.png", "perplexity.png"):
        height, width, _ = imread(out / plot).shape
        assert (height, width) == (400, 600), plot

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(model, hf_course_models.HfcmGptForCausalLM) and model.config.max_position_embeddings == 32
    assert model.config.vocab_size == len(tokenizer) and model.config.eos_token_id == tokenizer.eos_token_id
    assert "hf_course_models" in (out / "README.md").read_text()
    generated = pipeline("text-generation", model=model, tokenizer=tokenizer)("Shall I", max_new_tokens=5,
                                                                             do_sample=False)
    assert generated[0]["generated_text"].startswith("Shall I")


def test_gradient_accumulation_equals_the_big_batch(tmp_path, verse_bpe_dir, verse_corpus):
    # The two sum the same gradients in another order; Adam turns that rounding into updates of up to
    # ~1e-3 x lr on parameters whose true gradient is 0 (the attention's key bias), hence few steps at lr 5e-4.
    big = run_gpt(tmp_path / "big", verse_bpe_dir, verse_corpus, batch_size=4, grad_accum=1)
    accumulated = run_gpt(tmp_path / "accumulated", verse_bpe_dir, verse_corpus, batch_size=2, grad_accum=2)
    assert big["steps"] == accumulated["steps"] == 4
    losses = [(a["loss"], b["loss"]) for a, b in zip(records(tmp_path / "big"), records(tmp_path / "accumulated"))
              if "loss" in a]
    assert len(losses) == 4 and max(abs(a - b) for a, b in losses) <= 1e-6, losses
    reference, weights = (load_file(tmp_path / name / "model.safetensors") for name in ("big", "accumulated"))
    delta = max((reference[name] - weights[name]).abs().max().item() for name in reference)
    assert delta <= 1e-6, f"max |Δ| = {delta:.2e}"


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, verse_bpe_dir, verse_corpus):
    out = tmp_path / "diverged"
    # lr 1e30 without warm-up: the first update sends weights to ±1e30, the next forward overflows to NaN
    with pytest.raises(NonFiniteLossError, match=r"at step 2.*checkpoint-1.* is intact.*lower learning rate"):
        run_gpt(out, verse_bpe_dir, verse_corpus, learning_rate=1e30, warmup_steps=0, save_steps=1)
    assert latest_checkpoint(str(out)) == str(out / "checkpoint-1")
    assert not (out / "model.safetensors").exists()  # no final model from a diverged run
    saved = AutoModelForCausalLM.from_pretrained(out / "checkpoint-1" / "model")
    assert all(torch.isfinite(parameter).all() for parameter in saved.parameters())
    assert json.load(open(out / "checkpoint-1" / "position.json"))["step"] == 1
    assert {"optimizer.bin", "model.safetensors", "random_states_0.pkl"} <= set(os.listdir(out / "checkpoint-1"))


def test_fp16_on_cpu_is_refused_with_a_hint_to_use_bf16(tmp_path, verse_bpe_dir, verse_corpus, capsys):
    with pytest.raises(ValueError, match="bf16"):
        TrainingArguments(str(tmp_path), mixed_precision="fp16")
    code = hfcm(["pretrain", "gpt", "--tokenizer", verse_bpe_dir, "--files", verse_corpus,
                 "--out", str(tmp_path / "fp16"), "--mixed-precision", "fp16"])
    assert code == 2 and "--mixed-precision bf16" in capsys.readouterr().err
    assert not (tmp_path / "fp16").exists()


@pytest.mark.parametrize("family, options", [("bert", ["--gradient-checkpointing"]), ("elmo", [])])
def test_hfcm_pretrain_runs_for(family, options, tmp_path, verse_corpus):
    tokenizer_dir = tmp_path / "tokenizer"
    train = {"bert": train_wordpiece_tokenizer, "elmo": train_elmo_tokenizer}[family]
    train([verse_corpus], vocab_size=600).save_pretrained(tokenizer_dir)
    out, text = tmp_path / "model", open(verse_corpus, encoding="utf-8").read()
    small_corpus = tmp_path / "small.txt"  # a third of the verse: these runs only have to work end to end
    small_corpus.write_text(text[: text.index("\n\n", 10_000)] + "\n", encoding="utf-8")
    code = hfcm(["pretrain", family, "--tokenizer", str(tokenizer_dir), "--files", str(small_corpus),
                 "--preset", "tiny", "--out", str(out), "--max-steps", "4", "--batch-size", "4", "--seq-len", "32",
                 "--save-steps", "2", "--logging-steps", "2", *options])
    assert code == 0
    model = AutoModelForPreTraining.from_pretrained(out)
    expected = {"bert": hf_course_models.HfcmBertForPreTraining, "elmo": hf_course_models.HfcmElmoForBidirectionalLM}
    assert isinstance(model, expected[family])
    assert len(AutoTokenizer.from_pretrained(out)) == model.config.vocab_size
    assert [record["step"] for record in records(out) if "loss" in record] == [2, 4]
    assert latest_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert json.load(open(out / "summary.json"))["metrics"]  # the family's own evaluation ran


def test_bf16_mixed_precision_trains_in_bf16_and_saves_fp32(tmp_path, verse_bpe_dir, verse_corpus):
    # In a fresh process: accelerate fixes the precision once per process.
    command = ["pretrain", "gpt", "--tokenizer", verse_bpe_dir, "--files", verse_corpus, "--preset", "tiny",
               "--seq-len", "32", "--max-steps", "2", "--batch-size", "4", "--logging-steps", "1", "--config-overrides",
               *(f"{name}=0" for name in NO_DROPOUT)]
    assert hfcm([*command, "--out", str(tmp_path / "fp32")]) == 0
    subprocess.run([sys.executable, "-m", "hf_course_models", *command, "--out", str(tmp_path / "bf16"),
                    "--mixed-precision", "bf16"], check=True, capture_output=True, cwd=tmp_path)
    fp32, bf16 = ([record["loss"] for record in records(tmp_path / name) if "loss" in record] for name in ("fp32",
                                                                                                       "bf16"))
    # bf16 autocast rounds the matmuls: the losses are close but not equal (equal would mean fp32 ran)
    assert all(0 < abs(a - b) < 0.05 for a, b in zip(fp32, bf16)), (fp32, bf16)
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}  # master weights stay fp32

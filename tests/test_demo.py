"""`hfcm demo`, shortened: every family is trained, saved with its curves and card, reloaded and shown."""
import contextlib
import io
import json
import os

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from hf_course_models.cli import main
from hf_course_models.demo import FILL_MASK_PROMPTS, GENERATION_PROMPTS, MODELS, run_demo

AUTO_CLASS = {"bert": AutoModelForMaskedLM, "gpt": AutoModelForCausalLM, "elmo": AutoModel}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exit_code = main(["demo", "--out", str(out), "--step-fraction", "0.01"])
    assert exit_code == 0
    return out, printed.getvalue()


def test_demo_shows_every_family_in_english_and_chinese(demo_run):
    out, printed = demo_run
    for family in ("bert", "gpt", "elmo"):
        assert os.path.isdir(out / family / "model"), family
        assert f"=== {family}" in printed
    for prompt in FILL_MASK_PROMPTS + GENERATION_PROMPTS:
        assert prompt in printed, prompt
    assert "cosine similarity" in printed and "'summer' in" in printed
    assert "Demo finished" in printed


@pytest.mark.parametrize("spec", MODELS, ids=lambda spec: spec.family)
def test_each_model_directory_has_curves_metrics_card_and_loads(demo_run, spec):
    out, _ = demo_run
    model_dir = out / spec.family / "model"
    for name in ("config.json", "model.safetensors", "README.md", "metrics.jsonl", "loss.png", "summary.json"):
        assert (model_dir / name).is_file(), f"{spec.family}: {name} missing"
    assert (model_dir / "loss.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["steps"] == max(1, round(spec.steps * 0.01))
    assert all(torch.isfinite(torch.tensor(value)) for value in summary["metrics"].values()), summary["metrics"]
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert records, "metrics.jsonl is empty"

    model = AUTO_CLASS[spec.family].from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.vocab_size == len(tokenizer)
    with torch.no_grad():
        output = model(**tokenizer(["床前明月光 Shall I compare thee"], return_tensors="pt"))
    assert torch.isfinite(output[0]).all()


def test_prompts_are_english_and_chinese():
    for prompts in (FILL_MASK_PROMPTS, GENERATION_PROMPTS):
        assert any(prompt.isascii() for prompt in prompts)
        assert any(any("\u4e00" <= char <= "\u9fff" for char in prompt) for prompt in prompts)


def test_bad_step_fraction_and_family_are_named(tmp_path):
    with pytest.raises(ValueError, match="step_fraction"):
        run_demo(str(tmp_path), step_fraction=0)
    with pytest.raises(ValueError, match="bart"):
        run_demo(str(tmp_path), families=("bart",))

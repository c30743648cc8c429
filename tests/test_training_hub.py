"""`hfcm pretrain --push-to-hub`: checkpoints and the final model reach the (local) Hub while training goes on,
and a Hub that refuses the pushes never stops training or costs a local file."""
import os

import torch
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModelForCausalLM

from hf_course_models.cli import main as hfcm


def pretrain_command(corpus, tokenizer, out, repo_id):
    return ["pretrain", "gpt", "--tokenizer", tokenizer, "--files", corpus, "--preset", "tiny", "--seq-len", "32",
            "--out", str(out), "--max-steps", "5", "--batch-size", "4", "--save-steps", "2", "--logging-steps", "1",
            "--push-to-hub", repo_id]


def test_checkpoints_and_final_model_are_pushed(verse_corpus, verse_bpe_dir, hub_env, hub_server, tmp_path):
    repo_id = "tester/pretrain-gpt"
    assert hfcm(pretrain_command(verse_corpus, verse_bpe_dir, tmp_path / "run", repo_id)) == 0

    api = HfApi(token=hub_server.token)
    messages = [commit.title for commit in api.list_repo_commits(repo_id)]
    assert messages[:3] == ["Trained 5 steps", "Training in progress, step 4", "Training in progress, step 2"], messages
    files = set(api.list_repo_files(repo_id))
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    assert not any(name.startswith("checkpoint-") for name in files), files  # optimizer states stay local

    pulled = AutoModelForCausalLM.from_pretrained(repo_id).eval()
    local = AutoModelForCausalLM.from_pretrained(tmp_path / "run").eval()
    ids = torch.arange(1, 20)[None]
    with torch.no_grad():
        difference = (pulled(ids).logits - local(ids).logits).abs().max().item()
    assert difference == 0.0, f"pulled model differs from the local one: max |Δ| = {difference}"
    card = ModelCard.load(repo_id)
    assert card.data.library_name and "hfcm_gpt" in (card.data.tags or []), card.data
    assert hub_server.token not in card.content


def test_a_refused_push_is_reported_and_training_finishes_with_its_files(verse_corpus, verse_bpe_dir, hub_env,
                                                                         hub_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub_server.other_token)  # "intruder" may not write to tester's namespace
    out = tmp_path / "run"
    assert hfcm(pretrain_command(verse_corpus, verse_bpe_dir, out, "tester/not-yours")) == 0

    printed = capsys.readouterr()
    assert "Pushing to tester/not-yours failed" in printed.out + printed.err
    assert hub_server.other_token not in printed.out + printed.err
    assert sorted(name for name in os.listdir(out) if name.startswith("checkpoint-")) == ["checkpoint-2",
                                                                                         "checkpoint-4"]
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "hfcm_gpt"

"""Checkpoints never lose work: a run SIGKILLed in the middle of a save resumes from the last complete checkpoint
and ends exactly where an uninterrupted run ends; only the last K checkpoints stay; resuming needs a checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hf_course_models.cli import main as hfcm
from hf_course_models.training import TrainingArguments
from hf_course_models.training.checkpoints import checkpoint_dirs, latest_checkpoint
from hf_course_models.training.pretrain import pretrain

REPO = Path(__file__).resolve().parents[1]
# GPT tiny with its default dropout (0.1): resuming must restore the RNG states too, not only the weights
SETTINGS = dict(max_steps=10, batch_size=4, save_steps=2, save_total_limit=2, logging_steps=1)


def run_gpt(out, bpe_dir, corpus, resume=False):
    return pretrain("gpt", bpe_dir, [corpus], "tiny", TrainingArguments(str(out), resume=resume, **SETTINGS),
                    seq_len=32)


def command_line(out, bpe_dir, corpus):
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in SETTINGS.items()]
    return [sys.executable, "-m", "hf_course_models", "pretrain", "gpt", "--tokenizer", bpe_dir, "--files", corpus,
            "--preset", "tiny", "--seq-len", "32", "--out", str(out), *flags]


def kill_in_the_middle_of_a_save(process, out, timeout=300):
    """SIGKILL `process` while a checkpoint after the first is being written; return that save's directory.

    Freezing the process first (SIGSTOP) makes the kill land mid-save for sure: if the save finished between
    seeing its temporary directory and the freeze, the process is let go on to the next save."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed mid-save"
        saving = [name for name in os.listdir(out) if name.startswith(".tmp-checkpoint-")] if out.exists() else []
        if saving and checkpoint_dirs(str(out)):
            process.send_signal(signal.SIGSTOP)
            if (out / saving[0]).exists():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return out / saving[0]
            process.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    process.kill()
    pytest.fail(f"no save seen within {timeout} s")


def loss_records(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl") if '"loss"' in line]


def test_a_run_killed_mid_save_resumes_to_the_uninterrupted_result(tmp_path, verse_bpe_dir, verse_corpus):
    killed = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(command_line(killed, verse_bpe_dir, verse_corpus), cwd=REPO, stdout=log, stderr=log)
        unfinished = kill_in_the_middle_of_a_save(process, killed)
    assert process.returncode == -signal.SIGKILL and unfinished.exists()
    assert not (killed / "model.safetensors").exists()  # it did not get to the end
    # the half-written save is never "latest": the previous checkpoint is, complete
    unfinished_step = int(unfinished.name.rsplit("-", 1)[1])
    latest = Path(latest_checkpoint(str(killed)))
    assert latest.name == f"checkpoint-{unfinished_step - 2}"
    assert (latest / "position.json").exists() and (latest / "model" / "model.safetensors").exists()

    resumed = run_gpt(killed, verse_bpe_dir, verse_corpus, resume=True)
    uninterrupted = run_gpt(tmp_path / "uninterrupted", verse_bpe_dir, verse_corpus)
    assert resumed["steps"] == uninterrupted["steps"] == 10 and resumed["steps_this_run"] == 10 - (unfinished_step - 2)
    assert abs(resumed["train_loss"] - uninterrupted["train_loss"]) <= 1e-6, (resumed, uninterrupted)
    reference = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    weights = load_file(killed / "model.safetensors")
    delta = max((reference[name] - weights[name]).abs().max().item() for name in reference)
    assert delta <= 1e-6, f"max |Δ| = {delta:.2e}"
    # the log reads as one run: the killed run's steps after its checkpoint were dropped
    steps_and_losses = [(record["step"], record["loss"]) for record in loss_records(killed)]
    expected = [(record["step"], record["loss"]) for record in loss_records(tmp_path / "uninterrupted")]
    assert [step for step, _ in steps_and_losses] == list(range(1, 11))
    assert max(abs(a[1] - b[1]) for a, b in zip(steps_and_losses, expected)) <= 1e-6

    assert not unfinished.exists()  # the resumed run cleared the crashed save away
    # keep the last 2 (step 10 is the end: the final model, not a checkpoint)
    assert [Path(path).name for path in checkpoint_dirs(str(killed))] == ["checkpoint-6", "checkpoint-8"]


def test_resume_needs_a_checkpoint_and_a_new_run_needs_a_clean_directory(tmp_path, verse_bpe_dir, verse_corpus,
                                                                       capsys):
    empty = tmp_path / "empty"
    with pytest.raises(ValueError, match="no complete checkpoint"):
        run_gpt(empty, verse_bpe_dir, verse_corpus, resume=True)
    code = hfcm(["pretrain", "gpt", "--tokenizer", verse_bpe_dir, "--files", verse_corpus, "--out", str(empty),
                 "--resume"])
    assert code == 2 and "no complete checkpoint" in capsys.readouterr().err
    assert not empty.exists()  # no silent fresh start

    earlier = tmp_path / "earlier"
    (earlier / "checkpoint-4").mkdir(parents=True)
    with pytest.raises(ValueError, match="pass --resume"):
        run_gpt(earlier, verse_bpe_dir, verse_corpus)

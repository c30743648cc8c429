"""Real data parallelism on this CPU: two processes started by torchrun (gloo) with batch B train exactly what one
process with batch 2B trains, stay in sync with each other, and only the main process writes and reports."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from hf_course_models.training import TrainingArguments
from hf_course_models.training.pretrain import pretrain

REPO = Path(__file__).resolve().parents[1]
NO_DROPOUT = dict(hidden_dropout_prob=0, embedding_dropout_prob=0, attention_probs_dropout_prob=0)
STEPS = 4
# Both runs sum the same gradients in another order. Adam turns that rounding into updates of up to ~1e-3 x lr
# on parameters whose true gradient is 0 (the attention's key bias: softmax ignores a shift shared by all keys),
# so a 1e-6 comparison needs few steps at a small learning rate (6 steps at 5e-4 measured 9.99e-7).
LEARNING_RATE = 2e-4


def loss_records(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl") if '"loss"' in line]


def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(tmp_path, verse_bpe_dir, verse_corpus):
    two, logs = tmp_path / "two", tmp_path / "logs"
    overrides = [f"{name}={value}" for name, value in NO_DROPOUT.items()]
    # torchrun is `python -m torch.distributed.run`; --standalone picks a free port
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--log-dir", str(logs), "--redirects", "3",
               "-m", "hf_course_models", "pretrain", "gpt", "--tokenizer", verse_bpe_dir, "--files", verse_corpus,
               "--preset", "tiny", "--seq-len", "32", "--out", str(two), "--batch-size", "2",
               "--max-steps", str(STEPS), "--learning-rate", str(LEARNING_RATE), "--logging-steps", "1",
               "--save-steps", "3", "--config-overrides", *overrides]
    env = os.environ | {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    rank_logs = {rank: {stream: next(logs.glob(f"*/attempt_0/{rank}/{stream}.log")).read_text()
                        for stream in ("stdout", "stderr")} for rank in (0, 1)}
    assert result.returncode == 0, rank_logs

    summary = json.load(open(two / "summary.json"))
    assert summary["processes"] == 2 and summary["steps"] == STEPS
    assert summary["max_parameter_difference_between_processes"] == 0.0  # the ranks hold identical weights

    # only the main process reports and writes: one summary, one progress bar, one line per logged step
    assert f"Trained {STEPS} steps" in rank_logs[0]["stdout"] and "training:" in rank_logs[0]["stderr"]
    assert "Trained" not in rank_logs[1]["stdout"] and "training:" not in rank_logs[1]["stderr"]
    assert [record["step"] for record in loss_records(two)] == list(range(1, STEPS + 1))
    # a checkpoint holds each process's RNG state (accelerate's save_state), everything else once
    assert sorted(name for name in os.listdir(two / "checkpoint-3") if name.startswith("random_states")) == \
        ["random_states_0.pkl", "random_states_1.pkl"]

    one = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process: the thread count changes the rounding
    try:
        arguments = TrainingArguments(str(one), batch_size=4, max_steps=STEPS, learning_rate=LEARNING_RATE,
                                      logging_steps=1, save_steps=3)
        pretrain("gpt", verse_bpe_dir, [verse_corpus], "tiny", arguments, seq_len=32, **NO_DROPOUT)
    finally:
        torch.set_num_threads(threads)
    loss_delta = max(abs(a["loss"] - b["loss"]) for a, b in zip(loss_records(one), loss_records(two)))
    assert loss_delta <= 1e-6, f"max |Δ loss| = {loss_delta:.2e}"
    reference, weights = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    delta = max((reference[name] - weights[name]).abs().max().item() for name in reference)
    assert delta <= 1e-6, f"max |Δ| between 2 x batch 2 and 1 x batch 4 = {delta:.2e}"

"""Checkpoints that never lose work.

A checkpoint is one directory `OUT/checkpoint-100/` (the name transformers' Trainer uses, which Hub uploads of
OUT leave out) holding accelerate's `save_state` (model,
optimizer, scheduler, RNG states of every process), `position.json` (the optimizer step and where the data
loader stood) and `model/`, the model and tokenizer in `save_pretrained` form. It is written under a temporary
name and renamed into place, so a crash mid-save leaves a hidden `.tmp-` directory that is never taken for
the latest checkpoint (and is removed by the next run), while the previous checkpoints stay as they were.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass

_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
_TEMPORARY_PREFIX = ".tmp-"
POSITION_FILE = "position.json"
MODEL_DIR = "model"


@dataclass
class TrainingPosition:
    """Where a run stands: optimizer steps done, the epoch, and the batches of that epoch already trained on."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


def checkpoint_dirs(out_dir: str) -> list[str]:
    """The complete checkpoints in `out_dir`, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    steps = sorted(int(match[1]) for name in os.listdir(out_dir) if (match := _CHECKPOINT_NAME.fullmatch(name)))
    return [os.path.join(out_dir, _checkpoint_name(step)) for step in steps]


def latest_checkpoint(out_dir: str) -> str | None:
    found = checkpoint_dirs(out_dir)
    return found[-1] if found else None


def _checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def remove_unfinished_saves(out_dir: str) -> None:
    """Delete what a crash mid-save left behind (main process only)."""
    if os.path.isdir(out_dir):
        for name in os.listdir(out_dir):
            if name.startswith(_TEMPORARY_PREFIX + "checkpoint-"):
                shutil.rmtree(os.path.join(out_dir, name))


def save_checkpoint(accelerator, out_dir: str, position: TrainingPosition, model, tokenizer=None,
                    keep: int = 2) -> str:
    """Write a checkpoint atomically and keep only the newest `keep`. Every process must call this."""
    name = _checkpoint_name(position.step)
    temporary, final = os.path.join(out_dir, _TEMPORARY_PREFIX + name), os.path.join(out_dir, name)
    if accelerator.is_main_process and os.path.exists(temporary):
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)  # each process writes its own RNG state here
    if accelerator.is_main_process:
        with open(os.path.join(temporary, POSITION_FILE), "w") as file:
            json.dump(asdict(position), file)
        accelerator.unwrap_model(model).save_pretrained(os.path.join(temporary, MODEL_DIR))
        if tokenizer is not None:
            tokenizer.save_pretrained(os.path.join(temporary, MODEL_DIR))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(temporary, final)
        for old in checkpoint_dirs(out_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, directory: str) -> TrainingPosition:
    """Restore model, optimizer, scheduler and RNG states; return where the run stood."""
    accelerator.load_state(directory)
    with open(os.path.join(directory, POSITION_FILE)) as file:
        return TrainingPosition(**json.load(file))

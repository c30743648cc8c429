"""One training loop on Accelerate, for pre-training and fine-tuning alike.

The same code runs in one process, under `torchrun` and under `accelerate launch` (data parallel: each
process takes `batch_size` rows of every global batch of `batch_size × processes`, so N processes see exactly
the rows one process with the N-times larger batch would). Optimisation is the BERT/GPT recipe: AdamW without
weight decay on biases and LayerNorm weights, linear warm-up then linear decay to zero, gradient clipping,
gradient accumulation, optional bf16/fp16 mixed precision, gradient checkpointing and torch.compile.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator, PartialState, skip_first_batches
from accelerate.utils import (
    DataLoaderConfiguration,
    is_cuda_available,
    is_mps_available,
    is_npu_available,
    is_xpu_available,
    parse_flag_from_env,
    set_seed,
)
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..hub import CheckpointPusher, write_model_card
from .checkpoints import (
    MODEL_DIR,
    TrainingPosition,
    latest_checkpoint,
    load_checkpoint,
    remove_unfinished_saves,
    save_checkpoint,
)
from .reporting import MetricsLog, format_summary, plot_curves, write_summary

MIXED_PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class TrainingArguments:
    out_dir: str
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 8  # per process
    grad_accum: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.01  # not on biases / LayerNorm weights
    warmup_steps: int | None = None  # None: 10% of max_steps; then linear decay to 0
    max_grad_norm: float | None = 1.0  # None or 0: no clipping
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    compile: bool = False
    seed: int = 0
    save_steps: int = 500
    save_total_limit: int = 2
    eval_steps: int | None = None  # None: evaluate at the end only
    logging_steps: int = 10
    resume: bool = False
    push_to_hub: str | None = None  # repo id
    hub_private: bool = False
    dataloader_num_workers: int = 0

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "grad_accum", "save_steps", "save_total_limit", "logging_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.eval_steps is not None and (not isinstance(self.eval_steps, int) or self.eval_steps < 1):
            raise ValueError(f"eval_steps must be a positive integer or None (evaluate at the end only), "
                             f"got {self.eval_steps!r}.")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must lie in [0, max_steps={self.max_steps}], "
                             "or be None for 10% of max_steps.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}.")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"Unknown mixed_precision {self.mixed_precision!r}; choose one of "
                             f"{', '.join(MIXED_PRECISIONS)}.")
        if self.mixed_precision == "fp16" and not _has_accelerator_device():
            # accelerate would silently train in fp32: fp16 autocast with loss scaling needs a GPU
            raise ValueError("mixed_precision='fp16' needs a GPU, and this run is on the CPU; use "
                             "mixed_precision='bf16' (--mixed-precision bf16), which CPUs support.")

    @property
    def warmup(self) -> int:
        return self.max_steps // 10 if self.warmup_steps is None else self.warmup_steps


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite: the settings (learning rate, precision) do not suit this model and data."""


def _has_accelerator_device() -> bool:
    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return False
    return is_cuda_available() or is_xpu_available() or is_npu_available() or is_mps_available()


def _launched_without_device() -> bool:
    # Started by torchrun on a machine without a GPU, a plain Accelerator() gives every process a world of
    # its own: each would train alone, with no gradient synchronisation and no error. cpu=True joins them (gloo).
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator_device()


def process_state() -> PartialState:
    """This process's place among the training processes (joins them on first call)."""
    return PartialState(cpu=_launched_without_device())


def make_accelerator(args: TrainingArguments) -> Accelerator:
    process_state()
    return Accelerator(
        cpu=_launched_without_device(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.grad_accum,
        dynamo_backend="inductor" if args.compile else "no",
        # split_batches: the loader yields global batches of batch_size × processes and each process takes its
        # slice, so every process count sees the same rows in the same order; the seedable sampler makes that
        # order a function of (seed, epoch) only.
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True,
                                                  data_seed=args.seed),
    )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices and embeddings, none on biases and LayerNorm weights
    (BERT's optimiser, adopted by GPT-2; AllenNLP and transformers' Trainer do the same)."""
    exempt = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, nn.LayerNorm):
                exempt.add(id(parameter))
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) not in exempt], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) in exempt], "weight_decay": 0.0},
    ]


def check_out_dir(args: TrainingArguments) -> str | None:
    """The checkpoint to resume from; refuses both a resume with nothing to resume and a silent overwrite."""
    latest = latest_checkpoint(args.out_dir)
    if args.resume and latest is None:
        raise ValueError(f"resume was asked for, but {args.out_dir!r} holds no complete checkpoint "
                         f"(checkpoint-*); check the output directory, or start a new run without --resume.")
    if not args.resume and latest is not None:
        raise ValueError(f"{args.out_dir!r} already holds checkpoints of an earlier run (latest: {latest}); "
                         "pass --resume to continue that run, or choose another output directory.")
    return latest


def _train_loader(data, args, num_processes):
    dataset = data.train_dataset
    global_batch = args.batch_size * num_processes
    iterable = isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__")
    if not iterable and len(dataset) < global_batch:
        raise ValueError(f"The training set has {len(dataset)} rows, fewer than one batch of batch_size "
                         f"{args.batch_size} × {num_processes} process(es); lower --batch-size or add data.")
    # drop_last: every step averages over the same number of rows on every process
    return DataLoader(dataset, batch_size=global_batch, shuffle=not iterable, drop_last=True,
                      collate_fn=data.collator, num_workers=args.dataloader_num_workers,
                      generator=_own_generator(args.seed))


def _own_generator(seed: int) -> torch.Generator:
    # Starting to iterate draws a seed from the loader's generator, by default the global one: a resumed run
    # starts its iterator at another point of the global stream than the original run, and dropout would differ.
    return torch.Generator().manual_seed(seed)


def _eval_loader(data, args, num_processes):
    if data.eval_dataset is None or data.evaluate is None:
        return None
    return DataLoader(data.eval_dataset, batch_size=args.batch_size * num_processes, collate_fn=data.collator,
                      num_workers=args.dataloader_num_workers, generator=_own_generator(args.seed))


def _evaluate(model, eval_loader, data, accelerator) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        metrics = data.evaluate(model, eval_loader, accelerator)
    model.train()
    return {name: float(value) for name, value in metrics.items()}


def _stop_on_non_finite(loss: float, step: int, args: TrainingArguments, last_checkpoint: str | None):
    kept = f"the last good checkpoint, {last_checkpoint}, is intact" if last_checkpoint \
        else "no checkpoint was saved yet"
    advice = [f"a lower learning rate (now {args.learning_rate:g})"]
    if args.mixed_precision != "no":
        advice.append(f"--mixed-precision no (now {args.mixed_precision})")
    advice.append("gradient clipping (--max-grad-norm 1.0)" if not args.max_grad_norm
                  else f"stronger gradient clipping (now max_grad_norm={args.max_grad_norm:g})")
    raise NonFiniteLossError(f"The training loss became {loss} at step {step}; training stopped and {kept}. "
                             f"Try {', '.join(advice)}.")


def train(model, data, args: TrainingArguments, *, tokenizer=None, card_info: dict | None = None) -> dict:
    """Train `model` on `data` (a `hf_course_models.data.pretraining.TrainingData`); save the final model,
    tokenizer, model card, metrics and curves to `args.out_dir`; return the summary."""
    accelerator = make_accelerator(args)
    resume_from = check_out_dir(args)
    main = accelerator.is_main_process
    set_seed(args.seed)
    if args.gradient_checkpointing:
        if not model.supports_gradient_checkpointing:
            raise ValueError(f"{type(model).__name__} does not support gradient checkpointing; "
                             "train without --gradient-checkpointing.")
        model.activation_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate)
    # Not passed to prepare(): accelerate's scheduler wrapper steps once per process, which would make the
    # schedule depend on the number of processes.
    scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup, args.max_steps)
    accelerator.register_for_checkpointing(scheduler)
    train_loader = _train_loader(data, args, accelerator.num_processes)
    eval_loader = _eval_loader(data, args, accelerator.num_processes)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    metrics_log = MetricsLog(args.out_dir)
    position = TrainingPosition()
    if main:
        os.makedirs(args.out_dir, exist_ok=True)
        remove_unfinished_saves(args.out_dir)
    accelerator.wait_for_everyone()
    if resume_from is not None:
        position = load_checkpoint(accelerator, resume_from)
        if main:
            metrics_log.truncate_after(position.step)
    pusher = None
    if args.push_to_hub and main:
        pusher = CheckpointPusher(args.push_to_hub, private=args.hub_private)

    progress = tqdm(total=args.max_steps, initial=position.step, desc="training", unit="step", disable=not main)
    started = window_started = time.perf_counter()
    steps_at_start = position.step
    step_loss, micro_batches, window_tokens = torch.zeros((), device=accelerator.device), 0, 0
    train_loss, eval_metrics, last_checkpoint = math.nan, {}, resume_from
    while position.step < args.max_steps:
        train_loader.set_epoch(position.epoch)
        batches = skip_first_batches(train_loader, position.batches_in_epoch) if position.batches_in_epoch \
            else train_loader
        for batch in batches:
            position.batches_in_epoch += 1
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                step_loss += loss.detach().float()
                micro_batches += 1
                window_tokens += int(data.count_tokens(batch))
                if accelerator.sync_gradients:
                    # one collective per step: the mean loss over processes (identical everywhere, so every
                    # process stops together on a NaN) and the tokens seen
                    totals = accelerator.reduce(torch.stack([step_loss / micro_batches,
                                                             torch.tensor(float(window_tokens),
                                                                          device=accelerator.device)]), "sum")
                    train_loss = totals[0].item() / accelerator.num_processes
                    if not math.isfinite(train_loss):
                        _stop_on_non_finite(train_loss, position.step + 1, args, last_checkpoint)
                    if args.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    if not accelerator.optimizer_step_was_skipped:  # fp16 loss scaling skips overflowing steps
                        scheduler.step()
                    optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            position.step += 1
            step_loss.zero_()
            micro_batches = 0
            progress.update(1)
            if position.step % args.logging_steps == 0 or position.step == args.max_steps:
                now = time.perf_counter()
                record = {"step": position.step, "loss": train_loss,
                          "learning_rate": scheduler.get_last_lr()[0],
                          "tokens_per_second": totals[1].item() / max(now - window_started, 1e-9),
                          "epoch": position.epoch}
                window_started, window_tokens = now, 0
                progress.set_postfix(loss=f"{train_loss:.4f}", lr=f"{record['learning_rate']:.2e}",
                                     tokens_per_s=f"{record['tokens_per_second']:.0f}")
                if main:
                    metrics_log.append(record)
            if eval_loader is not None and args.eval_steps and position.step % args.eval_steps == 0 \
                    and position.step < args.max_steps:
                eval_metrics = _evaluate(model, eval_loader, data, accelerator)
                if main:
                    metrics_log.append({"step": position.step, **{f"eval_{k}": v for k, v in eval_metrics.items()}})
            if position.step % args.save_steps == 0 and position.step < args.max_steps:
                last_checkpoint = save_checkpoint(accelerator, args.out_dir, position, model, tokenizer,
                                                  keep=args.save_total_limit)
                if pusher is not None:
                    pusher.push(os.path.join(last_checkpoint, MODEL_DIR), f"Training in progress, step {position.step}")
            if position.step >= args.max_steps:
                break
        else:
            if position.batches_in_epoch == 0:  # else this would loop for ever
                raise ValueError("The training data gave no batch at all; give more text (or a smaller "
                                 "--seq-len or --batch-size).")
            position.epoch, position.batches_in_epoch = position.epoch + 1, 0
    progress.close()
    seconds = time.perf_counter() - started

    if eval_loader is not None:
        eval_metrics = _evaluate(model, eval_loader, data, accelerator)
    summary = {"steps": position.step, "steps_this_run": position.step - steps_at_start, "seconds": seconds,
               "train_loss": train_loss, "metrics": eval_metrics, "model_dir": os.path.abspath(args.out_dir),
               "processes": accelerator.num_processes,
               "max_parameter_difference_between_processes": _parameter_spread(model, accelerator)}
    if main:
        if eval_metrics:
            metrics_log.append({"step": position.step, **{f"eval_{k}": v for k, v in eval_metrics.items()}})
        _save_final(accelerator.unwrap_model(model), tokenizer, args, summary, card_info)
        plot_curves(metrics_log.records(), args.out_dir)
        write_summary(summary, args.out_dir)
        print(format_summary(summary))
        if pusher is not None:
            pusher.push(args.out_dir, f"Trained {position.step} steps")
            for failure in pusher.close():
                print(f"Pushing to {args.push_to_hub} failed: {failure}")
    accelerator.wait_for_everyone()
    return summary


def _parameter_spread(model, accelerator) -> float:
    """The largest difference of any parameter between processes: 0.0 when data parallelism kept them in sync."""
    if accelerator.num_processes == 1:
        return 0.0
    spread = torch.zeros((), device=accelerator.device)
    for parameter in accelerator.unwrap_model(model).parameters():
        highest, lowest = parameter.detach().clone(), parameter.detach().clone()
        torch.distributed.all_reduce(highest, torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(lowest, torch.distributed.ReduceOp.MIN)
        spread = torch.maximum(spread, (highest - lowest).abs().max())
    return spread.item()


def _save_final(model, tokenizer, args, summary, card_info):
    model.save_pretrained(args.out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(args.out_dir)
    settings = {name: value for name, value in asdict(args).items()
                if name not in ("out_dir", "resume", "push_to_hub", "hub_private", "dataloader_num_workers")}
    training = {**(card_info or {})}
    training["settings"] = {**settings, "processes": summary["processes"], **training.get("settings", {})}
    training["metrics"] = {"train_loss": summary["train_loss"], **summary["metrics"]}
    write_model_card(args.out_dir, training=training)

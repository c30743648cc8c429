"""Our BERT's pre-training step (MLM + NSP) against transformers' BertForPreTraining.

Same config, same weights (transformers' seeded init, converted into ours), same batch, one process.
A step is forward with MLM labels at 15% of the real tokens and NSP labels, backward, AdamW step,
zero_grad, in train mode (dropout 0.1). Steps of the two models alternate (see `common.time_interleaved`).
Reported, in fp32 and under bf16 autocast: tokens/s per model (batch_size * seq_len per step, padding
included) median/min/max; the ratio of medians (ours / reference) and the median of per-repeat
speed-ups; each model's step peak memory, measured in a fresh process per model (see
`common.peak_memory_in_subprocess`).

    python -m benchmarks.bench_bert_pretraining [--preset mini] [--batch-size 8] [--seq-len 128]   # repo root
"""
import argparse

import torch
from transformers import BertConfig, BertForPreTraining

from benchmarks.common import (
    format_table,
    machine_info,
    paired_speedup,
    peak_memory_in_subprocess,
    throughput,
    time_interleaved,
    write_json,
)
from hf_course_models import HfcmBertForPreTraining
from hf_course_models.convert.bert import config_from_transformers, state_dict_from_transformers
from hf_course_models.modeling.bert.configuration_hfcm_bert import PRESETS

# bert-base-uncased's vocabulary: its size, special ids, and the first id of an ordinary word.
VOCAB_SIZE, PAD_ID, CLS_ID, SEP_ID, MASK_ID, FIRST_WORD_ID = 30522, 0, 101, 102, 103, 1000
MLM_PROBABILITY = 0.15
LOSS_TOLERANCE = 1e-4
MODELS = ("ours", "reference")


def new_model(name, preset):
    config = BertConfig(vocab_size=VOCAB_SIZE, **PRESETS[preset])
    if name == "reference":
        return BertForPreTraining(config)
    return HfcmBertForPreTraining(config_from_transformers(config))


def build_models(preset, seed):
    """transformers' model with seeded random weights, and ours holding the same weights."""
    torch.manual_seed(seed)
    reference = new_model("reference", preset)
    ours = new_model("ours", preset)
    ours.load_state_dict(state_dict_from_transformers(reference.state_dict(), ours.config))
    return {"ours": ours, "reference": reference}


def make_batch(batch_size, seq_len, seed):
    """[CLS] A [SEP] B [SEP] [PAD]..., rows of seq_len/2 to seq_len tokens; 15% of each row's word
    positions replaced by [MASK] and labelled with the original id; random NSP labels."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.arange(seq_len)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (batch_size,), generator=generator)
    lengths[0] = seq_len  # a padded batch is as long as its longest row
    splits = (lengths * torch.empty(batch_size).uniform_(0.3, 0.7, generator=generator)).long()
    attention_mask = positions < lengths[:, None]
    input_ids = torch.randint(FIRST_WORD_ID, VOCAB_SIZE, (batch_size, seq_len), generator=generator)
    input_ids[:, 0] = CLS_ID
    rows = torch.arange(batch_size)
    input_ids[rows, splits] = SEP_ID
    input_ids[rows, lengths - 1] = SEP_ID
    input_ids[~attention_mask] = PAD_ID
    labels = torch.full_like(input_ids, -100)
    for row, length in enumerate(lengths.tolist()):
        words = (input_ids[row] >= FIRST_WORD_ID).nonzero().squeeze(1)
        chosen = words[torch.randperm(len(words), generator=generator)[: round(MLM_PROBABILITY * length)]]
        labels[row, chosen] = input_ids[row, chosen]
        input_ids[row, chosen] = MASK_ID
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask.long(),
        "token_type_ids": ((positions > splits[:, None]) & attention_mask).long(),
        "labels": labels,
        "next_sentence_label": torch.randint(0, 2, (batch_size,), generator=generator),
    }


def training_step(model, batch, dtype):
    """The step to time: forward with both losses, backward, AdamW step, zero_grad; dropout on."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def memory_setup(name, preset, batch_size, seq_len, dtype, seed):
    """One model's step, for `peak_memory_in_subprocess` (memory does not depend on weight values)."""
    return training_step(new_model(name, preset), make_batch(batch_size, seq_len, seed), dtype)


def eval_losses(models, batch):
    with torch.no_grad():
        return {name: model.eval()(**batch).loss.item() for name, model in models.items()}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mini", choices=PRESETS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model and dtype")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model and dtype first")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps per peak-memory measurement")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None,
                        help="JSON file name under benchmarks/results/ (default: from preset, batch and length)")
    return parser.parse_args()


def main():
    args = parse_args()
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']} with "
          f"{machine['torch_threads']} threads, transformers {machine['transformers']}, "
          f"load average {machine['load_average_1m']:.1f}")
    batch = make_batch(args.batch_size, args.seq_len, args.seed)
    tokens_per_step = args.batch_size * args.seq_len
    print(f"preset {args.preset}, batch {args.batch_size} x {args.seq_len} tokens, "
          f"{int((batch['labels'] != -100).sum())} MLM labels")

    results, rows = {}, []
    for dtype in args.dtypes:
        models = build_models(args.preset, args.seed)
        losses = eval_losses(models, batch)
        difference = abs(losses["ours"] - losses["reference"])
        print(f"[{dtype}] same weights: eval-mode fp32 loss ours {losses['ours']:.6f}, "
              f"reference {losses['reference']:.6f}, |diff| {difference:.2e}")
        if difference > LOSS_TOLERANCE:
            raise SystemExit(f"The models disagree (|diff| {difference:.2e} > {LOSS_TOLERANCE}): not benchmarking.")
        steps = {name: training_step(model, batch, dtype) for name, model in models.items()}
        seconds = time_interleaved(steps, args.repeats, args.warmup)
        results[dtype] = {"eval_loss": losses}
        for name in MODELS:
            peak = peak_memory_in_subprocess(memory_setup, name, args.preset, args.batch_size, args.seq_len,
                                             dtype, args.seed, calls=args.memory_steps)
            results[dtype][name] = {
                "attn_implementation": models[name].config._attn_implementation,
                "sparse_mlm_head": getattr(models[name].config, "sparse_mlm_head", False),
                "tokens_per_s": throughput(seconds[name], tokens_per_step),
                "step_seconds": seconds[name],
                "peak_memory_growth_bytes": peak,
            }
        speed = {name: results[dtype][name]["tokens_per_s"] for name in MODELS}
        results[dtype]["ratio_of_medians"] = speed["ours"]["median"] / speed["reference"]["median"]
        results[dtype]["paired_speedup"] = paired_speedup(seconds["ours"], seconds["reference"])
        for name in MODELS:
            memory = results[dtype][name]["peak_memory_growth_bytes"]
            rows.append([dtype, name, *(f"{speed[name][key]:,.0f}" for key in ("median", "min", "max")),
                         f"{memory / 2**20:,.0f}",
                         f"{speed[name]['median'] / speed['reference']['median']:.2f}x"])

    print()
    header = ["dtype", "model", "tokens/s median", "min", "max", "step peak MiB", "vs reference"]
    print(format_table(header, rows), end="\n\n")
    path = write_json(
        args.output or f"bert_pretraining_{args.preset}_b{args.batch_size}_s{args.seq_len}.json",
        {
            "benchmark": "BERT pre-training step (MLM + NSP): hf_course_models vs transformers",
            "settings": vars(args) | {"vocab_size": VOCAB_SIZE, "tokens_per_step": tokens_per_step,
                                      "mlm_labels": int((batch["labels"] != -100).sum())},
            "peak_memory": "growth of resident memory (VmHWM after reset minus VmRSS before) over "
                           f"{args.memory_steps} steps in a fresh process per model",
            "machine": machine,
            "results": results,
        },
    )
    for dtype in args.dtypes:
        print(f"{dtype}: ratio of medians (ours / reference) {results[dtype]['ratio_of_medians']:.2f}x, "
              f"median of paired speed-ups {results[dtype]['paired_speedup']:.2f}x")
    print(f"written to {path}")


if __name__ == "__main__":
    main()

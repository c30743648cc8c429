"""Our GPT against transformers' GPT2LMHeadModel: a training step, and greedy decoding with `generate`.

Same config, same weights (transformers' seeded init, converted into ours with `hf_course_models.convert.gpt`),
same inputs, one process, steps of the two models alternating (see `common.time_interleaved`).

- machine: the peaks the numbers are compared with, measured in the same run: fp32 and bf16 `torch.matmul`
  (GFLOP/s) and the read bandwidth of a 1 GiB tensor (`sum`, and `copy_` counted as read + write).
- training: the `--train-preset` (mini) with GPT-2's 50,257-token vocabulary, batch 8 x 256 random tokens, the
  tokens themselves as labels; forward + backward + AdamW step + zero_grad in train mode (dropout 0.1), fp32 and
  under bf16 autocast. Tokens/s, ratio, peak memory (fresh process per model), and model FLOPs utilisation:
  (6 * non-embedding parameters + 12 * layers * seq_len * hidden) FLOPs per token (Kaplan et al. 2020 /
  PaLM's attention term) times tokens/s over the measured matmul peak; also with the tied LM head's
  6 * vocab * hidden, which on this small model is most of the work.
- decoding: the `--decode-preset` (gpt2, 124M) with random weights; greedy `generate` of 128 new tokens
  (min_new_tokens = max_new_tokens, so EOS cannot end either model early) after 32-token random prompts, batch
  1 and 8. Both models must produce identical tokens before anything is timed. Tokens/s counts new tokens
  (prefill included in the time); peak memory in a fresh process; batch 1 is compared with the
  memory-bandwidth bound: every weight (the tied embedding once, as the LM head) and the KV cache read once per
  new token, at the measured read bandwidth.
- profile: where a decode step's time goes in each model: per-step time inside `generate` split into the
  model's forward and generate's own bookkeeping (timed with forward hooks), operator times of decode-step
  forwards (torch.profiler) and Python-level cumulative times (cProfile, which inflates Python overhead).
- compile: both models with `cache_implementation="static"` and torch.compile (inductor) through generate's
  compile config, beside both with their default caches; reported on its own, not as the headline ratio.

    python -m benchmarks.bench_gpt [--parts machine training decoding profile compile] [--threads 2]  # repo root
"""
import argparse
import cProfile
import os
import pstats
import statistics
import time

import torch
from transformers import CompileConfig, GPT2Config, GPT2LMHeadModel

from benchmarks.common import (
    format_table,
    machine_info,
    paired_speedup,
    peak_memory_in_subprocess,
    throughput,
    time_interleaved,
    write_json,
)
from hf_course_models import HfcmGptForCausalLM
from hf_course_models.convert.gpt import config_from_transformers, state_dict_from_transformers
from hf_course_models.modeling.gpt.configuration_hfcm_gpt import PRESETS

VOCAB_SIZE = 50257  # GPT-2's byte-level BPE
LOSS_TOLERANCE = 1e-4
MODELS = ("ours", "reference")
PARTS = ("machine", "training", "decoding", "profile", "compile")


# ---------------------------------------------------------------------------------------------------------
# Models and inputs
# ---------------------------------------------------------------------------------------------------------

def reference_config(preset):
    sizes = PRESETS[preset]
    return GPT2Config(vocab_size=VOCAB_SIZE, n_embd=sizes["hidden_size"], n_layer=sizes["num_hidden_layers"],
                      n_head=sizes["num_attention_heads"], n_inner=sizes["intermediate_size"])


def new_model(name, preset):
    config = reference_config(preset)
    return GPT2LMHeadModel(config) if name == "reference" else HfcmGptForCausalLM(config_from_transformers(config))


def build_models(preset, seed):
    """transformers' model with seeded random weights, and ours holding the same weights."""
    torch.manual_seed(seed)
    reference = new_model("reference", preset)
    ours = new_model("ours", preset)
    ours.load_state_dict(state_dict_from_transformers(reference.state_dict(), reference.config))
    return {"ours": ours, "reference": reference}


def random_tokens(batch_size, length, seed):
    return torch.randint(0, VOCAB_SIZE, (batch_size, length), generator=torch.Generator().manual_seed(seed))


def parameter_counts(model):
    """All parameters (the tied embedding counted once), and those outside the token and position embeddings."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return total, total - embeddings


# ---------------------------------------------------------------------------------------------------------
# The machine's peaks
# ---------------------------------------------------------------------------------------------------------

def best_seconds(function, calls):
    function()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def matmul_gflops(size, dtype, calls):
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    return 2 * size**3 / best_seconds(lambda: torch.matmul(a, b), calls) / 1e9


def measure_machine(args):
    """Best-of-n matmul GFLOP/s and read bandwidth, with the threads the benchmark uses."""
    fp32 = matmul_gflops(args.fp32_matmul_size, torch.float32, calls=10)
    # Without native bf16 instructions bf16 matmuls are emulated and get slower as they grow (cache misses):
    # the peak is the best of a few sizes.
    bf16_by_size = {size: matmul_gflops(size, torch.bfloat16, calls=3) for size in args.bf16_matmul_sizes}
    data = torch.randn(2**28)  # 1 GiB, far beyond any cache
    target = torch.empty_like(data)
    nbytes = data.numel() * data.element_size()
    read_sum = nbytes / best_seconds(data.sum, calls=5) / 1e9
    copy = 2 * nbytes / best_seconds(lambda: target.copy_(data), calls=5) / 1e9
    return {
        "fp32_matmul_gflops": fp32,
        "fp32_matmul_size": args.fp32_matmul_size,
        "bf16_matmul_gflops": max(bf16_by_size.values()),
        "bf16_matmul_gflops_by_size": bf16_by_size,
        "read_bandwidth_gb_s": read_sum,
        "copy_bandwidth_gb_s": copy,
        "bandwidth_note": "read: sum of a 1 GiB fp32 tensor; copy: 1 GiB read + 1 GiB written, best of 5",
    }


# ---------------------------------------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------------------------------------

def training_step(model, input_ids, dtype):
    """The step to time: forward with the LM loss, backward, AdamW step, zero_grad; dropout on."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def training_memory_setup(name, preset, batch_size, seq_len, dtype, seed, threads):
    torch.set_num_threads(threads)
    return training_step(new_model(name, preset), random_tokens(batch_size, seq_len, seed), dtype)


def training_flops_per_token(model, seq_len):
    config = model.config
    _, non_embedding = parameter_counts(model)
    body = 6 * non_embedding + 12 * config.num_hidden_layers * seq_len * config.hidden_size
    return {"non_embedding_and_attention": body, "with_lm_head": body + 6 * config.vocab_size * config.hidden_size}


def run_training(args, peaks):
    input_ids = random_tokens(args.train_batch_size, args.train_seq_len, args.seed)
    tokens_per_step = input_ids.numel()
    results, rows = {}, []
    for dtype in args.dtypes:
        models = build_models(args.train_preset, args.seed)
        with torch.no_grad():
            losses = {name: model.eval()(input_ids=input_ids, labels=input_ids).loss.item()
                      for name, model in models.items()}
        difference = abs(losses["ours"] - losses["reference"])
        print(f"[train {dtype}] same weights: eval fp32 loss ours {losses['ours']:.6f}, reference "
              f"{losses['reference']:.6f}, |diff| {difference:.2e}")
        if difference > LOSS_TOLERANCE:
            raise SystemExit(f"The models disagree (|diff| {difference:.2e} > {LOSS_TOLERANCE}): not benchmarking.")
        steps = {name: training_step(model, input_ids, dtype) for name, model in models.items()}
        repeats = args.train_repeats if dtype == "fp32" else args.bf16_train_repeats
        seconds = time_interleaved(steps, repeats, args.train_warmup)
        flops = training_flops_per_token(models["ours"], args.train_seq_len)
        peak = peaks.get(f"{dtype}_matmul_gflops") if peaks else None
        results[dtype] = {"eval_loss": losses, "flops_per_token": flops, "repeats": repeats}
        for name in MODELS:
            speed = throughput(seconds[name], tokens_per_step)
            memory = peak_memory_in_subprocess(training_memory_setup, name, args.train_preset, args.train_batch_size,
                                               args.train_seq_len, dtype, args.seed, args.threads,
                                               calls=args.memory_steps)
            mfu = ({kind: value * speed["median"] / (peak * 1e9) for kind, value in flops.items()}
                   if peak else None)
            results[dtype][name] = {"tokens_per_s": speed, "step_seconds": seconds[name],
                                    "peak_memory_growth_bytes": memory, "model_flops_utilisation": mfu}
        speeds = {name: results[dtype][name]["tokens_per_s"]["median"] for name in MODELS}
        results[dtype]["ratio_of_medians"] = speeds["ours"] / speeds["reference"]
        results[dtype]["paired_speedup"] = paired_speedup(seconds["ours"], seconds["reference"])
        for name in MODELS:
            entry = results[dtype][name]
            mfu = entry["model_flops_utilisation"]
            rows.append([dtype, name, *(f"{entry['tokens_per_s'][k]:,.0f}" for k in ("median", "min", "max")),
                         f"{entry['peak_memory_growth_bytes'] / 2**20:,.0f}",
                         f"{mfu['non_embedding_and_attention']:.1%}" if mfu else "-",
                         f"{mfu['with_lm_head']:.1%}" if mfu else "-",
                         f"{speeds[name] / speeds['reference']:.2f}x"])
    print(format_table(["dtype", "model", "tokens/s median", "min", "max", "step peak MiB", "MFU", "MFU+head",
                        "vs reference"], rows), end="\n\n")
    return results


# ---------------------------------------------------------------------------------------------------------
# Greedy decoding
# ---------------------------------------------------------------------------------------------------------

def greedy_settings(new_tokens):
    # min_new_tokens = max_new_tokens: EOS is masked until the last step, so both models always do the same work.
    return dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=VOCAB_SIZE - 1)


def decode(model, prompt, new_tokens, **extra):
    attention_mask = torch.ones_like(prompt)  # unpadded prompts; given, so generate need not guess it

    def call():
        return model.generate(prompt, attention_mask=attention_mask, **greedy_settings(new_tokens), **extra)

    return call


def decoding_memory_setup(name, preset, batch_size, prompt_len, new_tokens, seed, threads):
    torch.set_num_threads(threads)
    return decode(new_model(name, preset).eval(), random_tokens(batch_size, prompt_len, seed), new_tokens)


def weight_bytes_per_new_token(model, prompt_len, new_tokens):
    """Bytes a batch-1 decode step must read at least: every weight once (the tied embedding once, as the LM
    head; the position table one row) and the KV cache, averaged over the steps."""
    config = model.config
    total, _ = parameter_counts(model)
    weights = (total - model.transformer.wpe.weight.numel() + config.hidden_size) * 4
    average_length = prompt_len + new_tokens / 2
    cache = 2 * config.num_hidden_layers * average_length * config.hidden_size * 4
    return weights + cache


def run_decoding(args, peaks):
    models = {name: model.eval() for name, model in build_models(args.decode_preset, args.seed).items()}
    results, rows = {}, []
    for batch_size in args.decode_batch_sizes:
        prompt = random_tokens(batch_size, args.prompt_len, args.seed + batch_size)
        calls = {name: decode(model, prompt, args.new_tokens) for name, model in models.items()}
        tokens = {name: call() for name, call in calls.items()}
        if not torch.equal(tokens["ours"], tokens["reference"]):
            raise SystemExit(f"batch {batch_size}: the models generate different tokens; not benchmarking.")
        print(f"[decode batch {batch_size}] identical tokens: {tuple(tokens['ours'].shape)}")
        seconds = time_interleaved(calls, args.decode_repeats, args.decode_warmup)
        new_tokens = batch_size * args.new_tokens
        result = {"identical_tokens": True}
        for name in MODELS:
            memory = peak_memory_in_subprocess(decoding_memory_setup, name, args.decode_preset, batch_size,
                                               args.prompt_len, args.new_tokens, args.seed, args.threads, calls=1)
            result[name] = {"tokens_per_s": throughput(seconds[name], new_tokens), "generate_seconds": seconds[name],
                            "peak_memory_growth_bytes": memory}
        speeds = {name: result[name]["tokens_per_s"]["median"] for name in MODELS}
        result["ratio_of_medians"] = speeds["ours"] / speeds["reference"]
        result["paired_speedup"] = paired_speedup(seconds["ours"], seconds["reference"])
        if batch_size == 1 and peaks:
            bytes_per_token = weight_bytes_per_new_token(models["ours"], args.prompt_len, args.new_tokens)
            bound = peaks["read_bandwidth_gb_s"] * 1e9 / bytes_per_token
            result["bandwidth_bound"] = {"bytes_per_new_token": bytes_per_token, "tokens_per_s": bound,
                                         **{f"{name}_fraction": speeds[name] / bound for name in MODELS}}
        results[f"batch_{batch_size}"] = result
        for name in MODELS:
            entry = result[name]
            fraction = result.get("bandwidth_bound", {}).get(f"{name}_fraction")
            rows.append([batch_size, name, *(f"{entry['tokens_per_s'][k]:,.1f}" for k in ("median", "min", "max")),
                         f"{entry['peak_memory_growth_bytes'] / 2**20:,.0f}",
                         f"{fraction:.0%}" if fraction else "-", f"{speeds[name] / speeds['reference']:.2f}x"])
    print(format_table(["batch", "model", "new tokens/s median", "min", "max", "peak MiB", "of bandwidth bound",
                        "vs reference"], rows), end="\n\n")
    return results, models


# ---------------------------------------------------------------------------------------------------------
# Where a decode step's time goes
# ---------------------------------------------------------------------------------------------------------

def forward_times_inside_generate(model, prompt, new_tokens):
    """Seconds of the whole generate call and of each forward it makes (the first is the prefill)."""
    forwards, starts = [], []
    pre = model.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    post = model.register_forward_hook(lambda *_: forwards.append(time.perf_counter() - starts[-1]))
    try:
        start = time.perf_counter()
        model.generate(prompt, attention_mask=torch.ones_like(prompt), **greedy_settings(new_tokens))
        total = time.perf_counter() - start
    finally:
        pre.remove()
        post.remove()
    return total, forwards


def decode_step_inputs(model, prompt):
    """A prefilled cache and the arguments generate passes for the next (single-token) step."""
    with torch.no_grad():
        output = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    next_token = output.logits[:, -1].argmax(-1, keepdim=True)
    position = torch.tensor([[prompt.shape[1]]])
    return dict(input_ids=next_token, cache=output.cache, position_ids=position, use_cache=True, logits_to_keep=1)


def step_time_breakdown(models, prompt, new_tokens, repeats):
    """Per decode step: generate's total, the model's forward, and the rest (generate's own bookkeeping:
    input preparation, logits processors, stopping criteria, concatenation), medians over repeats."""
    breakdown = {}
    for name, model in models.items():
        totals, forwards, prefills = [], [], []
        for _ in range(repeats):
            total, times = forward_times_inside_generate(model, prompt, new_tokens)
            totals.append(total)
            prefills.append(times[0])
            forwards.append(statistics.median(times[1:]))
        steps = new_tokens - 1
        total, prefill, forward = (statistics.median(values) for values in (totals, prefills, forwards))
        breakdown[name] = {"generate_ms_per_new_token": 1e3 * total / new_tokens,
                           "prefill_ms": 1e3 * prefill,
                           "decode_forward_ms": 1e3 * forward,
                           "generate_bookkeeping_ms_per_step": 1e3 * (total - prefill - steps * forward) / steps}
    return breakdown


def operator_profile(model, prompt, steps, top):
    """torch.profiler over `steps` decode-step forwards: the most expensive operators, in ms per step."""
    kwargs = decode_step_inputs(model, prompt)
    with torch.no_grad():
        model(**kwargs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(steps):
                model(**kwargs)
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in events)
    return {
        "self_cpu_ms_per_step_all_ops": total_self / 1e3 / steps,
        "operator_calls_per_step": sum(e.count for e in events) / steps,
        "top_ops": [{"op": e.key, "calls_per_step": e.count / steps, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps}
                    for e in events[:top]],
    }


def python_profile(model, prompt, steps, top):
    """cProfile over `steps` decode-step forwards: functions by cumulative time, in ms per step."""
    kwargs = decode_step_inputs(model, prompt)
    profiler = cProfile.Profile()
    with torch.no_grad():
        model(**kwargs)
        profiler.enable()
        for _ in range(steps):
            model(**kwargs)
        profiler.disable()
    stats = pstats.Stats(profiler).stats
    rows = []
    for (filename, line, function), (_, calls, _, cumulative, _) in stats.items():
        where = f"{filename.rsplit('site-packages/', 1)[-1].rsplit('/work/main/', 1)[-1]}:{line}({function})"
        rows.append({"function": where, "calls_per_step": calls / steps, "cumulative_ms_per_step": 1e3 * cumulative / steps})
    rows.sort(key=lambda r: r["cumulative_ms_per_step"], reverse=True)
    return rows[:top]


def lm_head_all_positions_ms(model, prompt):
    """What computing logits for every prompt position (logits_to_keep=0) would cost in the prefill, over 1."""
    with torch.no_grad():
        all_positions = best_seconds(lambda: model(input_ids=prompt, use_cache=True, logits_to_keep=0), calls=3)
        last = best_seconds(lambda: model(input_ids=prompt, use_cache=True, logits_to_keep=1), calls=3)
    return {"prefill_logits_all_positions_ms": 1e3 * all_positions, "prefill_logits_last_position_ms": 1e3 * last}


def run_profile(args, models):
    prompt = random_tokens(1, args.prompt_len, args.seed + 1)
    result = {"step_breakdown": step_time_breakdown(models, prompt, args.new_tokens, args.profile_repeats)}
    for name, model in models.items():
        result[name] = {"operators": operator_profile(model, prompt, args.profile_steps, args.profile_top),
                        "python": python_profile(model, prompt, args.profile_steps, args.profile_top),
                        "prefill_lm_head": lm_head_all_positions_ms(model, prompt)}
    rows = [[name, *(f"{value:.2f}" for value in entry.values())] for name, entry in result["step_breakdown"].items()]
    print(format_table(["model", "generate ms/token", "prefill ms", "decode forward ms", "generate bookkeeping ms"],
                       rows), end="\n\n")
    for name in MODELS:
        operators = result[name]["operators"]
        print(f"{name}: {operators['operator_calls_per_step']:.0f} operator calls, "
              f"{operators['self_cpu_ms_per_step_all_ops']:.2f} ms self CPU per decode step; top operators:")
        for op in operators["top_ops"][:8]:
            print(f"    {op['op']:<40} {op['calls_per_step']:6.1f} calls {op['self_ms_per_step']:8.3f} ms")
        print(f"{name}: Python functions by cumulative time (cProfile) per decode step:")
        for row in result[name]["python"][:args.profile_print]:
            print(f"    {row['function'][-90:]:<90} {row['calls_per_step']:6.1f} calls "
                  f"{row['cumulative_ms_per_step']:8.3f} ms")
    return result


# ---------------------------------------------------------------------------------------------------------
# Static cache + torch.compile (both models)
# ---------------------------------------------------------------------------------------------------------

def run_compile(args, models):
    """Both models with a StaticCache compiled by inductor (generate compiles the decode steps), against both
    with the default DynamicCache, and ours with an uncompiled StaticCache; batch 1."""
    prompt = random_tokens(1, args.prompt_len, args.seed + 1)
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # generate compiles only on accelerators unless told (no init arg)
    calls, compiled = {}, []
    for name, model in models.items():
        calls[f"{name} dynamic_cache"] = decode(model, prompt, args.new_tokens)
        if name == "ours":
            calls["ours static_cache"] = decode(model, prompt, args.new_tokens, cache_implementation="static",
                                                disable_compile=True)
        calls[f"{name} static_cache_compiled"] = decode(model, prompt, args.new_tokens,
                                                        cache_implementation="static", compile_config=compile_config)
        compiled.append(f"{name} static_cache_compiled")
    expected = calls["ours dynamic_cache"]()
    first_call_seconds, outputs = {}, {}
    for name in compiled:
        start = time.perf_counter()
        try:
            outputs[name] = calls[name]()
        except Exception as error:  # inductor needs a working C++ toolchain; report instead of failing the run
            return {"error": f"{name}: {type(error).__name__}: {error}"[:2000]}
        first_call_seconds[name] = time.perf_counter() - start
    identical = {name: torch.equal(outputs[name] if name in outputs else call(), expected)
                 for name, call in calls.items()}
    seconds = time_interleaved(calls, args.decode_repeats, args.decode_warmup)
    result = {"first_compiled_call_seconds": first_call_seconds, "identical_tokens": identical}
    for name in calls:
        result[name] = {"tokens_per_s": throughput(seconds[name], args.new_tokens), "generate_seconds": seconds[name]}
    reference = result["reference dynamic_cache"]["tokens_per_s"]["median"]
    rows = [[name, f"{result[name]['tokens_per_s']['median']:.1f}",
             f"{result[name]['tokens_per_s']['median'] / reference:.2f}x", identical[name]] for name in calls]
    print(format_table(["batch 1", "new tokens/s median", "vs reference dynamic_cache", "same tokens"], rows))
    print(f"first compiled calls (compilation included): {first_call_seconds}\n")
    return result


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp32-matmul-size", type=int, default=2048)
    parser.add_argument("--bf16-matmul-sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--train-preset", default="mini", choices=PRESETS)
    parser.add_argument("--train-batch-size", type=int, default=8)
    parser.add_argument("--train-seq-len", type=int, default=256)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--train-repeats", type=int, default=10, help="timed fp32 steps per model")
    parser.add_argument("--bf16-train-repeats", type=int, default=3,
                        help="timed bf16 steps per model (emulated bf16 is slow without avx512_bf16/amx)")
    parser.add_argument("--train-warmup", type=int, default=1)
    parser.add_argument("--memory-steps", type=int, default=2, help="training steps per peak-memory measurement")
    parser.add_argument("--decode-preset", default="gpt2", choices=PRESETS)
    parser.add_argument("--decode-batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--decode-repeats", type=int, default=5)
    parser.add_argument("--decode-warmup", type=int, default=1)
    parser.add_argument("--profile-repeats", type=int, default=3, help="generate calls timed with forward hooks")
    parser.add_argument("--profile-steps", type=int, default=20, help="decode-step forwards profiled")
    parser.add_argument("--profile-top", type=int, default=40)
    parser.add_argument("--profile-print", type=int, default=25)
    parser.add_argument("--output", default="gpt_training_and_decoding.json", help="file name under results/")
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']} with "
          f"{machine['torch_threads']} threads, transformers {machine['transformers']}, "
          f"load average {machine['load_average_1m']:.1f}")
    results = {}
    peaks = None
    if "machine" in args.parts:
        peaks = results["machine_peaks"] = measure_machine(args)
        print(f"fp32 matmul {peaks['fp32_matmul_gflops']:.1f} GFLOP/s, bf16 matmul {peaks['bf16_matmul_gflops']:.2f} "
              f"GFLOP/s (by size: { {k: round(v, 2) for k, v in peaks['bf16_matmul_gflops_by_size'].items()} }), "
              f"read {peaks['read_bandwidth_gb_s']:.1f} GB/s, copy {peaks['copy_bandwidth_gb_s']:.1f} GB/s\n")
    if "training" in args.parts:
        results["training"] = run_training(args, peaks)
    models = None
    if "decoding" in args.parts:
        results["decoding"], models = run_decoding(args, peaks)
    if {"profile", "compile"} & set(args.parts) and models is None:
        models = {name: model.eval() for name, model in build_models(args.decode_preset, args.seed).items()}
    if "profile" in args.parts:
        results["profile"] = run_profile(args, models)
    if "compile" in args.parts:
        results["compile"] = run_compile(args, models)
    machine["load_average_1m_at_end"] = os.getloadavg()[0]
    path = write_json(args.output, {
        "benchmark": "GPT training step and greedy decoding: hf_course_models vs transformers' GPT2LMHeadModel",
        "settings": vars(args) | {"vocab_size": VOCAB_SIZE},
        "peak_memory": "growth of resident memory (VmHWM after reset minus VmRSS before) in a fresh process per "
                       "model: training over --memory-steps steps; decoding over one generate call",
        "machine": machine,
        "results": results,
    })
    for dtype, entry in results.get("training", {}).items():
        print(f"training {dtype}: ours / reference {entry['ratio_of_medians']:.2f}x (paired {entry['paired_speedup']:.2f}x)")
    for batch, entry in results.get("decoding", {}).items():
        print(f"decoding {batch}: ours / reference {entry['ratio_of_medians']:.2f}x (paired {entry['paired_speedup']:.2f}x)")
    print(f"written to {path}")


if __name__ == "__main__":
    main()

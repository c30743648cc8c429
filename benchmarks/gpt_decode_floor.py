"""How close does batch-1 greedy decoding of gpt2 (124M) come to what this CPU allows?

`bench_gpt.py` compares our `generate` with transformers' GPT2LMHeadModel. This script asks what is left to win:
it times, interleaved with both `generate` calls and on the same weights,
- "bare loop": greedy decoding with no `generate`, no cache object and no module but the projections: per new
  token and layer two `layer_norm`s, the four weight products (the model's own `HfcmGptProjection`s), one
  `scaled_dot_product_attention` over a preallocated key/value buffer and GELU; then the model's LM-head product
  and an argmax. Its tokens must equal our `generate`'s, or nothing is timed.
- "weight products only": the 48 block products and the LM head of one decode step on fixed inputs, nothing
  else, twice: as one MKL call per weight (`addmm`; `W_e @ h` for the head), which runs on one thread, and as
  the model computes them, cut into one slice per thread.

    python -m benchmarks.gpt_decode_floor [--repeats 5]   # from the repository root
"""
import argparse

import torch
import torch.nn.functional as F

from benchmarks.bench_gpt import VOCAB_SIZE, build_models, decode, random_tokens
from benchmarks.common import format_table, machine_info, throughput, time_interleaved, write_json
from hf_course_models.modeling.gpt.modeling_hfcm_gpt import _lm_logits

PROMPT_LEN, NEW_TOKENS = 32, 128


def layer_norm(hidden, norm):
    return F.layer_norm(hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def bare_greedy(model, prompt, new_tokens):
    """Greedy tokens after `prompt` [1, T]: the prefill through the model, then the bare decode loop."""
    decoder, config = model.transformer, model.config
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    total = prompt.shape[1] + new_tokens
    keys = torch.zeros(config.num_hidden_layers, 1, heads, total, head_dim)
    values = torch.zeros_like(keys)
    output = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    for index, layer in enumerate(output.cache.layers):
        keys[index, :, :, : prompt.shape[1]] = layer.keys
        values[index, :, :, : prompt.shape[1]] = layer.values
    token, position, tokens = output.logits[0, -1].argmax(), prompt.shape[1], []
    for _ in range(new_tokens - 1):
        tokens.append(int(token))
        hidden = decoder.wte.weight[token][None] + decoder.wpe.weight[position][None]
        for index, block in enumerate(decoder.layers):
            attention, mlp = block.attention, block.mlp
            qkv = attention.qkv(layer_norm(hidden, block.attention_norm)).view(3, heads, head_dim)
            keys[index, 0, :, position], values[index, 0, :, position] = qkv[1], qkv[2]
            context = F.scaled_dot_product_attention(qkv[0][None, :, None], keys[index, :, :, : position + 1],
                                                     values[index, :, :, : position + 1])
            hidden = hidden + attention.out(context.reshape(1, -1))
            inner = F.gelu(mlp.intermediate(layer_norm(hidden, block.mlp_norm)), approximate="tanh")
            hidden = hidden + mlp.output(inner)
        token = _lm_logits(layer_norm(hidden, decoder.final_norm)[None], model.lm_head)[0, 0].argmax()
        position += 1
    tokens.append(int(token))
    return tokens


def weight_products(model, split):
    """One decode step's weight products on fixed inputs: one MKL call per weight, or as the model splits them."""
    decoder = model.transformer
    projections = [projection for block in decoder.layers
                   for projection in (block.attention.qkv, block.attention.out, block.mlp.intermediate, block.mlp.output)]
    inputs = [torch.randn(1, projection.weight.shape[0]) for projection in projections]
    hidden = torch.randn(1, 1, decoder.wte.weight.shape[1])

    def step():
        if split:
            for projection, x in zip(projections, inputs):
                projection(x)
            return _lm_logits(hidden, model.lm_head)
        for projection, x in zip(projections, inputs):
            torch.addmm(projection.bias, x, projection.weight)
        return decoder.wte.weight @ hidden[0, 0]

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="gpt_decode_floor_gpt2_b1.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    models = {name: model.eval() for name, model in build_models("gpt2", seed=0).items()}
    prompt = random_tokens(1, PROMPT_LEN, seed=1)
    ours = models["ours"]
    with torch.no_grad():
        expected = decode(ours, prompt, NEW_TOKENS)()[0, PROMPT_LEN:].tolist()
        if bare_greedy(ours, prompt, NEW_TOKENS) != expected:
            raise SystemExit("The bare loop's tokens differ from our generate's: not timing.")
        one_call, split = weight_products(ours, split=False), weight_products(ours, split=True)
        calls = {
            "ours generate": decode(ours, prompt, NEW_TOKENS),
            "reference generate": decode(models["reference"], prompt, NEW_TOKENS),
            "bare loop": lambda: bare_greedy(ours, prompt, NEW_TOKENS),
            "weight products only, one MKL call each": lambda: [one_call() for _ in range(NEW_TOKENS)],
            "weight products only, split per thread": lambda: [split() for _ in range(NEW_TOKENS)],
        }
        seconds = time_interleaved(calls, args.repeats, args.warmup)
    speed = {name: throughput(seconds[name], NEW_TOKENS) for name in calls}
    reference = speed["reference generate"]["median"]
    rows = [[name, f"{speed[name]['median']:.1f}", f"{1e3 / speed[name]['median']:.1f}",
             f"{speed[name]['median'] / reference:.2f}x"] for name in calls]
    print(format_table(["batch 1, gpt2, greedy", "new tokens/s", "ms per token", "vs reference generate"], rows))
    write_json(args.output, {
        "benchmark": "gpt2 batch-1 greedy decoding: generate (ours, reference) against a bare loop and the weight "
                     "products alone, same weights",
        "settings": vars(args) | {"prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS, "vocab_size": VOCAB_SIZE},
        "machine": machine,
        "identical_tokens": True,
        "results": {name: {"tokens_per_s": speed[name], "call_seconds": seconds[name],
                           "vs_reference_generate": speed[name]["median"] / reference} for name in calls},
    })


if __name__ == "__main__":
    main()

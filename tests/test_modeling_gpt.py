"""Specification tests for hf_course_models' GPT family (configuration, decoder, heads, Auto registration).

Each test states one property of the issue's specification (GPT-1 / GPT-2 by config, tied LM head, causal
attention, heads, bad input) and fails if that property breaks. Models are tiny and real (no mocks); the
paper-sized presets are only built on the meta device. Generation and conversion have their own files.
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from hf_course_models import (
    HfcmGptConfig,
    HfcmGptDoubleHeadsModel,
    HfcmGptForCausalLM,
    HfcmGptForSequenceClassification,
    HfcmGptModel,
)

VOCAB = 99
PAD = 0
MAX_POS = 64
NUM_LABELS = 3
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=MAX_POS, hidden_dropout_prob=0.0, embedding_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, bos_token_id=1, eos_token_id=1, pad_token_id=PAD)
PRESET_NAMES = ("tiny", "mini", "small", "base", "gpt1", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread: on a shared 2-core machine a parallel region (sdpa's CPU kernel
    opens one per call) can wait milliseconds for its second thread to be scheduled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides):
    return HfcmGptConfig(preset="tiny", **{**TINY, **overrides})


def make_model(model_class, seed=0, **overrides):
    """A reproducibly random model with every parameter (LayerNorms and biases too) moved off its initial
    value, so that no term of a formula can hide behind a zero or a one."""
    torch.manual_seed(seed)
    model = model_class(tiny_config(**overrides))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def padded_batch(lengths=(10, 7, 4), side="right", seed=1):
    """input_ids / attention_mask for sequences of the given lengths, padded with PAD on one side."""
    generator = torch.Generator().manual_seed(seed)
    seq_length = max(lengths)
    input_ids = torch.full((len(lengths), seq_length), PAD)
    attention_mask = torch.zeros(len(lengths), seq_length, dtype=torch.long)
    for row, length in enumerate(lengths):
        span = slice(0, length) if side == "right" else slice(seq_length - length, seq_length)
        input_ids[row, span] = torch.randint(2, VOCAB, (length,), generator=generator)
        attention_mask[row, span] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask)


def max_abs_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------------------
# Configuration and presets
# ---------------------------------------------------------------------------------------------------------

EXPECTED_PRESETS = {  # hidden, layers, heads, intermediate, context, vocabulary, LayerNorm position
    "tiny": (64, 2, 2, 256, 1024, 50257, "pre"),
    "mini": (256, 4, 4, 1024, 1024, 50257, "pre"),
    "small": (512, 4, 8, 2048, 1024, 50257, "pre"),
    "base": (768, 12, 12, 3072, 1024, 50257, "pre"),
    "gpt1": (768, 12, 12, 3072, 512, 40478, "post"),
    "gpt2": (768, 12, 12, 3072, 1024, 50257, "pre"),
    "gpt2-medium": (1024, 24, 16, 4096, 1024, 50257, "pre"),
    "gpt2-large": (1280, 36, 20, 5120, 1024, 50257, "pre"),
    "gpt2-xl": (1600, 48, 25, 6400, 1024, 50257, "pre"),
}


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_presets_are_the_documented_sizes(preset):
    config = HfcmGptConfig(preset=preset)
    sizes = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
             config.max_position_embeddings, config.vocab_size, config.layer_norm_position)
    assert sizes == EXPECTED_PRESETS[preset]
    assert config.model_type == "hfcm_gpt"
    gpt1 = preset == "gpt1"
    # GPT-2 §2.3's scaled residual initialisation and <|endoftext|> (50256) belong to GPT-2 only.
    assert config.scale_residual_init is not gpt1
    assert (config.bos_token_id, config.eos_token_id) == ((None, None) if gpt1 else (50256, 50256))
    assert config.tie_word_embeddings is True and config.use_cache is True


def test_defaults_without_preset_are_gpt2_as_transformers():
    ours, reference = HfcmGptConfig(), transformers.GPT2Config()
    pairs = {"vocab_size": "vocab_size", "hidden_size": "n_embd", "num_hidden_layers": "n_layer",
             "num_attention_heads": "n_head", "max_position_embeddings": "n_positions",
             "hidden_dropout_prob": "resid_pdrop", "embedding_dropout_prob": "embd_pdrop",
             "attention_probs_dropout_prob": "attn_pdrop", "layer_norm_eps": "layer_norm_epsilon",
             "initializer_range": "initializer_range", "bos_token_id": "bos_token_id",
             "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id"}
    for name, reference_name in pairs.items():
        assert getattr(ours, name) == getattr(reference, reference_name), name
    assert ours.intermediate_size == 4 * reference.n_embd
    assert ours.lm_loss_weight == 0.5  # GPT-1 §3.2: lambda = 0.5


@pytest.mark.parametrize("approximation", ["gelu_new", "gelu"])
def test_activation_is_the_tanh_gelu_both_references_use(approximation):
    """transformers' GPT-2 uses "gelu_new"; OpenAI-GPT's "gelu" is the same tanh approximation."""
    from transformers.models.openai.modeling_openai import ACT_FNS

    reference = (transformers.activations.ACT2FN["gelu_new"] if approximation == "gelu_new"
                 else ACT_FNS["gelu"])
    ours = transformers.activations.ACT2FN[HfcmGptConfig().hidden_act]
    x = torch.linspace(-8, 8, 10001)
    assert max_abs_diff(ours(x), reference(x)) <= 1e-6
    assert max_abs_diff(ours(x), F.gelu(x)) > 1e-4  # and not the exact erf GELU


def test_keyword_arguments_and_aliases_override_the_preset():
    config = HfcmGptConfig(preset="mini", hidden_size=128, num_hidden_layers=12, vocab_size=500,
                           bos_token_id=1, eos_token_id=1)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (128, 12, 500)
    assert (config.num_attention_heads, config.intermediate_size) == (4, 1024)
    aliased = HfcmGptConfig(preset="tiny", n_embd=96, n_layer=3, n_head=3, n_positions=128, n_inner=200)
    assert (aliased.hidden_size, aliased.num_hidden_layers, aliased.num_attention_heads,
            aliased.max_position_embeddings, aliased.intermediate_size) == (96, 3, 3, 128, 200)
    assert (aliased.n_embd, aliased.n_layer) == (96, 3)


def test_config_for_model_and_round_trip(tmp_path):
    config = AutoConfig.for_model("hfcm_gpt", preset="gpt1", vocab_size=123, num_labels=4)
    assert type(config) is HfcmGptConfig
    assert (config.hidden_size, config.vocab_size, config.num_labels, config.layer_norm_position) == (
        768, 123, 4, "post")
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hfcm_gpt"
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is HfcmGptConfig
    assert reloaded.to_diff_dict() == config.to_diff_dict()


@pytest.mark.parametrize("preset, reference_class, reference_config", [
    ("gpt2", transformers.GPT2LMHeadModel, {}),
    ("gpt2-medium", transformers.GPT2LMHeadModel, dict(n_embd=1024, n_layer=24, n_head=16)),
    ("gpt2-large", transformers.GPT2LMHeadModel, dict(n_embd=1280, n_layer=36, n_head=20)),
    ("gpt2-xl", transformers.GPT2LMHeadModel, dict(n_embd=1600, n_layer=48, n_head=25)),
    ("gpt1", transformers.OpenAIGPTLMHeadModel, {}),
])
def test_paper_presets_have_the_reference_parameter_counts(preset, reference_class, reference_config):
    config_class = transformers.GPT2Config if reference_class is transformers.GPT2LMHeadModel \
        else transformers.OpenAIGPTConfig
    with torch.device("meta"):
        ours = HfcmGptForCausalLM(HfcmGptConfig(preset=preset))
        reference = reference_class(config_class(**reference_config))
    count = sum(p.numel() for p in ours.parameters())  # the tied LM head counts once
    assert count == sum(p.numel() for p in reference.parameters())
    if preset == "gpt2":
        assert count == 124_439_808


def test_initialisation_scales_the_residual_projections():
    """GPT-2 §2.3: residual projections ~ N(0, (0.02 / sqrt(2 * n_layers))^2); everything else N(0, 0.02^2)."""
    torch.manual_seed(0)
    layers = 8
    model = HfcmGptForCausalLM(tiny_config(hidden_size=128, num_hidden_layers=layers, intermediate_size=512,
                                           vocab_size=2000))
    blocks = model.transformer.layers
    residual = torch.cat([w.flatten() for b in blocks for w in (b.attention.out.weight, b.mlp.output.weight)])
    others = torch.cat([w.flatten() for b in blocks for w in (b.attention.qkv.weight, b.mlp.intermediate.weight)])
    expected = 0.02 / math.sqrt(2 * layers)
    # ~650k samples each: the standard deviation is estimated to ~0.1%.
    assert abs(residual.std().item() / expected - 1) < 0.01, residual.std().item()
    assert abs(residual.mean().item()) < 1e-4
    assert abs(others.std().item() / 0.02 - 1) < 0.01
    assert abs(model.transformer.wte.weight.std().item() / 0.02 - 1) < 0.01
    assert abs(model.transformer.wpe.weight.std().item() / 0.02 - 1) < 0.02
    for block in blocks:
        assert torch.all(block.attention.out.bias == 0) and torch.all(block.attention.qkv.bias == 0)
        assert torch.all(block.attention_norm.weight == 1) and torch.all(block.attention_norm.bias == 0)
    # GPT-1 initialises every weight with N(0, 0.02^2).
    torch.manual_seed(0)
    gpt1 = HfcmGptForCausalLM(tiny_config(hidden_size=128, num_hidden_layers=layers, intermediate_size=512,
                                          layer_norm_position="post", scale_residual_init=False))
    unscaled = torch.cat([b.mlp.output.weight.flatten() for b in gpt1.transformer.layers])
    assert abs(unscaled.std().item() / 0.02 - 1) < 0.01


# ---------------------------------------------------------------------------------------------------------
# Bad input: clear errors, raised early
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, named", [
    (dict(hidden_size=100, num_attention_heads=3), ["hidden_size (100)", "num_attention_heads (3)"]),
    (dict(layer_norm_position="middle"), ["layer_norm_position", "'middle'", "'pre'", "'post'"]),
    (dict(vocab_size=100, eos_token_id=50256), ["bos_token_id=50256", "eos_token_id=50256", "vocab_size=100"]),
    (dict(hidden_dropout_prob=1.5), ["hidden_dropout_prob", "1.5"]),
    (dict(hidden_act="gelu_fancy"), ["gelu_fancy"]),
    (dict(lm_loss_weight=-1), ["lm_loss_weight", "-1"]),
    (dict(num_hidden_layers=0), ["num_hidden_layers", "0"]),
])
def test_bad_config_values_fail_at_config_time_naming_them(settings, named):
    for make in (lambda: HfcmGptConfig(**settings), lambda: AutoConfig.for_model("hfcm_gpt", **settings)):
        with pytest.raises(ValueError) as error:
            make()
        assert all(part in str(error.value) for part in named), str(error.value)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        HfcmGptConfig(preset="gpt3")
    assert "gpt3" in str(error.value) and all(name in str(error.value) for name in PRESET_NAMES)


@pytest.mark.parametrize("model_class", [HfcmGptModel, HfcmGptForCausalLM, HfcmGptForSequenceClassification])
def test_token_id_outside_the_vocabulary_is_a_value_error_naming_it(model_class):
    model = make_model(model_class, num_labels=NUM_LABELS)
    input_ids = torch.randint(2, VOCAB, (2, 6))
    for bad in (VOCAB, VOCAB + 50, -1):
        ids = input_ids.clone()
        ids[1, 3] = bad
        with pytest.raises(ValueError, match=rf"input_ids contains {bad}, outside \[0, {VOCAB}\).*resize_token"):
            model(input_ids=ids)
    model(input_ids=torch.full((1, 4), VOCAB - 1))  # the last id is fine


def test_sequence_beyond_the_context_is_a_value_error_naming_the_context():
    model = make_model(HfcmGptForCausalLM, max_position_embeddings=16)
    with pytest.raises(ValueError, match=r"position_ids contains 16, outside \[0, 16\).*context of 16 tokens"):
        model(input_ids=torch.randint(2, VOCAB, (2, 17)))  # not an IndexError from inside the embedding
    with pytest.raises(ValueError, match="position_ids contains 16"):
        model(inputs_embeds=torch.randn(1, 17, 32))
    with pytest.raises(ValueError, match="position_ids contains 20"):
        model(input_ids=torch.randint(2, VOCAB, (1, 2)), position_ids=torch.tensor([[3, 20]]))
    # Cached and new tokens together count: 10 cached + 7 new positions pass the end of a 16-position table.
    cache = model(input_ids=torch.randint(2, VOCAB, (1, 10)), use_cache=True).cache
    with pytest.raises(ValueError, match="position_ids contains 16.*empty cache"):
        model(input_ids=torch.randint(2, VOCAB, (1, 7)), cache=cache)
    model(input_ids=torch.randint(2, VOCAB, (2, 16)))  # exactly the context is fine


def test_exactly_one_of_input_ids_and_inputs_embeds():
    model = make_model(HfcmGptModel)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(input_ids=torch.ones(1, 3, dtype=torch.long), inputs_embeds=torch.randn(1, 3, 32))


# ---------------------------------------------------------------------------------------------------------
# Auto classes, save / load, the tied LM head
# ---------------------------------------------------------------------------------------------------------

AUTO_CLASSES = [
    (AutoModel, HfcmGptModel),
    (AutoModelForCausalLM, HfcmGptForCausalLM),
    (AutoModelForSequenceClassification, HfcmGptForSequenceClassification),
]


@pytest.mark.parametrize("layer_norm_position", ["pre", "post"])
@pytest.mark.parametrize("auto_class, model_class", AUTO_CLASSES, ids=lambda c: c.__name__)
def test_auto_class_resolves_and_round_trips_exactly(auto_class, model_class, layer_norm_position, tmp_path):
    config = AutoConfig.for_model("hfcm_gpt", **{**TINY, "preset": "tiny", "num_labels": NUM_LABELS,
                                                 "layer_norm_position": layer_norm_position})
    torch.manual_seed(0)
    model = auto_class.from_config(config).eval()
    assert type(model) is model_class
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == ("hfcm_gpt", [model_class.__name__])

    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is model_class
    expected_state, actual_state = model.state_dict(), reloaded.state_dict()
    assert expected_state.keys() == actual_state.keys()
    assert all(torch.equal(actual_state[name], tensor) for name, tensor in expected_state.items())
    inputs = padded_batch()
    with torch.no_grad():
        expected, actual = model(**inputs).to_tuple()[0], reloaded(**inputs).to_tuple()[0]
    assert max_abs_diff(expected, actual) <= 1e-6
    assert type(AutoModel.from_pretrained(tmp_path)) is HfcmGptModel


def test_auto_tokenizer_is_transformers_gpt2_tokenizer(tmp_path):
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    assert TOKENIZER_MAPPING[HfcmGptConfig] is not None
    # A directory with our config.json and bare vocab.json + merges.txt (no tokenizer_class) loads through the
    # registry as transformers' own GPT2Tokenizer.
    vocab = {token: i for i, token in enumerate(["<|endoftext|>", "h", "e", "l", "o", "he", "ll", "hell", "hello"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh e\nl l\nhe ll\nhell o\n")
    tiny_config(vocab_size=len(vocab), bos_token_id=0, eos_token_id=0, pad_token_id=None).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tokenizer, transformers.GPT2Tokenizer)
    assert tokenizer("hello")["input_ids"] == [8]


@pytest.mark.parametrize("model_class", [HfcmGptForCausalLM, HfcmGptDoubleHeadsModel])
def test_lm_head_is_the_token_embedding_matrix_stored_once(model_class, tmp_path):
    model = make_model(model_class)
    embeddings = model.transformer.wte.weight
    assert model.lm_head.weight is embeddings and model.lm_head.bias is None
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        keys = set(weights.keys())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys

    reloaded = model_class.from_pretrained(tmp_path).eval()
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight
    assert torch.equal(reloaded.transformer.wte.weight, embeddings)
    # logits = H·W_eᵀ, with H the decoder's output.
    input_ids = torch.randint(2, VOCAB, (2, 1, 9)) if model_class is HfcmGptDoubleHeadsModel \
        else torch.randint(2, VOCAB, (2, 9))
    with torch.no_grad():
        logits = reloaded(input_ids=input_ids).logits
        hidden = reloaded.transformer(input_ids=input_ids.view(-1, 9)).last_hidden_state
    assert max_abs_diff(logits.view(-1, 9, VOCAB), hidden @ embeddings.T) <= 1e-5
    # Still one tensor during training: moving an embedding row moves the head's row.
    with torch.no_grad():
        reloaded.transformer.wte.weight[5] += 1.0
    assert torch.equal(reloaded.lm_head.weight[5], reloaded.transformer.wte.weight[5])


def test_logits_to_keep_computes_only_the_last_positions():
    model = make_model(HfcmGptForCausalLM)
    input_ids = torch.randint(2, VOCAB, (2, 9))
    with torch.no_grad():
        full = model(input_ids=input_ids).logits
        last = model(input_ids=input_ids, logits_to_keep=1).logits
        three = model(input_ids=input_ids, logits_to_keep=3).logits
    assert last.shape == (2, 1, VOCAB) and three.shape == (2, 3, VOCAB)
    assert max_abs_diff(last, full[:, -1:]) <= 1e-6 and max_abs_diff(three, full[:, -3:]) <= 1e-6


def test_causal_lm_loss_is_next_token_cross_entropy():
    model = make_model(HfcmGptForCausalLM)
    batch = padded_batch()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        output = model(**batch, labels=labels)
    expected = F.cross_entropy(output.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
    assert abs(output.loss.item() - expected.item()) <= 1e-6
    as_tuple = model(**batch, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], output.loss)


# ---------------------------------------------------------------------------------------------------------
# The blocks: GPT-2's pre-LN and GPT-1's post-LN, by config
# ---------------------------------------------------------------------------------------------------------

def reference_block(block, x, pre_norm):
    """A block written out from the papers, with plain torch: masked multi-head self-attention and MLP."""
    attention = block.attention
    batch, length, hidden = x.shape
    heads, head_dim = attention.num_heads, attention.head_dim

    def attend(h):
        q, k, v = (h @ attention.qkv.weight + attention.qkv.bias).split(hidden, dim=-1)
        q, k, v = (t.view(batch, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        return context @ attention.out.weight + attention.out.bias

    def mlp(h):
        inner = h @ block.mlp.intermediate.weight + block.mlp.intermediate.bias
        inner = 0.5 * inner * (1 + torch.tanh(math.sqrt(2 / math.pi) * (inner + 0.044715 * inner**3)))
        return inner @ block.mlp.output.weight + block.mlp.output.bias

    def norm(h, layer_norm):
        return F.layer_norm(h, (hidden,), layer_norm.weight, layer_norm.bias, layer_norm.eps)

    if pre_norm:
        x = x + attend(norm(x, block.attention_norm))
        return x + mlp(norm(x, block.mlp_norm))
    x = norm(x + attend(x), block.attention_norm)
    return norm(x + mlp(x), block.mlp_norm)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("layer_norm_position", ["pre", "post"])
def test_decoder_is_the_papers_stack(layer_norm_position, attn_implementation):
    model = make_model(HfcmGptModel, layer_norm_position=layer_norm_position,
                       attn_implementation=attn_implementation)
    input_ids = torch.randint(2, VOCAB, (2, 11))
    with torch.no_grad():
        output = model(input_ids=input_ids, output_hidden_states=True)
        positions = torch.arange(11)
        x = model.wte.weight[input_ids] + model.wpe.weight[positions]  # learned positions, summed
        for block in model.layers:
            x = reference_block(block, x, pre_norm=layer_norm_position == "pre")
        if layer_norm_position == "pre":  # GPT-2 adds a LayerNorm after the last block; GPT-1 has none
            x = model.final_norm(x)
    assert (model.final_norm is None) == (layer_norm_position == "post")
    assert max_abs_diff(output.last_hidden_state, x) <= 1e-5
    assert len(output.hidden_states) == model.config.num_hidden_layers + 1
    assert torch.equal(output.hidden_states[-1], output.last_hidden_state)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("with_mask", [False, True])
def test_attention_is_causal(attn_implementation, with_mask):
    """Changing token t changes no output before t (sdpa without a mask takes its is_causal path)."""
    model = make_model(HfcmGptForCausalLM, attn_implementation=attn_implementation)
    input_ids = torch.randint(2, VOCAB, (2, 10), generator=torch.Generator().manual_seed(5))
    changed = input_ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % (VOCAB - 2) + 2
    mask = {"attention_mask": torch.ones_like(input_ids)} if with_mask else {}
    with torch.no_grad():
        before, after = model(input_ids=input_ids, **mask).logits, model(input_ids=changed, **mask).logits
    assert max_abs_diff(before[:, :6], after[:, :6]) <= 1e-6
    assert max_abs_diff(before[:, 6:], after[:, 6:]) > 1e-3


@pytest.mark.parametrize("side", ["left", "right"])
def test_sdpa_is_the_default_and_eager_matches_it_on_padded_batches(side):
    sdpa = make_model(HfcmGptForCausalLM)
    assert sdpa.config._attn_implementation == "sdpa"
    eager = make_model(HfcmGptForCausalLM, attn_implementation="eager")
    batch = padded_batch(side=side)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        a, b = sdpa(**batch).logits, eager(**batch).logits
        unpadded_a, unpadded_b = sdpa(input_ids=batch["input_ids"]).logits, eager(input_ids=batch["input_ids"]).logits
    assert max_abs_diff(a[real], b[real]) <= 1e-5
    assert max_abs_diff(unpadded_a, unpadded_b) <= 1e-5


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_real_positions(side):
    """Position ids follow the attention mask, so a padded row computes what it computes alone."""
    model = make_model(HfcmGptForCausalLM)
    batch = padded_batch(side=side)
    with torch.no_grad():
        batched = model(**batch).logits
        for row, mask in enumerate(batch["attention_mask"].bool()):
            alone = model(input_ids=batch["input_ids"][row, mask][None]).logits[0]
            assert max_abs_diff(batched[row, mask], alone) <= 1e-5


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_output_attentions_are_causal_normalised_and_zero_on_padding(attn_implementation):
    model = make_model(HfcmGptModel, attn_implementation=attn_implementation)
    batch = padded_batch(side="left")
    with torch.no_grad():
        output = model(**batch, output_attentions=True)
        plain = model(**batch)
    batch_size, seq_length = batch["input_ids"].shape
    real = batch["attention_mask"].bool()
    assert len(output.attentions) == model.config.num_hidden_layers
    future = torch.ones(seq_length, seq_length, dtype=torch.bool).triu(1)
    for weights in output.attentions:
        assert weights.shape == (batch_size, model.config.num_attention_heads, seq_length, seq_length)
        real_queries = weights.permute(0, 2, 1, 3)[real]  # (real tokens, heads, keys)
        torch.testing.assert_close(real_queries.sum(-1), torch.ones(real_queries.shape[:-1]), atol=1e-5, rtol=0)
        real_query_future_key = (real[:, None, :, None] & future).expand_as(weights)  # padded queries: don't care
        assert weights[real_query_future_key].abs().max().item() == 0
        real_query_padded_key = (real[:, None, :, None] & ~real[:, None, None, :]).expand_as(weights)
        assert real_query_padded_key.any() and weights[real_query_padded_key].abs().max().item() < 1e-6
    assert max_abs_diff(output.last_hidden_state[real], plain.last_hidden_state[real]) <= 1e-5
    assert model.config._attn_implementation == attn_implementation


def test_gradient_checkpointing_gives_the_same_gradients():
    model = make_model(HfcmGptForCausalLM).train()
    batch = padded_batch()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)

    def gradients():
        model.zero_grad()
        model(**batch, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing and all(layer.gradient_checkpointing for layer in model.transformer.layers)
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    assert max(max_abs_diff(plain[name], checkpointed[name]) for name in plain) <= 1e-6


def test_training_builds_no_cache_and_evaluation_does():
    model = make_model(HfcmGptForCausalLM)
    input_ids = torch.randint(2, VOCAB, (1, 5))
    assert model(input_ids=input_ids).cache is not None
    assert model.train()(input_ids=input_ids).cache is None
    assert model(input_ids=input_ids, use_cache=True).cache.get_seq_length() == 5


def test_dropout_is_active_in_train_mode_only():
    model = make_model(HfcmGptModel, hidden_dropout_prob=0.3, embedding_dropout_prob=0.3,
                       attention_probs_dropout_prob=0.3)
    input_ids = torch.randint(2, VOCAB, (2, 8))
    with torch.no_grad():
        eval_a, eval_b = model(input_ids=input_ids).last_hidden_state, model(input_ids=input_ids).last_hidden_state
        model.train()
        train_a, train_b = model(input_ids=input_ids).last_hidden_state, model(input_ids=input_ids).last_hidden_state
    assert torch.equal(eval_a, eval_b) and not torch.allclose(train_a, train_b)


# ---------------------------------------------------------------------------------------------------------
# Heads: sequence classification (last real token) and double heads (GPT-1 §3.2)
# ---------------------------------------------------------------------------------------------------------

def test_sequence_classification_reads_the_last_real_token_with_left_or_right_padding():
    model = make_model(HfcmGptForSequenceClassification, num_labels=NUM_LABELS)
    right, left = padded_batch(side="right"), padded_batch(side="left")
    assert torch.equal(right["input_ids"][right["attention_mask"].bool()],
                       left["input_ids"][left["attention_mask"].bool()])  # the same sequences
    with torch.no_grad():
        from_right, from_left = model(**right).logits, model(**left).logits
        # Without a mask, the pad token id finds the last real token (as transformers does).
        from_pad_id = model(input_ids=right["input_ids"]).logits
        alone = torch.cat([model(input_ids=ids[mask.bool()][None]).logits
                           for ids, mask in zip(right["input_ids"], right["attention_mask"])])
        hidden = model.transformer(input_ids=right["input_ids"][:1, :10]).last_hidden_state
    assert from_right.shape == (3, NUM_LABELS)
    assert max_abs_diff(from_right, from_left) <= 1e-5
    assert max_abs_diff(from_right, alone) <= 1e-5
    assert max_abs_diff(from_pad_id, from_right) <= 1e-5
    assert max_abs_diff(from_right[0], model.score(hidden[0, -1])) <= 1e-5  # the head is one linear map


@pytest.mark.parametrize("num_labels, labels, problem_type", [
    (3, torch.tensor([2, 0, 1]), "single_label_classification"),
    (1, torch.tensor([0.5, -1.0, 2.0]), "regression"),
    (3, torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]]), "multi_label_classification"),
])
def test_sequence_classification_losses_follow_problem_type(num_labels, labels, problem_type):
    model = make_model(HfcmGptForSequenceClassification, num_labels=num_labels)
    with torch.no_grad():
        output = model(**padded_batch(), labels=labels)
    assert model.config.problem_type == problem_type
    expected = {"single_label_classification": lambda: F.cross_entropy(output.logits, labels),
                "regression": lambda: F.mse_loss(output.logits.squeeze(), labels),
                "multi_label_classification": lambda: F.binary_cross_entropy_with_logits(output.logits, labels)}
    assert abs(output.loss.item() - expected[problem_type]().item()) <= 1e-6


@pytest.mark.parametrize("lm_loss_weight", [0.5, 2.0])
def test_double_heads_loss_is_mc_loss_plus_lambda_lm_loss(lm_loss_weight):
    model = make_model(HfcmGptDoubleHeadsModel, lm_loss_weight=lm_loss_weight)
    batch_size, num_choices, seq_length = 2, 3, 8
    input_ids = torch.randint(2, VOCAB, (batch_size, num_choices, seq_length),
                              generator=torch.Generator().manual_seed(4))
    mc_token_ids = torch.tensor([[7, 5, 6], [3, 7, 7]])
    labels = input_ids.clone()
    labels[0, 1, 6:] = -100
    mc_labels = torch.tensor([2, 0])
    with torch.no_grad():
        output = model(input_ids=input_ids, mc_token_ids=mc_token_ids, labels=labels, mc_labels=mc_labels)
        hidden = model.transformer(input_ids=input_ids.view(-1, seq_length)).last_hidden_state
    # By hand: the choice score reads the hidden state at each choice's classification token ...
    chosen = hidden[torch.arange(batch_size * num_choices), mc_token_ids.view(-1)]
    mc_logits = model.multiple_choice_head(chosen).view(batch_size, num_choices)
    assert max_abs_diff(output.mc_logits, mc_logits) <= 1e-6
    # ... the LM logits are H·W_eᵀ, and the loss adds lambda times the next-token loss.
    lm_logits = (hidden @ model.transformer.wte.weight.T).view(batch_size, num_choices, seq_length, VOCAB)
    assert max_abs_diff(output.logits, lm_logits) <= 1e-5
    mc_loss = F.cross_entropy(mc_logits, mc_labels)
    lm_loss = F.cross_entropy(lm_logits[:, :, :-1].reshape(-1, VOCAB), labels[:, :, 1:].reshape(-1))
    assert abs(output.mc_loss.item() - mc_loss.item()) <= 1e-6
    assert abs(output.lm_loss.item() - lm_loss.item()) <= 1e-6
    assert abs(output.loss.item() - (mc_loss + lm_loss_weight * lm_loss).item()) <= 1e-5
    # One label kind alone gives that loss alone.
    only_mc = model(input_ids=input_ids, mc_token_ids=mc_token_ids, mc_labels=mc_labels)
    assert abs(only_mc.loss.item() - mc_loss.item()) <= 1e-6 and only_mc.lm_loss is None


def test_double_heads_default_classification_token_is_the_last_real_one():
    model = make_model(HfcmGptDoubleHeadsModel)
    batch = padded_batch(lengths=(8, 5, 3, 8))
    inputs = {name: tensor.view(2, 2, -1) for name, tensor in batch.items()}
    with torch.no_grad():
        default = model(**inputs).mc_logits
        explicit = model(**inputs, mc_token_ids=torch.tensor([[7, 4], [2, 7]])).mc_logits
    assert max_abs_diff(default, explicit) <= 1e-6
    with pytest.raises(ValueError, match=r"\(batch, num_choices, seq_length\)"):
        model(input_ids=batch["input_ids"])

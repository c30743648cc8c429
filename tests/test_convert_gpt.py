"""`hfcm convert` for GPT: transformers' GPT-2 and OpenAI-GPT checkpoints -> ours -> transformers' again.

Parity is measured as a user converts: save_pretrained, convert_checkpoint, load with the Auto classes. Every
compared quantity's max |Δ| is printed at the end of the module (`pytest -s` or `-rA` shows it). Models are
random, with every parameter (biases and LayerNorms too) perturbed so that a swapped, untransposed or dropped
tensor cannot hide behind an initial zero or one. Two sizes per family: 64 hidden x 2 layers and 256 x 4.
"""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, OpenAIGPTConfig

import hf_course_models
from hf_course_models.convert import convert_checkpoint
from hf_course_models.convert.gpt import (
    config_from_transformers,
    config_to_transformers,
    state_dict_from_transformers,
    state_dict_to_transformers,
)

TOLERANCE = 1e-5
VOCAB_SIZE = 1000
CONTEXT = 64
PAD = 0
SIZES = {
    "hidden64x2": dict(n_embd=64, n_layer=2, n_head=2),
    "hidden256x4": dict(n_embd=256, n_layer=4, n_head=4),
}
FAMILIES = {  # model_type -> (config class, LM class, extra settings)
    "gpt2": (GPT2Config, transformers.GPT2LMHeadModel, dict(bos_token_id=1, eos_token_id=1, pad_token_id=PAD)),
    "openai-gpt": (OpenAIGPTConfig, transformers.OpenAIGPTLMHeadModel, dict(pad_token_id=PAD)),
}
MEASURED = []  # (family, size, what, max |Δ|)


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_report():
    """One thread: on a shared 2-core machine small decode steps otherwise wait on OpenMP's second thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    print("\nmax |Δ| (fp32)")
    for family, size, what, delta in MEASURED:
        print(f"  {family:10} {size:12} {what:52} {delta:.3e}")


def reference_config(family, size="hidden64x2", **overrides):
    config_class, _, extra = FAMILIES[family]
    return config_class(vocab_size=VOCAB_SIZE, n_positions=CONTEXT, **SIZES[size], **{**extra, **overrides})


def random_model(model_class, config, seed):
    torch.manual_seed(seed)
    model = model_class(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def byte_level_tokenizer():
    """A small real GPT-2 tokenizer (transformers' GPT2Tokenizer): the byte symbols of printable ASCII and
    the space, and a few merges."""
    symbols = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["Ġ"]
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "c"), ("a", "t"), ("Ġc", "at")]
    tokens = ["<|endoftext|>"] + symbols + ["".join(m) for m in merges]
    return transformers.GPT2Tokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)


def padded_batch(side, batch=3, length=24, seed=0):
    """Random ids with rows of decreasing length, padded on `side`; the position ids generate would use."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB_SIZE, (batch, length), generator=generator)
    lengths = torch.linspace(length, length // 3, batch).long()
    positions = torch.arange(length)
    real = positions < lengths[:, None] if side == "right" else positions >= (length - lengths)[:, None]
    attention_mask = real.long()
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    return dict(input_ids=input_ids.masked_fill(~real, PAD), attention_mask=attention_mask,
                position_ids=position_ids)


def record(family, size, what, delta):
    MEASURED.append((family, size, what, delta))
    assert delta <= TOLERANCE, f"{family} {size} {what}: max |Δ| = {delta:.3e}"


@pytest.fixture(scope="module", params=[(f, s) for f in FAMILIES for s in SIZES], ids="-".join)
def checkpoints(request, tmp_path_factory):
    """A transformers GPT checkpoint converted to ours."""
    family, size = request.param
    root = tmp_path_factory.mktemp(f"{family}-{size}")
    reference = random_model(FAMILIES[family][1], reference_config(family, size), 1)
    reference.save_pretrained(root / "theirs")
    if family == "gpt2":
        byte_level_tokenizer().save_pretrained(root / "theirs")
    convert_checkpoint(root / "theirs", root / "converted")
    return family, size, root


def load_pair(root, family, attention="sdpa"):
    # GPT-2: the same attention implementation on both sides, so that even the rows of padded queries that
    # attend to nothing (which each implementation fills in its own way) agree. OpenAI-GPT has only its own.
    implementation = {"attn_implementation": attention} if family == "gpt2" else {}
    reference = FAMILIES[family][1].from_pretrained(root / "theirs", **implementation).eval()
    converted = AutoModelForCausalLM.from_pretrained(root / "converted", attn_implementation=attention).eval()
    assert isinstance(converted, hf_course_models.HfcmGptForCausalLM)
    return reference, converted


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_converted_logits_equal_the_reference_with_padding(checkpoints, attention):
    family, size, root = checkpoints
    reference, converted = load_pair(root, family, attention)
    assert converted.config.layer_norm_position == ("pre" if family == "gpt2" else "post")
    for side in ("right", "left"):
        batch = padded_batch(side)
        with torch.no_grad():
            expected, actual = reference(**batch).logits, converted(**batch).logits
        # Every position, padding included: both models get the same mask and position ids. Except OpenAI-GPT's
        # left-padded queries that precede every real token: its -1e4 causal mask lets them see the future.
        if family == "openai-gpt" and side == "left":
            real = batch["attention_mask"].bool()
            expected, actual, side = expected[real], actual[real], "left (real tokens)"
        record(family, size, f"logits, {side} padding, ours={attention}", (expected - actual).abs().max().item())
    # Without position ids both count positions from the first token: equal on right-padded rows.
    batch = padded_batch("right")
    batch.pop("position_ids")
    with torch.no_grad():
        expected, actual = reference(**batch).logits, converted(**batch).logits
    real = batch["attention_mask"].bool()
    record(family, size, f"logits at real tokens, default positions, ours={attention}",
           (expected[real] - actual[real]).abs().max().item())


def test_every_step_of_cached_decoding_equals_the_reference(checkpoints):
    """Our KV-cached decode steps against the reference's logits for the same prefix (GPT-2's own cached steps;
    OpenAI-GPT has no cache, so it recomputes the whole prefix each step)."""
    family, size, root = checkpoints
    reference, converted = load_pair(root, family)
    sequence = padded_batch("right", batch=1, length=40, seed=5)["input_ids"]
    prefill = 8
    deltas = []
    with torch.no_grad():
        ours = converted(input_ids=sequence[:, :prefill], use_cache=True)
        theirs = reference(input_ids=sequence[:, :prefill], **({"use_cache": True} if family == "gpt2" else {}))
        deltas.append((ours.logits - theirs.logits).abs().max().item())
        for position in range(prefill, sequence.shape[1]):
            token = sequence[:, position:position + 1]
            ours = converted(input_ids=token, cache=ours.cache)
            if family == "gpt2":
                theirs = reference(input_ids=token, cache=theirs.cache, use_cache=True)
                expected = theirs.logits[:, -1]
            else:
                expected = reference(input_ids=sequence[:, :position + 1]).logits[:, -1]
            deltas.append((ours.logits[:, -1] - expected).abs().max().item())
    assert len(deltas) == sequence.shape[1] - prefill + 1
    record(family, size, f"logits on each of {len(deltas)} cached decoding steps", max(deltas))


GENERATION_SETTINGS = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.9),
    "beam_search": dict(do_sample=False, num_beams=3, num_return_sequences=2),
}


@pytest.mark.parametrize("strategy", GENERATION_SETTINGS)
def test_generated_tokens_equal_the_reference_generate(checkpoints, strategy):
    family, size, root = checkpoints
    reference, converted = load_pair(root, family)
    settings = dict(max_new_tokens=20, pad_token_id=PAD, **GENERATION_SETTINGS[strategy])
    if family == "gpt2":  # a left-padded batch (OpenAI-GPT's generate has no cache to make it efficient)
        batch = padded_batch("left", length=10, seed=2)
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    else:
        inputs = dict(input_ids=padded_batch("right", batch=2, length=6, seed=2)["input_ids"])
    outputs = []
    for model in (reference, converted):
        torch.manual_seed(11)
        outputs.append(model.generate(**inputs, **settings))
    expected, actual = outputs
    assert actual.shape[1] == inputs["input_ids"].shape[1] + 20
    assert actual.tolist() == expected.tolist()


def test_round_trip_ours_to_transformers_and_back_is_exact(tmp_path):
    for family, layer_norm_position in (("gpt2", "pre"), ("openai-gpt", "post")):
        config = hf_course_models.HfcmGptConfig(
            preset="tiny", vocab_size=VOCAB_SIZE, max_position_embeddings=CONTEXT, bos_token_id=1, eos_token_id=1,
            pad_token_id=PAD, layer_norm_position=layer_norm_position)
        ours = random_model(hf_course_models.HfcmGptForCausalLM, config, 2)
        ours.save_pretrained(tmp_path / family / "ours")
        byte_level_tokenizer().save_pretrained(tmp_path / family / "ours")
        convert_checkpoint(tmp_path / family / "ours", tmp_path / family / "exported", to="transformers")
        convert_checkpoint(tmp_path / family / "exported", tmp_path / family / "back")

        exported = AutoModelForCausalLM.from_pretrained(tmp_path / family / "exported").eval()
        assert type(exported) is FAMILIES[family][1]
        back = AutoModelForCausalLM.from_pretrained(tmp_path / family / "back").eval()
        assert back.state_dict().keys() == ours.state_dict().keys()
        assert all(torch.equal(back.state_dict()[k], v) for k, v in ours.state_dict().items())
        for name in ("hidden_size", "num_hidden_layers", "intermediate_size", "hidden_act", "layer_norm_position",
                     "max_position_embeddings", "layer_norm_eps", "pad_token_id", "eos_token_id"):
            assert getattr(back.config, name) == getattr(config, name), name
        batch = padded_batch("right")
        with torch.no_grad():
            delta = (ours(**batch).logits - exported(**batch).logits).abs().max().item()
        record(family, "tiny", "logits, ours -> transformers export", delta)
        assert back.lm_head.weight is back.transformer.wte.weight
        for directory in ("exported", "back"):
            travelled = AutoTokenizer.from_pretrained(tmp_path / family / directory)
            assert travelled("the cat")["input_ids"] == byte_level_tokenizer()("the cat")["input_ids"]


LABELS = dict(id2label={0: "negative", 1: "neutral", 2: "positive"},
              label2id={"negative": 0, "neutral": 1, "positive": 2}, problem_type="single_label_classification")
HEADS = {  # transformers class -> (our class, config extras, input shape)
    "GPT2Model": ("HfcmGptModel", {}, (3, 24)),
    "GPT2ForSequenceClassification": ("HfcmGptForSequenceClassification", LABELS, (3, 24)),
    "GPT2DoubleHeadsModel": ("HfcmGptDoubleHeadsModel", {}, (2, 3, 24)),
    "OpenAIGPTModel": ("HfcmGptModel", {}, (3, 24)),
    "OpenAIGPTForSequenceClassification": ("HfcmGptForSequenceClassification", LABELS, (3, 24)),
    "OpenAIGPTDoubleHeadsModel": ("HfcmGptDoubleHeadsModel", {}, (2, 3, 24)),
}


@pytest.mark.parametrize("name", HEADS)
def test_every_head_converts_both_ways(tmp_path, name):
    ours_name, extra, shape = HEADS[name]
    family = "gpt2" if name.startswith("GPT2") else "openai-gpt"
    reference_class = getattr(transformers, name)
    reference = random_model(reference_class, reference_config(family, **extra), 3)
    reference.save_pretrained(tmp_path / "theirs")
    convert_checkpoint(tmp_path / "theirs", tmp_path / "ours")
    convert_checkpoint(tmp_path / "ours", tmp_path / "back", to="transformers")
    ours = getattr(hf_course_models, ours_name).from_pretrained(tmp_path / "ours").eval()
    back = reference_class.from_pretrained(tmp_path / "back").eval()
    for config in (ours.config, back.config):
        assert (config.id2label, config.problem_type) == (reference.config.id2label, reference.config.problem_type)

    flat = padded_batch("right", batch=shape[0] * (shape[1] if len(shape) == 3 else 1), length=shape[-1])
    inputs = {key: value.view(shape) for key, value in flat.items()}
    real = ...
    if "DoubleHeads" in name:
        # transformers' double-heads models take no (batch, choices, seq) position ids, OpenAI-GPT's no such
        # attention mask either. Rows are right-padded, so causal attention keeps real tokens the same without
        # them; padded positions differ and are left out.
        inputs.pop("position_ids")
        mask = inputs.pop("attention_mask") if family == "openai-gpt" else inputs["attention_mask"]
        real = mask.bool()
        inputs["mc_token_ids"] = mask.sum(-1) - 1  # each choice's last real token
    with torch.no_grad():
        expected, actual, again = reference(**inputs), ours(**inputs), back(**inputs)
    compared = [key for key in ("last_hidden_state", "logits", "mc_logits") if key in expected]
    assert compared
    for key in compared:
        at = real if key == "logits" else ...
        record(family, "hidden64x2", f"{name}.{key}", (expected[key][at] - actual[key][at]).abs().max().item())
        record(family, "hidden64x2", f"{name}.{key} after export",
               (expected[key][at] - again[key][at]).abs().max().item())


def test_state_dicts_map_exactly_both_ways_also_from_saved_files(tmp_path):
    """Bare base-model keys, 'transformer.'-prefixed ones, and saved files (a tied copy left out)."""
    for family in FAMILIES:
        config = reference_config(family)
        lm = random_model(FAMILIES[family][1], config, 4)
        base = lm.transformer
        ours_config = config_from_transformers(config)
        for model in (base, lm):
            state_dict = model.state_dict()
            there_and_back = state_dict_to_transformers(state_dict_from_transformers(state_dict, config), ours_config)
            assert there_and_back.keys() == state_dict.keys() - {k for k in state_dict if k.endswith("position_ids")}
            assert all(torch.equal(there_and_back[key], state_dict[key]) for key in there_and_back)
        lm.save_pretrained(tmp_path / family)
        saved = load_file(tmp_path / family / "model.safetensors")
        assert "lm_head.weight" not in saved
        ours = hf_course_models.HfcmGptForCausalLM(ours_config)
        ours.load_state_dict(state_dict_from_transformers(saved, config), strict=True)
        conv1d_weight = saved["transformer.h.1.attn.c_attn.weight"]  # (in, out), the layout ours stores too
        assert torch.equal(ours.transformer.layers[1].attention.qkv.weight, conv1d_weight)


BLOCKED_IMPORT = textwrap.dedent("""
    import sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "hf_course_models":
                raise ImportError("hf_course_models is blocked in this process")

    sys.meta_path.insert(0, Blocker())
    try:
        import hf_course_models
    except ImportError:
        pass
    else:
        sys.exit("hf_course_models could be imported")

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, inputs, outputs = sys.argv[1:]
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    assert type(model).__name__ == "GPT2LMHeadModel", type(model)
    assert type(AutoTokenizer.from_pretrained(checkpoint)).__name__ == "GPT2Tokenizer"
    with torch.no_grad():
        save_file({"logits": model(**load_file(inputs)).logits}, outputs)
""")


def test_exported_checkpoint_loads_without_our_package(tmp_path):
    config = hf_course_models.HfcmGptConfig(preset="tiny", vocab_size=VOCAB_SIZE, max_position_embeddings=CONTEXT,
                                            bos_token_id=1, eos_token_id=1, pad_token_id=PAD)
    ours = random_model(hf_course_models.HfcmGptForCausalLM, config, 6)
    ours.save_pretrained(tmp_path / "ours")
    byte_level_tokenizer().save_pretrained(tmp_path / "ours")
    convert_checkpoint(tmp_path / "ours", tmp_path / "exported", to="transformers")
    inputs = padded_batch("right")
    save_file(inputs, tmp_path / "inputs.safetensors")
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, tmp_path / "exported", tmp_path / "inputs.safetensors",
         tmp_path / "outputs.safetensors"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = ours(**inputs).logits
    record("gpt2", "tiny", "logits, export loaded without our package",
           (load_file(tmp_path / "outputs.safetensors")["logits"] - expected).abs().max().item())


@pytest.mark.parametrize("setting", [
    dict(scale_attn_by_inverse_layer_idx=True),
    dict(reorder_and_upcast_attn=True),
    dict(add_cross_attention=True),
    dict(scale_attn_weights=False),
])
def test_unsupported_gpt2_settings_are_refused_by_name(tmp_path, setting):
    (name, value), = setting.items()
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        config_from_transformers(reference_config("gpt2", **setting))
    transformers.GPT2LMHeadModel(reference_config("gpt2", **setting)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"Cannot convert a gpt2 model with {name}={value!r}"):
        convert_checkpoint(tmp_path, tmp_path / "out")


def test_errors_name_the_problem(tmp_path):
    head = tmp_path / "token-classification"
    transformers.GPT2ForTokenClassification(reference_config("gpt2")).save_pretrained(head)
    with pytest.raises(ValueError, match="cannot convert a GPT2ForTokenClassification; supported: GPT2Model, "):
        convert_checkpoint(head, tmp_path / "out")
    with pytest.raises(ValueError, match="model_type 'gpt2'.* to 'transformers'"):
        convert_checkpoint(head, tmp_path / "out", to="transformers")

    summary = tmp_path / "double-heads-tanh"
    transformers.GPT2DoubleHeadsModel(reference_config("gpt2", summary_activation="tanh")).save_pretrained(summary)
    with pytest.raises(ValueError, match="summary_activation='tanh'"):
        convert_checkpoint(summary, tmp_path / "out")

    # GPT-1-style (post-LN) models export to OpenAI-GPT, which knows only intermediate_size = 4 * hidden_size.
    wide = hf_course_models.HfcmGptConfig(preset="tiny", vocab_size=VOCAB_SIZE, layer_norm_position="post",
                                          intermediate_size=100, bos_token_id=None, eos_token_id=None)
    with pytest.raises(ValueError, match="intermediate_size=100, hidden_size=64"):
        config_to_transformers(wide)
    assert json.loads(config_to_transformers(
        hf_course_models.HfcmGptConfig(preset="gpt1")).to_json_string())["model_type"] == "openai-gpt"

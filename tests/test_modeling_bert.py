"""Specification tests for hf_course_models' BERT (configuration, encoder, heads, Auto registration).

Each test states one property of the issue's specification and fails if that property breaks. Models are
tiny and real (no mocks); the paper-sized presets are only built on the meta device.
"""
import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForNextSentencePrediction,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

import hf_course_models
from hf_course_models import (
    HfcmBertConfig,
    HfcmBertForMaskedLM,
    HfcmBertForMultipleChoice,
    HfcmBertForNextSentencePrediction,
    HfcmBertForPreTraining,
    HfcmBertForQuestionAnswering,
    HfcmBertForSequenceClassification,
    HfcmBertForTokenClassification,
    HfcmBertModel,
)

VOCAB = 99
MAX_POS = 32
NUM_LABELS = 3
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=MAX_POS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
PRESET_NAMES = ("tiny", "mini", "small", "base", "large")


def tiny_config(**overrides):
    return HfcmBertConfig(preset="tiny", **{**TINY, **overrides})


def make_model(model_class, seed=0, **overrides):
    torch.manual_seed(seed)
    return model_class(tiny_config(**overrides)).eval()


def padded_batch(lengths=(10, 7, 4), seed=1):
    """input_ids / attention_mask / token_type_ids for right-padded sequences of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    seq_length = max(lengths)
    input_ids = torch.randint(1, VOCAB, (len(lengths), seq_length), generator=generator)
    attention_mask = torch.zeros(len(lengths), seq_length, dtype=torch.long)
    token_type_ids = torch.zeros(len(lengths), seq_length, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        token_type_ids[row, length // 2:length] = 1
        input_ids[row, length:] = 0  # [PAD]
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def mlm_labels(input_ids, attention_mask, seed=2, fraction=0.3):
    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(input_ids.shape, generator=generator) < fraction) & attention_mask.bool()
    chosen[0, 1] = True  # at least one labelled token
    return torch.where(chosen, input_ids, torch.full_like(input_ids, -100))


def real(tensor, attention_mask):
    """The rows of a (B, S, ...) tensor at non-padded positions, flattened to (N, ...)."""
    return tensor[attention_mask.bool()]


def max_abs_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------------------
# Configuration and presets
# ---------------------------------------------------------------------------------------------------------

EXPECTED_PRESETS = {
    "tiny": (64, 2, 2, 256),
    "mini": (256, 4, 4, 1024),
    "small": (512, 4, 8, 2048),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
}


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_presets_are_the_documented_sizes(preset):
    config = HfcmBertConfig(preset=preset)
    sizes = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size)
    assert sizes == EXPECTED_PRESETS[preset]
    assert config.model_type == "hfcm_bert"
    # Everything the preset does not set keeps BERT's values.
    assert (config.vocab_size, config.max_position_embeddings, config.type_vocab_size) == (30522, 512, 2)
    assert config.hidden_act == "gelu"


def test_defaults_without_preset_are_bert_base_as_transformers():
    ours, reference = HfcmBertConfig(), transformers.BertConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                 "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id"):
        assert getattr(ours, name) == getattr(reference, name), name
    assert ours.tie_word_embeddings is True


def test_keyword_arguments_override_the_preset():
    config = HfcmBertConfig(preset="mini", hidden_size=128, num_hidden_layers=12, vocab_size=500)
    assert config.hidden_size == 128
    # 12 is also the base default: an explicit value must still win over the preset's 4.
    assert config.num_hidden_layers == 12
    assert config.vocab_size == 500
    assert (config.num_attention_heads, config.intermediate_size) == (4, 1024)  # the rest from the preset


def test_config_for_model_and_round_trip(tmp_path):
    config = AutoConfig.for_model("hfcm_bert", preset="tiny", vocab_size=123, num_labels=4)
    assert type(config) is HfcmBertConfig
    assert (config.hidden_size, config.vocab_size, config.num_labels) == (64, 123, 4)
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hfcm_bert"
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is HfcmBertConfig
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                 "num_labels", "sparse_mlm_head", "tie_word_embeddings", "pad_token_id"):
        assert getattr(reloaded, name) == getattr(config, name), name


@pytest.mark.parametrize("preset, reference_sizes, paper_millions", [
    ("base", {}, 110),
    ("large", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096), 340),
])
def test_paper_presets_have_bert_parameter_counts(preset, reference_sizes, paper_millions):
    with torch.device("meta"):
        ours = HfcmBertModel(HfcmBertConfig(preset=preset))
        reference = transformers.BertModel(transformers.BertConfig(**reference_sizes))
        ours_pretraining = HfcmBertForPreTraining(HfcmBertConfig(preset=preset))
        reference_pretraining = transformers.BertForPreTraining(transformers.BertConfig(**reference_sizes))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    # The paper rounds: 110M (base: 109.5M) and 340M (large: 335.1M).
    assert abs(count / 1e6 - paper_millions) / paper_millions < 0.02
    # The pre-training heads add the same parameters as transformers' (decoder tied, one bias of its own).
    assert (sum(p.numel() for p in ours_pretraining.parameters())
            == sum(p.numel() for p in reference_pretraining.parameters()))


def test_initialisation_follows_initializer_range():
    torch.manual_seed(0)
    model = HfcmBertForPreTraining(tiny_config(vocab_size=2000, initializer_range=0.05))
    word = model.bert.embeddings.word_embeddings.weight.detach()
    assert abs(word[1:].std().item() - 0.05) < 0.005
    qkv = model.bert.layers[0].attention.qkv
    assert abs(qkv.weight.std().item() - 0.05) < 0.005
    assert torch.all(qkv.bias == 0)
    norm = model.bert.layers[0].attention_norm
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert torch.all(model.lm_head.decoder.bias == 0)


# ---------------------------------------------------------------------------------------------------------
# Bad input: clear errors, raised early
# ---------------------------------------------------------------------------------------------------------

def test_hidden_size_not_divisible_by_heads_fails_at_config_time():
    with pytest.raises(ValueError) as error:
        HfcmBertConfig(preset="tiny", hidden_size=100, num_attention_heads=3)
    assert "100" in str(error.value) and "3" in str(error.value)
    assert "num_attention_heads" in str(error.value)
    with pytest.raises(ValueError):
        AutoConfig.for_model("hfcm_bert", hidden_size=100, num_attention_heads=3)


def test_unknown_preset_lists_the_valid_ones():
    for make in (lambda: HfcmBertConfig(preset="huge"), lambda: AutoConfig.for_model("hfcm_bert", preset="huge")):
        with pytest.raises(ValueError) as error:
            make()
        message = str(error.value)
        assert "huge" in message
        assert all(name in message for name in PRESET_NAMES), message


@pytest.mark.parametrize("model_class", [HfcmBertModel, HfcmBertForMaskedLM])
def test_sequence_longer_than_max_positions_is_a_value_error_naming_both_lengths(model_class):
    model = make_model(model_class, max_position_embeddings=16)
    too_long = torch.randint(1, VOCAB, (2, 19))
    with pytest.raises(ValueError) as error:  # not an IndexError from inside an embedding
        model(input_ids=too_long)
    assert "19" in str(error.value) and "16" in str(error.value)
    with pytest.raises(ValueError) as error:
        model(inputs_embeds=torch.randn(2, 19, 32))
    assert "19" in str(error.value) and "16" in str(error.value)
    model(input_ids=too_long[:, :16])  # exactly max_position_embeddings is fine


def test_token_id_outside_the_vocabulary_is_a_value_error():
    model = make_model(HfcmBertModel)
    input_ids = torch.randint(1, VOCAB, (2, 6))
    for bad in (VOCAB, VOCAB + 50, -1):
        ids = input_ids.clone()
        ids[1, 3] = bad
        with pytest.raises(ValueError) as error:
            model(input_ids=ids)
        assert str(bad) in str(error.value) and str(VOCAB) in str(error.value)
    model(input_ids=torch.full((1, 4), VOCAB - 1))  # the last id is fine


def test_token_type_id_outside_type_vocab_is_a_value_error():
    model = make_model(HfcmBertForSequenceClassification)
    batch = padded_batch()
    batch["token_type_ids"][0, 2] = 2
    with pytest.raises(ValueError) as error:
        model(**batch)
    assert "token_type_ids" in str(error.value) and "2" in str(error.value)


def test_position_id_beyond_the_learned_positions_is_a_value_error():
    model = make_model(HfcmBertModel)
    limit = model.config.max_position_embeddings
    input_ids = torch.randint(1, VOCAB, (1, 4))
    with pytest.raises(ValueError, match=f"position_ids contains {limit}, outside \\[0, {limit}\\)"):
        model(input_ids=input_ids, position_ids=torch.tensor([[0, 1, 2, limit]]))
    model(input_ids=input_ids, position_ids=torch.tensor([[limit - 4, limit - 3, limit - 2, limit - 1]]))


# ---------------------------------------------------------------------------------------------------------
# Auto classes, save / load, tied weights
# ---------------------------------------------------------------------------------------------------------

AUTO_CLASSES = [
    (AutoModel, HfcmBertModel),
    (AutoModelForPreTraining, HfcmBertForPreTraining),
    (AutoModelForMaskedLM, HfcmBertForMaskedLM),
    (AutoModelForNextSentencePrediction, HfcmBertForNextSentencePrediction),
    (AutoModelForSequenceClassification, HfcmBertForSequenceClassification),
    (AutoModelForTokenClassification, HfcmBertForTokenClassification),
    (AutoModelForQuestionAnswering, HfcmBertForQuestionAnswering),
    (AutoModelForMultipleChoice, HfcmBertForMultipleChoice),
]


def inputs_for(model_class):
    batch = padded_batch()
    if model_class is HfcmBertForMultipleChoice:
        return {name: torch.stack([tensor, tensor.flip(0)], dim=1) for name, tensor in batch.items()}
    return batch


def output_tensors(output):
    return [value for value in output.to_tuple() if isinstance(value, torch.Tensor)]


@pytest.mark.parametrize("auto_class, model_class", AUTO_CLASSES, ids=lambda c: c.__name__)
def test_auto_class_resolves_and_round_trips_exactly(auto_class, model_class, tmp_path):
    config = AutoConfig.for_model("hfcm_bert", preset="tiny", vocab_size=VOCAB, max_position_embeddings=MAX_POS,
                                  num_labels=NUM_LABELS)
    torch.manual_seed(0)
    model = auto_class.from_config(config).eval()
    assert type(model) is model_class
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "hfcm_bert"
    assert saved["architectures"] == [model_class.__name__]

    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is model_class
    # Every weight comes back bit for bit ...
    expected_state, actual_state = model.state_dict(), reloaded.state_dict()
    assert expected_state.keys() == actual_state.keys()
    for name, tensor in expected_state.items():
        assert torch.equal(actual_state[name], tensor), name
    # ... so the outputs agree. (Not always bitwise: the reloaded tensors sit at another memory alignment
    # inside the safetensors buffer, which changes the CPU matmul kernel's summation order by ~1e-9.)
    inputs = inputs_for(model_class)
    with torch.no_grad():
        expected, actual = output_tensors(model(**inputs)), output_tensors(reloaded(**inputs))
    assert len(expected) == len(actual) > 0
    for a, b in zip(expected, actual):
        assert a.shape == b.shape and max_abs_diff(a, b) <= 1e-6
    # Generic loading gives the same class too.
    assert type(AutoModel.from_pretrained(tmp_path)) is HfcmBertModel


def test_auto_tokenizer_is_registered_for_the_config(tmp_path):
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    assert TOKENIZER_MAPPING[HfcmBertConfig] is not None
    # A directory with our config.json and a bare vocab.txt (no tokenizer_class) loads through the registry.
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    tiny_config(vocab_size=len(tokens)).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tokenizer, transformers.BertTokenizer)
    assert tokenizer("hello worlds")["input_ids"] == [2, 5, 6, 7, 3]


@pytest.mark.parametrize("model_class", [HfcmBertForPreTraining, HfcmBertForMaskedLM])
def test_decoder_is_tied_to_word_embeddings_and_stored_once(model_class, tmp_path):
    model = make_model(model_class)
    embeddings = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is embeddings
    assert model.lm_head.decoder.bias.shape == (VOCAB,)  # its own bias
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        keys = set(weights.keys())
    assert "bert.embeddings.word_embeddings.weight" in keys
    assert "lm_head.decoder.weight" not in keys
    assert "lm_head.decoder.bias" in keys

    reloaded = model_class.from_pretrained(tmp_path)
    reloaded_embeddings = reloaded.get_input_embeddings().weight
    assert reloaded.lm_head.decoder.weight.data_ptr() == reloaded_embeddings.data_ptr()
    assert torch.equal(reloaded_embeddings, embeddings)
    assert torch.equal(reloaded.lm_head.decoder.bias, model.lm_head.decoder.bias)
    # Still tied during training: a gradient step on the embeddings moves the decoder.
    with torch.no_grad():
        reloaded_embeddings[5] += 1.0
    assert torch.equal(reloaded.lm_head.decoder.weight[5], reloaded_embeddings[5])


# ---------------------------------------------------------------------------------------------------------
# Semantics against transformers' reference BERT
# ---------------------------------------------------------------------------------------------------------

REFERENCE_CLASSES = [
    (transformers.BertModel, HfcmBertModel),
    (transformers.BertForPreTraining, HfcmBertForPreTraining),
    (transformers.BertForMaskedLM, HfcmBertForMaskedLM),
    (transformers.BertForNextSentencePrediction, HfcmBertForNextSentencePrediction),
    (transformers.BertForSequenceClassification, HfcmBertForSequenceClassification),
    (transformers.BertForTokenClassification, HfcmBertForTokenClassification),
    (transformers.BertForQuestionAnswering, HfcmBertForQuestionAnswering),
    (transformers.BertForMultipleChoice, HfcmBertForMultipleChoice),
]


def reference_pair(reference_class, model_class, attn_implementation="eager", **overrides):
    """A random transformers BERT and ours holding the same weights (via our converter)."""
    from hf_course_models.convert.bert import state_dict_from_transformers

    settings = {**TINY, "num_hidden_layers": 2, "num_labels": NUM_LABELS, **overrides}
    overrides.setdefault("num_labels", NUM_LABELS)
    torch.manual_seed(0)
    reference = reference_class(transformers.BertConfig(**settings)).eval()
    reference.set_attn_implementation(attn_implementation)
    config = tiny_config(sparse_mlm_head=False, **overrides)
    ours = model_class(config).eval()
    ours.load_state_dict(state_dict_from_transformers(reference.state_dict(), config), strict=True)
    ours.set_attn_implementation(attn_implementation)
    return reference, ours


def labels_for(model_class, inputs):
    generator = torch.Generator().manual_seed(3)
    batch_size = inputs["input_ids"].shape[0]
    if model_class in (HfcmBertForPreTraining, HfcmBertForMaskedLM):
        labels = {"labels": mlm_labels(inputs["input_ids"], inputs["attention_mask"])}
        if model_class is HfcmBertForPreTraining:
            labels["next_sentence_label"] = torch.tensor([0, 1, 0])
        return labels
    if model_class is HfcmBertForNextSentencePrediction:
        return {"labels": torch.tensor([1, 0, 1])}
    if model_class is HfcmBertForSequenceClassification:
        return {"labels": torch.randint(0, NUM_LABELS, (batch_size,), generator=generator)}
    if model_class is HfcmBertForTokenClassification:
        labels = torch.randint(0, NUM_LABELS, inputs["input_ids"].shape, generator=generator)
        return {"labels": labels.masked_fill(inputs["attention_mask"] == 0, -100)}
    if model_class is HfcmBertForQuestionAnswering:
        return {"start_positions": torch.tensor([1, 2, 0]), "end_positions": torch.tensor([5, 3, 2])}
    if model_class is HfcmBertForMultipleChoice:
        return {"labels": torch.tensor([0, 1, 1])}
    return {}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("reference_class, model_class", REFERENCE_CLASSES, ids=lambda c: c.__name__)
def test_outputs_and_losses_match_transformers_bert(reference_class, model_class, attn_implementation):
    # transformers sizes qa_outputs by num_labels; a QA head has exactly two (start, end).
    num_labels = {"num_labels": 2} if model_class is HfcmBertForQuestionAnswering else {}
    reference, ours = reference_pair(reference_class, model_class, attn_implementation, **num_labels)
    inputs = inputs_for(model_class)
    with torch.no_grad():
        expected = reference(**inputs, **labels_for(model_class, inputs))
        actual = ours(**inputs, **labels_for(model_class, inputs))
    mask = inputs["attention_mask"]
    compared = 0
    for name, value in expected.items():
        if name == "last_hidden_state":
            torch.testing.assert_close(real(actual[name], mask), real(value, mask), atol=1e-5, rtol=0)
        elif name == "prediction_logits":
            torch.testing.assert_close(real(actual[name], mask), real(value, mask), atol=1e-5, rtol=0)
        elif model_class is HfcmBertForTokenClassification and name == "logits":
            torch.testing.assert_close(real(actual[name], mask), real(value, mask), atol=1e-5, rtol=0)
        elif name in ("start_logits", "end_logits"):
            torch.testing.assert_close(actual[name][mask.bool()], value[mask.bool()], atol=1e-5, rtol=0)
        elif model_class is HfcmBertForMaskedLM and name == "logits":
            torch.testing.assert_close(real(actual[name], mask), real(value, mask), atol=1e-5, rtol=0)
        else:  # pooler_output, seq_relationship_logits, classification logits, losses
            torch.testing.assert_close(actual[name], value, atol=1e-5, rtol=0)
        compared += 1
    assert compared >= 1
    if labels_for(model_class, inputs):
        assert "loss" in expected and actual.loss is not None


def test_embeddings_are_token_plus_segment_plus_position_then_layernorm():
    model = make_model(HfcmBertModel)
    batch = padded_batch()
    embeddings = model.embeddings
    assert isinstance(embeddings.position_embeddings, torch.nn.Embedding)  # learned, not sinusoidal
    assert embeddings.position_embeddings.weight.shape == (MAX_POS, 32)
    assert embeddings.position_embeddings.weight.requires_grad
    with torch.no_grad():
        positions = torch.arange(batch["input_ids"].shape[1])
        summed = (embeddings.word_embeddings(batch["input_ids"])
                  + embeddings.token_type_embeddings(batch["token_type_ids"])
                  + embeddings.position_embeddings(positions))
        expected = F.layer_norm(summed, (32,), embeddings.layer_norm.weight, embeddings.layer_norm.bias,
                                model.config.layer_norm_eps)
        hidden_states = model(**batch, output_hidden_states=True).hidden_states
    torch.testing.assert_close(hidden_states[0], expected, atol=1e-6, rtol=0)


def test_pooler_is_dense_tanh_on_cls():
    model = make_model(HfcmBertModel)
    batch = padded_batch()
    with torch.no_grad():
        output = model(**batch)
        expected = torch.tanh(model.pooler.dense(output.last_hidden_state[:, 0]))
    torch.testing.assert_close(output.pooler_output, expected, atol=0, rtol=0)
    assert HfcmBertModel(tiny_config(), add_pooling_layer=False)(input_ids=batch["input_ids"]).pooler_output is None


def test_inputs_embeds_equals_input_ids():
    model = make_model(HfcmBertModel)
    batch = padded_batch()
    with torch.no_grad():
        from_ids = model(**batch).last_hidden_state
        embeds = model.get_input_embeddings()(batch.pop("input_ids"))
        from_embeds = model(inputs_embeds=embeds, **batch).last_hidden_state
    torch.testing.assert_close(from_embeds, from_ids, atol=0, rtol=0)


def test_dropout_is_active_in_train_mode_only():
    model = make_model(HfcmBertModel, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    input_ids = padded_batch()["input_ids"]
    with torch.no_grad():
        eval_a, eval_b = model(input_ids=input_ids).last_hidden_state, model(input_ids=input_ids).last_hidden_state
        model.train()
        train_a, train_b = model(input_ids=input_ids).last_hidden_state, model(input_ids=input_ids).last_hidden_state
    assert torch.equal(eval_a, eval_b)
    assert not torch.allclose(train_a, train_b)


# ---------------------------------------------------------------------------------------------------------
# Attention: implementations, masks, bidirectionality, returned weights
# ---------------------------------------------------------------------------------------------------------

def test_sdpa_is_the_default_and_eager_matches_it_on_padded_batches():
    sdpa = make_model(HfcmBertModel)
    assert sdpa.config._attn_implementation == "sdpa"
    eager = make_model(HfcmBertModel, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    eager.load_state_dict(sdpa.state_dict())
    batch = padded_batch()
    with torch.no_grad():
        a, b = sdpa(**batch).last_hidden_state, eager(**batch).last_hidden_state
    assert max_abs_diff(real(a, batch["attention_mask"]), real(b, batch["attention_mask"])) <= 1e-5
    unpadded = padded_batch(lengths=(9, 9))
    with torch.no_grad():
        a, b = sdpa(**unpadded).last_hidden_state, eager(**unpadded).last_hidden_state
    assert max_abs_diff(a, b) <= 1e-5


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("with_mask", [False, True])
def test_encoder_is_bidirectional_on_unpadded_input(attn_implementation, with_mask):
    """A late token influences an early position (a causal model would not), also when sdpa gets no mask."""
    model = make_model(HfcmBertModel, attn_implementation=attn_implementation)
    input_ids = torch.randint(1, VOCAB, (2, 8), generator=torch.Generator().manual_seed(5))
    changed = input_ids.clone()
    changed[:, -1] = (changed[:, -1] % (VOCAB - 1)) + 1
    mask = {"attention_mask": torch.ones_like(input_ids)} if with_mask else {}
    with torch.no_grad():
        before = model(input_ids=input_ids, **mask).last_hidden_state
        after = model(input_ids=changed, **mask).last_hidden_state
    assert max_abs_diff(before[:, 0], after[:, 0]) > 1e-3
    assert max_abs_diff(before[:, 3], after[:, 3]) > 1e-3


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_padding_does_not_change_real_positions(attn_implementation):
    model = make_model(HfcmBertForMaskedLM, attn_implementation=attn_implementation)
    input_ids = torch.randint(1, VOCAB, (1, 7), generator=torch.Generator().manual_seed(6))
    token_type_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    padded_ids = torch.cat([input_ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    padded_types = torch.cat([token_type_ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    attention_mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], dim=1).long()
    with torch.no_grad():
        alone = model(input_ids=input_ids, token_type_ids=token_type_ids, output_hidden_states=True)
        padded = model(input_ids=padded_ids, token_type_ids=padded_types, attention_mask=attention_mask,
                       output_hidden_states=True)
    assert max_abs_diff(alone.hidden_states[-1], padded.hidden_states[-1][:, :7]) <= 1e-5
    assert max_abs_diff(alone.logits, padded.logits[:, :7]) <= 1e-5
    # And a padded row's real positions do not depend on which batch-mates it has.
    other = torch.randint(1, VOCAB, (1, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        batched = model(input_ids=torch.cat([padded_ids, other]), token_type_ids=torch.cat([padded_types, other * 0]),
                        attention_mask=torch.cat([attention_mask, torch.ones_like(other)])).logits
    assert max_abs_diff(alone.logits[0], batched[0, :7]) <= 1e-5


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.int32])
def test_attention_mask_dtypes_are_equivalent(attn_implementation, dtype):
    model = make_model(HfcmBertModel, attn_implementation=attn_implementation)
    batch = padded_batch()
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        actual = model(**dict(batch, attention_mask=batch["attention_mask"].to(dtype))).last_hidden_state
    assert max_abs_diff(real(actual, batch["attention_mask"]), real(expected, batch["attention_mask"])) <= 1e-6


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_output_attentions_are_normalised_and_zero_on_padding(attn_implementation):
    model = make_model(HfcmBertModel, attn_implementation=attn_implementation)
    batch = padded_batch()
    with torch.no_grad():
        output = model(**batch, output_attentions=True)
        plain = model(**batch)
    config = model.config
    batch_size, seq_length = batch["input_ids"].shape
    assert len(output.attentions) == config.num_hidden_layers
    for weights in output.attentions:
        assert weights.shape == (batch_size, config.num_attention_heads, seq_length, seq_length)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5, rtol=0)
        padded_keys = (batch["attention_mask"] == 0)[:, None, None, :].expand_as(weights)
        assert weights[padded_keys].abs().max().item() < 1e-6
    # Asking for the weights (eager fallback under sdpa) does not change the result, nor the setting.
    assert max_abs_diff(real(output.last_hidden_state, batch["attention_mask"]),
                        real(plain.last_hidden_state, batch["attention_mask"])) <= 1e-5
    assert model.config._attn_implementation == attn_implementation
    assert plain.attentions is None and plain.hidden_states is None


def test_output_attentions_fallback_reads_a_flash_style_padding_mask():
    """flash_attention_2 builds its mask with transformers' `flash_attention_mask`: a 2-D (batch, seq) padding
    mask. Reproduced on CPU with an implementation registered under another name that uses that same mask
    function (names containing "flash" trigger the flash-attn import)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    def varlen_attention(module, query, key, value, attention_mask, **kwargs):
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        return sdpa_attention_forward(module, query, key, value, mask, **kwargs)

    AttentionInterface.register("hfcm_test_varlen", varlen_attention)
    AttentionMaskInterface.register("hfcm_test_varlen", flash_attention_mask)
    model = make_model(HfcmBertModel)
    batch = padded_batch()
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        model.set_attn_implementation("hfcm_test_varlen")
        assert max_abs_diff(real(model(**batch).last_hidden_state, batch["attention_mask"]),
                            real(expected, batch["attention_mask"])) <= 1e-5
        output = model(**batch, output_attentions=True)
    mask = batch["attention_mask"]
    assert max_abs_diff(real(output.last_hidden_state, mask), real(expected, mask)) <= 1e-5
    padded_keys = (mask == 0)[:, None, None, :].expand_as(output.attentions[0])
    assert output.attentions[0][padded_keys].abs().max().item() < 1e-6


def test_output_hidden_states_has_embeddings_plus_every_layer():
    model = make_model(HfcmBertForSequenceClassification)
    batch = padded_batch()
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
        base = model.bert(**batch)
    assert len(output.hidden_states) == model.config.num_hidden_layers + 1
    assert all(h.shape == (3, 10, 32) for h in output.hidden_states)
    assert torch.equal(output.hidden_states[-1], base.last_hidden_state)


def test_config_level_output_flags_are_honoured():
    model = make_model(HfcmBertModel, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        output = model(input_ids=padded_batch()["input_ids"])
    assert len(output.hidden_states) == 3 and len(output.attentions) == 2


@pytest.mark.parametrize("model_class", [HfcmBertModel, HfcmBertForMaskedLM, HfcmBertForPreTraining,
                                         HfcmBertForQuestionAnswering, HfcmBertForMultipleChoice])
def test_return_dict_false_returns_the_same_tensors_as_a_tuple(model_class):
    model = make_model(model_class)
    inputs = inputs_for(model_class)
    with torch.no_grad():
        as_dict = model(**inputs, output_hidden_states=True)
        as_tuple = model(**inputs, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected)
    for a, b in zip(as_tuple, expected):
        if isinstance(b, torch.Tensor):
            assert torch.equal(a, b)
        else:
            assert all(torch.equal(x, y) for x, y in zip(a, b))
    model.config.return_dict = False
    with torch.no_grad():
        assert isinstance(model(**inputs), tuple)


def sdpa_was_called(model, inputs):
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        model(**inputs)
    return any("scaled_dot_product_attention" in event.name for event in profile.events())


def test_switching_the_attention_implementation(tmp_path):
    model = make_model(HfcmBertForMaskedLM)
    batch = padded_batch()
    assert model.config._attn_implementation == "sdpa" and sdpa_was_called(model, batch)
    with torch.no_grad():
        sdpa_logits = model(**batch).logits
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager" and not sdpa_was_called(model, batch)
    with torch.no_grad():
        eager_logits = model(**batch).logits
    mask = batch["attention_mask"]
    assert max_abs_diff(real(sdpa_logits, mask), real(eager_logits, mask)) <= 1e-5

    model.set_attn_implementation("sdpa")
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert reloaded.config._attn_implementation == "eager" and not sdpa_was_called(reloaded, batch)
    with torch.no_grad():
        assert max_abs_diff(real(reloaded(**batch).logits, mask), real(eager_logits, mask)) <= 1e-6
    default = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert default.config._attn_implementation == "sdpa"


# ---------------------------------------------------------------------------------------------------------
# Training machinery: gradient checkpointing, resizing, mixed precision, optimisation
# ---------------------------------------------------------------------------------------------------------

def loss_and_gradients(model, inputs):
    model.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(use_reentrant):
    model = make_model(HfcmBertForPreTraining).train()
    assert model.supports_gradient_checkpointing
    batch = padded_batch()
    inputs = dict(batch, labels=mlm_labels(batch["input_ids"], batch["attention_mask"]),
                  next_sentence_label=torch.tensor([0, 1, 1]))
    loss, gradients = loss_and_gradients(model, inputs)

    # transformers 5 renamed gradient_checkpointing_enable (deprecated alias) to activation_checkpointing_enable.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    calls = []
    hook = model.bert.layers[0].attention.register_forward_hook(lambda *args: calls.append(1))
    checkpointed_loss, checkpointed_gradients = loss_and_gradients(model, inputs)
    hook.remove()
    assert len(calls) == 2  # the layer really is recomputed in the backward pass
    assert abs(loss.item() - checkpointed_loss.item()) <= 1e-6
    assert gradients.keys() == checkpointed_gradients.keys() and len(gradients) > 10
    for name, gradient in gradients.items():
        assert max_abs_diff(gradient, checkpointed_gradients[name]) <= 1e-6, name


@pytest.mark.parametrize("model_class", [HfcmBertForMaskedLM, HfcmBertForPreTraining])
def test_resize_token_embeddings_grows_embeddings_decoder_and_bias_still_tied(model_class, tmp_path):
    model = make_model(model_class)
    old_embeddings = model.get_input_embeddings().weight.detach().clone()
    old_bias = model.lm_head.decoder.bias.detach().clone()
    model.resize_token_embeddings(VOCAB + 10)
    new_vocab = VOCAB + 10
    embeddings = model.get_input_embeddings().weight
    decoder = model.get_output_embeddings()
    assert model.config.vocab_size == new_vocab
    assert embeddings.shape == (new_vocab, 32)
    assert decoder.weight.shape == (new_vocab, 32)
    assert decoder.bias.shape == (new_vocab,)
    assert decoder.weight is embeddings or decoder.weight.data_ptr() == embeddings.data_ptr()
    assert torch.equal(embeddings[:VOCAB], old_embeddings)
    assert torch.equal(decoder.bias[:VOCAB], old_bias)

    input_ids = torch.tensor([[2, VOCAB + 3, 5, VOCAB + 9]])
    labels = torch.tensor([[-100, VOCAB + 9, -100, VOCAB + 3]])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits if model_class is HfcmBertForMaskedLM \
            else model(input_ids=input_ids).prediction_logits
        loss = model(input_ids=input_ids, labels=labels).loss
    assert logits.shape == (1, 4, new_vocab)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError):
        model(input_ids=torch.tensor([[new_vocab]]))

    model.save_pretrained(tmp_path)
    reloaded = model_class.from_pretrained(tmp_path).eval()
    assert reloaded.config.vocab_size == new_vocab
    assert reloaded.get_output_embeddings().weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    with torch.no_grad():
        assert max_abs_diff(reloaded(input_ids=input_ids, labels=labels).loss, loss) == 0


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_bf16_autocast_forward_and_backward(attn_implementation):
    model = make_model(HfcmBertForPreTraining, attn_implementation=attn_implementation).train()
    batch = padded_batch()
    labels = mlm_labels(batch["input_ids"], batch["attention_mask"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**batch, labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))
    assert output.prediction_logits.dtype == torch.bfloat16  # autocast really ran the matmuls in bf16
    assert torch.isfinite(output.loss)
    output.loss.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)


def test_mlm_training_reduces_the_loss():
    model = make_model(HfcmBertForMaskedLM).train()
    batch = padded_batch(lengths=(12, 12, 10, 8), seed=11)
    labels = mlm_labels(batch["input_ids"], batch["attention_mask"], seed=12, fraction=0.4)
    masked = batch["input_ids"].masked_fill(labels != -100, 4)  # [MASK]
    inputs = dict(batch, input_ids=masked, labels=labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 4.0  # ~ln(99) at random init
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------------------------------------
# Sparse MLM head
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_class", [HfcmBertForMaskedLM, HfcmBertForPreTraining])
def test_sparse_mlm_head_has_the_dense_loss_and_gradients(model_class):
    model = make_model(model_class).train()
    assert model.config.sparse_mlm_head is True  # the default
    batch = padded_batch()
    labels = mlm_labels(batch["input_ids"], batch["attention_mask"])
    inputs = dict(batch, labels=labels)
    sparse_loss, sparse_gradients = loss_and_gradients(model, inputs)
    model.config.sparse_mlm_head = False
    dense_loss, dense_gradients = loss_and_gradients(model, inputs)
    assert abs(sparse_loss.item() - dense_loss.item()) <= 1e-6
    assert sparse_gradients.keys() == dense_gradients.keys()
    for name, gradient in dense_gradients.items():
        assert max_abs_diff(gradient, sparse_gradients[name]) <= 1e-6, name
    # The dense loss is the plain cross entropy over the labelled tokens.
    with torch.no_grad():
        output = model(**batch)
        logits = output.logits if model_class is HfcmBertForMaskedLM else output.prediction_logits
    expected = F.cross_entropy(logits[labels != -100], labels[labels != -100])
    assert abs(dense_loss.item() - expected.item()) <= 1e-6


def test_sparse_mlm_logits_are_the_labelled_rows_of_the_dense_logits():
    model = make_model(HfcmBertForMaskedLM)
    batch = padded_batch()
    labels = mlm_labels(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        dense = model(**batch).logits
        sparse = model(**batch, labels=labels).logits
    assert dense.shape == (3, 10, VOCAB)  # no labels: full logits
    assert sparse.shape == (int((labels != -100).sum()), VOCAB)
    assert max_abs_diff(sparse, dense[labels != -100]) <= 1e-6


def test_sparse_mlm_head_respects_num_items_in_batch():
    """Trainer's gradient accumulation passes num_items_in_batch: loss = sum / num_items_in_batch."""
    model = make_model(HfcmBertForMaskedLM)
    batch = padded_batch()
    labels = mlm_labels(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        sparse = model(**batch, labels=labels, num_items_in_batch=torch.tensor(40)).loss
        model.config.sparse_mlm_head = False
        dense = model(**batch, labels=labels, num_items_in_batch=torch.tensor(40)).loss
        logits = model(**batch).logits
    expected = F.cross_entropy(logits[labels != -100], labels[labels != -100], reduction="sum") / 40
    assert abs(sparse.item() - expected.item()) <= 1e-6 and abs(dense.item() - expected.item()) <= 1e-6


@pytest.mark.parametrize("model_class", [HfcmBertForMaskedLM, HfcmBertForPreTraining])
def test_sparse_mlm_head_with_no_labelled_token_gives_zero_loss(model_class):
    model = make_model(model_class).train()
    batch = padded_batch()
    labels = torch.full_like(batch["input_ids"], -100)
    output = model(**batch, labels=labels)
    mlm_loss = output.loss if model_class is HfcmBertForMaskedLM else output.mlm_loss
    assert torch.isfinite(mlm_loss) and mlm_loss.item() == 0.0
    output.loss.backward()  # keeps a graph: a training step on such a batch works
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---------------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------------

def test_pretraining_loss_is_mlm_plus_nsp():
    model = make_model(HfcmBertForPreTraining, sparse_mlm_head=False)
    batch = padded_batch()
    labels = mlm_labels(batch["input_ids"], batch["attention_mask"])
    next_sentence_label = torch.tensor([0, 1, 1])
    with torch.no_grad():
        output = model(**batch, labels=labels, next_sentence_label=next_sentence_label)
    assert output.prediction_logits.shape == (3, 10, VOCAB)
    assert output.seq_relationship_logits.shape == (3, 2)
    mlm = F.cross_entropy(output.prediction_logits[labels != -100], labels[labels != -100])
    nsp = F.cross_entropy(output.seq_relationship_logits, next_sentence_label)
    assert abs(output.mlm_loss.item() - mlm.item()) <= 1e-6
    assert abs(output.nsp_loss.item() - nsp.item()) <= 1e-6
    assert abs(output.loss.item() - (mlm + nsp).item()) <= 1e-6
    with torch.no_grad():
        assert abs(model(**batch, labels=labels).loss.item() - mlm.item()) <= 1e-6
        assert model(**batch).loss is None


def test_next_sentence_prediction_head():
    model = make_model(HfcmBertForNextSentencePrediction)
    batch = padded_batch()
    labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        output = model(**batch, labels=labels)
    assert output.logits.shape == (3, 2)
    assert abs(output.loss.item() - F.cross_entropy(output.logits, labels).item()) <= 1e-6


def test_sequence_classification_regression_when_one_label():
    model = make_model(HfcmBertForSequenceClassification, num_labels=1)
    batch = padded_batch()
    labels = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        output = model(**batch, labels=labels)
    assert output.logits.shape == (3, 1)
    assert abs(output.loss.item() - F.mse_loss(output.logits.squeeze(-1), labels).item()) <= 1e-6


def test_sequence_classification_cross_entropy_and_sentence_pairs():
    model = make_model(HfcmBertForSequenceClassification, num_labels=3)
    batch = padded_batch()
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        output = model(**batch, labels=labels)
        single = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert output.logits.shape == (3, 3)
    assert abs(output.loss.item() - F.cross_entropy(output.logits, labels).item()) <= 1e-6
    # Sentence B's segment ids change the prediction (token_type_ids are read).
    assert max_abs_diff(output.logits, single.logits) > 1e-4
    with torch.no_grad():
        unspecified = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=torch.zeros_like(batch["input_ids"]))
    assert torch.equal(unspecified.logits, single.logits)  # default segment is 0


def test_token_classification_ignores_minus_100():
    model = make_model(HfcmBertForTokenClassification, num_labels=NUM_LABELS)
    batch = padded_batch()
    labels = torch.randint(0, NUM_LABELS, (3, 10), generator=torch.Generator().manual_seed(4))
    labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
    labels[0, 0] = -100
    with torch.no_grad():
        output = model(**batch, labels=labels)
    assert output.logits.shape == (3, 10, NUM_LABELS)
    kept = labels != -100
    assert abs(output.loss.item() - F.cross_entropy(output.logits[kept], labels[kept]).item()) <= 1e-6


def test_question_answering_span_loss():
    model = make_model(HfcmBertForQuestionAnswering)
    batch = padded_batch()
    start, end = torch.tensor([1, 2, 0]), torch.tensor([5, 3, 2])
    with torch.no_grad():
        output = model(**batch, start_positions=start, end_positions=end)
        no_labels = model(**batch)
    assert output.start_logits.shape == output.end_logits.shape == (3, 10)
    expected = (F.cross_entropy(output.start_logits, start) + F.cross_entropy(output.end_logits, end)) / 2
    assert abs(output.loss.item() - expected.item()) <= 1e-6
    assert no_labels.loss is None
    assert torch.equal(no_labels.start_logits, output.start_logits)


def test_multiple_choice_scores_each_choice():
    model = make_model(HfcmBertForMultipleChoice)
    batch = padded_batch()
    choices = {name: torch.stack([t, t.roll(1, 0), t.roll(2, 0), t.flip(0)], dim=1) for name, t in batch.items()}
    labels = torch.tensor([3, 0, 2])
    with torch.no_grad():
        output = model(**choices, labels=labels)
        permuted = model(**{name: t[:, [2, 0, 3, 1]] for name, t in choices.items()})
    assert output.logits.shape == (3, 4)
    assert abs(output.loss.item() - F.cross_entropy(output.logits, labels).item()) <= 1e-6
    # One independent score per choice: permuting the choices permutes the scores.
    assert max_abs_diff(permuted.logits, output.logits[:, [2, 0, 3, 1]]) <= 1e-5
    with pytest.raises(ValueError):
        model(input_ids=batch["input_ids"])  # (batch, seq) is not a multiple-choice input


def test_package_exports_every_head():
    for _, model_class in AUTO_CLASSES:
        assert getattr(hf_course_models, model_class.__name__) is model_class
        assert model_class.config_class is HfcmBertConfig

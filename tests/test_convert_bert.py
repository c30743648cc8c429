"""`hfcm convert` for BERT: transformers' checkpoints -> ours -> transformers' again, same outputs.

Parity is measured through the directory-level functions, as a user converts: save_pretrained, convert,
load with the Auto classes. Every compared tensor's max |Δ| is printed at the end of the module
(`pytest -s` or `-rA` shows it). Models are random, with every parameter (biases and LayerNorms too)
perturbed so that a swapped or dropped tensor cannot hide behind an initial zero or one.
"""
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForPreTraining, AutoTokenizer, BertConfig, BertTokenizer

import hf_course_models
from hf_course_models.convert import convert_checkpoint
from hf_course_models.convert.bert import (
    config_from_transformers,
    state_dict_from_transformers,
    state_dict_to_transformers,
)

TOLERANCE = 1e-5
VOCAB_SIZE = 3000
SIZES = {
    "hidden64x2": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    "hidden256x4": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "##s", "##ing"]
MEASURED = []  # (size, direction, our attention, tensor, max |Δ|)


def bert_config(size="hidden64x2", **overrides):
    return BertConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=64, **SIZES[size], **overrides)


def random_model(model_class, config, seed):
    """Reproducibly random, with biases and LayerNorms moved off their initial zeros and ones too."""
    torch.manual_seed(seed)
    model = model_class(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def tokenizer():
    fillers = [f"word{i}" for i in range(VOCAB_SIZE - len(SPECIAL) - len(WORDS))]
    return BertTokenizer(vocab={token: i for i, token in enumerate(SPECIAL + WORDS + fillers)})


def save_with_tokenizer(model, directory):
    model.save_pretrained(directory)
    tokenizer().save_pretrained(directory)
    return directory


def padded_pairs(batch=3, length=24, seed=0):
    """Right-padded sentence pairs: segment 0 then segment 1, then padding (mask 0, id [PAD])."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(len(SPECIAL), VOCAB_SIZE, (batch, length), generator=generator)
    positions = torch.arange(length)
    lengths = torch.linspace(length, length // 3, batch).long()
    attention_mask = (positions < lengths[:, None]).long()
    token_type_ids = ((positions >= lengths[:, None] // 2) & attention_mask.bool()).long()
    return dict(input_ids=input_ids * attention_mask, attention_mask=attention_mask, token_type_ids=token_type_ids)


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True)


def max_deltas(expected, actual):
    """max |Δ| per output tensor, hidden states one by one."""
    deltas = {}
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            deltas[name] = (value - actual[name]).abs().max().item()
        elif name == "hidden_states":
            assert len(value) == len(actual[name])
            deltas.update({f"hidden_states[{i}]": (e - a).abs().max().item()
                           for i, (e, a) in enumerate(zip(value, actual[name]))})
    return deltas


def assert_close(expected, actual, record=None):
    deltas = max_deltas(expected, actual)
    if record:
        MEASURED.extend((*record, name, delta) for name, delta in deltas.items())
    assert max(deltas.values()) <= TOLERANCE, deltas


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nmax |Δ| (fp32, all positions incl. padding)")
    for size, direction, attention, name, delta in MEASURED:
        print(f"  {size:12} {direction:22} ours={attention:6} {name:24} {delta:.3e}")


@pytest.fixture(scope="module", params=SIZES)
def checkpoints(request, tmp_path_factory):
    """A transformers BertForPreTraining converted to ours, and an independent one of ours exported."""
    root = tmp_path_factory.mktemp(request.param)
    theirs = save_with_tokenizer(random_model(transformers.BertForPreTraining, bert_config(request.param), 1),
                                 root / "theirs")
    convert_checkpoint(theirs, root / "converted")
    ours_config = hf_course_models.HfcmBertConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=64,
                                                  **SIZES[request.param])
    ours = save_with_tokenizer(random_model(hf_course_models.HfcmBertForPreTraining, ours_config, 2), root / "ours")
    convert_checkpoint(ours, root / "exported", to="transformers")
    return request.param, root


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_transformers_to_ours_same_outputs(checkpoints, attention):
    size, root = checkpoints
    reference = transformers.BertForPreTraining.from_pretrained(root / "theirs").eval()
    converted = AutoModelForPreTraining.from_pretrained(root / "converted", attn_implementation=attention).eval()
    assert isinstance(converted, hf_course_models.HfcmBertForPreTraining)
    inputs = padded_pairs()
    assert_close(run(reference, inputs), run(converted, inputs), (size, "transformers -> ours", attention))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_ours_to_transformers_same_outputs(checkpoints, attention):
    size, root = checkpoints
    original = AutoModelForPreTraining.from_pretrained(root / "ours", attn_implementation=attention).eval()
    exported = transformers.BertForPreTraining.from_pretrained(root / "exported").eval()
    inputs = padded_pairs()
    assert_close(run(original, inputs), run(exported, inputs), (size, "ours -> transformers", attention))


LABELS = dict(id2label={0: "negative", 1: "neutral", 2: "positive"},
              label2id={"negative": 0, "neutral": 1, "positive": 2}, problem_type="single_label_classification")
HEADS = {  # transformers class -> (the Auto class that loads ours, config extras, input shape)
    "BertModel": ("AutoModel", {}, (3, 24)),
    "BertForMaskedLM": ("AutoModelForMaskedLM", {}, (3, 24)),
    "BertForSequenceClassification": ("AutoModelForSequenceClassification", LABELS, (3, 24)),
    "BertForNextSentencePrediction": ("AutoModelForNextSentencePrediction", {}, (3, 24)),
    "BertForTokenClassification": ("AutoModelForTokenClassification", dict(num_labels=5), (3, 24)),
    "BertForQuestionAnswering": ("AutoModelForQuestionAnswering", {}, (3, 24)),
    "BertForMultipleChoice": ("AutoModelForMultipleChoice", {}, (2, 4, 24)),
}


@pytest.mark.parametrize("name", HEADS)
def test_every_head_converts_both_ways_with_labels_and_tokenizer(tmp_path, name):
    auto_class, extra, shape = HEADS[name]
    bert_class = getattr(transformers, name)
    reference = random_model(bert_class, bert_config(**extra), 3)
    save_with_tokenizer(reference, tmp_path / "theirs")
    convert_checkpoint(tmp_path / "theirs", tmp_path / "ours")
    convert_checkpoint(tmp_path / "ours", tmp_path / "back", to="transformers")

    ours = getattr(transformers, auto_class).from_pretrained(tmp_path / "ours").eval()
    back = bert_class.from_pretrained(tmp_path / "back").eval()
    assert type(ours) is getattr(hf_course_models, "Hfcm" + name)
    for config in (ours.config, back.config):
        assert (config.id2label, config.label2id) == (reference.config.id2label, reference.config.label2id)
        assert config.problem_type == reference.config.problem_type
    flat = padded_pairs(batch=math.prod(shape[:-1]), length=shape[-1])
    inputs = {key: value.view(shape) for key, value in flat.items()}
    expected = run(reference, inputs)
    assert_close(expected, run(ours, inputs))
    assert_close(expected, run(back, inputs))

    pair = ("the cats sat", "a dog running on the mat")
    for directory in ("ours", "back"):
        travelled = AutoTokenizer.from_pretrained(tmp_path / directory)
        assert isinstance(travelled, BertTokenizer) and travelled(*pair) == tokenizer()(*pair)


def test_state_dicts_map_exactly_both_ways(tmp_path):
    """Bare BertModel keys and 'bert.'-prefixed ones; a saved file (tied copies left out) too."""
    config = bert_config()
    pretraining = random_model(transformers.BertForPreTraining, config, 4)
    for model in (transformers.BertModel(config), pretraining):
        state_dict = model.state_dict()
        there_and_back = state_dict_to_transformers(state_dict_from_transformers(state_dict, config), config)
        assert there_and_back.keys() == state_dict.keys()
        assert all(torch.equal(there_and_back[key], state_dict[key]) for key in state_dict)

    pretraining.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert "cls.predictions.decoder.weight" not in saved
    ours = hf_course_models.HfcmBertForPreTraining(config_from_transformers(config))
    ours.load_state_dict(state_dict_from_transformers(saved, config), strict=True)
    assert torch.equal(ours.lm_head.decoder.bias, saved["cls.predictions.bias"])


def test_untied_decoder_keeps_its_own_weights(tmp_path):
    reference = random_model(transformers.BertForMaskedLM, bert_config(tie_word_embeddings=False), 5)
    reference.save_pretrained(tmp_path / "theirs")
    convert_checkpoint(tmp_path / "theirs", tmp_path / "ours")
    ours = hf_course_models.HfcmBertForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    assert ours.lm_head.decoder.weight is not ours.bert.embeddings.word_embeddings.weight
    inputs = padded_pairs()
    assert_close(run(reference, inputs), run(ours, inputs))


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
    from transformers import AutoModelForPreTraining, AutoTokenizer

    checkpoint, inputs, outputs = sys.argv[1:]
    model = AutoModelForPreTraining.from_pretrained(checkpoint).eval()
    assert type(model).__name__ == "BertForPreTraining", type(model)
    assert type(AutoTokenizer.from_pretrained(checkpoint)).__name__ == "BertTokenizer"
    with torch.no_grad():
        result = model(**load_file(inputs))
    save_file({"prediction_logits": result.prediction_logits,
               "seq_relationship_logits": result.seq_relationship_logits}, outputs)
""")


def test_exported_checkpoint_loads_without_our_package(checkpoints, tmp_path):
    _, root = checkpoints
    inputs = padded_pairs()
    save_file(inputs, tmp_path / "inputs.safetensors")
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, root / "exported", tmp_path / "inputs.safetensors",
         tmp_path / "outputs.safetensors"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    original = AutoModelForPreTraining.from_pretrained(root / "ours").eval()
    assert_close(load_file(tmp_path / "outputs.safetensors"), run(original, inputs))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(OSError, match="nowhere.*does not exist"):
        convert_checkpoint(tmp_path / "nowhere", tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError, match="empty holds no config.json"):
        convert_checkpoint(empty, tmp_path / "out")

    BertConfig(vocab_size=10).save_pretrained(empty)
    with pytest.raises(OSError, match="empty holds no model.safetensors"):
        convert_checkpoint(empty, tmp_path / "out")

    transformers.T5Config(num_layers=1).save_pretrained(tmp_path / "t5")
    (tmp_path / "t5" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="model_type 't5'.*supported: 'bert' to 'hfcm'"):
        convert_checkpoint(tmp_path / "t5", tmp_path / "out")

    decoder = tmp_path / "decoder"
    transformers.BertLMHeadModel(bert_config(is_decoder=True)).save_pretrained(decoder)
    with pytest.raises(ValueError, match="cannot convert a BertLMHeadModel; supported: BertModel, "):
        convert_checkpoint(decoder, tmp_path / "out")
    with pytest.raises(ValueError, match="model_type 'bert'.* to 'transformers'"):
        convert_checkpoint(decoder, tmp_path / "out", to="transformers")
    with pytest.raises(ValueError, match="is_decoder=True"):
        config_from_transformers(bert_config(is_decoder=True))

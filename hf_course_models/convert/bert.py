"""Transformers' BERT checkpoints to ours and back, with identical outputs.

Both libraries hold the same tensors under other names, so the mapping is a table of module names.
The one structural difference: our attention has a single `qkv` projection, the concatenation of
transformers' `query`, `key` and `value` along the output dimension. Tied tensors follow each class's
documented `_tied_weights_keys`: a saved checkpoint leaves the tied copies out and they are filled in
from their source; the converted state dict holds every key the target model's `state_dict()` has, so
it loads with `strict=True`.
"""
import logging
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer

from ..modeling.bert import modeling_hfcm_bert as hfcm
from ..modeling.bert.configuration_hfcm_bert import HfcmBertConfig

logger = logging.getLogger(__name__)

# Transformers' class name -> ours, for every head the two libraries share.
ARCHITECTURES = {
    "BertModel": hfcm.HfcmBertModel,
    "BertForPreTraining": hfcm.HfcmBertForPreTraining,
    "BertForMaskedLM": hfcm.HfcmBertForMaskedLM,
    "BertForNextSentencePrediction": hfcm.HfcmBertForNextSentencePrediction,
    "BertForSequenceClassification": hfcm.HfcmBertForSequenceClassification,
    "BertForTokenClassification": hfcm.HfcmBertForTokenClassification,
    "BertForQuestionAnswering": hfcm.HfcmBertForQuestionAnswering,
    "BertForMultipleChoice": hfcm.HfcmBertForMultipleChoice,
}

# Config attributes the two configs share, under the same names (labels included).
CONFIG_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "initializer_range", "layer_norm_eps", "classifier_dropout", "pad_token_id",
    "tie_word_embeddings", "id2label", "label2id", "problem_type",
)

# (transformers' modules, our module): several modules on the left are concatenated along dim 0.
# Embedding modules: inside the encoder ("bert." in the head models).
EMBEDDING_MODULES = [
    (("embeddings.word_embeddings",), "embeddings.word_embeddings"),
    (("embeddings.position_embeddings",), "embeddings.position_embeddings"),
    (("embeddings.token_type_embeddings",), "embeddings.token_type_embeddings"),
    (("embeddings.LayerNorm",), "embeddings.layer_norm"),
]
# Layer modules: under "encoder.layer.{i}." in transformers and "layers.{i}." in ours.
LAYER_MODULES = [
    (("attention.self.query", "attention.self.key", "attention.self.value"), "attention.qkv"),
    (("attention.output.dense",), "attention.out"),
    (("attention.output.LayerNorm",), "attention_norm"),
    (("intermediate.dense",), "intermediate"),
    (("output.dense",), "output"),
    (("output.LayerNorm",), "output_norm"),
]
POOLER_MODULES = [(("pooler.dense",), "pooler.dense")]
# Head modules: at the top level of the head models.
HEAD_MODULES = [
    (("cls.predictions.transform.dense",), "lm_head.dense"),
    (("cls.predictions.transform.LayerNorm",), "lm_head.layer_norm"),
    (("cls.predictions.decoder",), "lm_head.decoder"),
    (("cls.seq_relationship",), "nsp_head"),
    (("classifier",), "classifier"),
    (("qa_outputs",), "qa_outputs"),
]
# Transformers keeps the LM bias twice: `cls.predictions.bias`, tied to the `decoder.bias` that the
# forward pass uses. Ours has only the decoder's.
LM_BIAS, LM_DECODER_BIAS = "cls.predictions.bias", "cls.predictions.decoder.bias"
# Buffers of transformers' embeddings that older checkpoints saved; ours computes them.
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def _tensor_pairs(num_layers, prefix):
    """(transformers keys, our key) for every weight and bias BERT can have; `prefix` is the encoder's."""
    layers = [(tuple(f"encoder.layer.{i}.{t}" for t in sources), f"layers.{i}.{ours}")
              for i in range(num_layers) for sources, ours in LAYER_MODULES]
    encoder = [(tuple(prefix + t for t in sources), prefix + ours)
               for sources, ours in EMBEDDING_MODULES + layers + POOLER_MODULES]
    return [([f"{t}.{name}" for t in sources], f"{ours}.{name}")
            for sources, ours in encoder + HEAD_MODULES for name in ("weight", "bias")]


def _encoder_prefix(state_dict):
    return "bert." if any(key.startswith("bert.") for key in state_dict) else ""


def _with_tied_copies(state_dict, tied_keys, config):
    """The state dict plus the tied copies a saved checkpoint leaves out, where its model has them."""
    state_dict = dict(state_dict)
    if config.tie_word_embeddings:
        for copy, source in tied_keys.items():
            head = copy.rsplit(".", 2)[0]  # "cls.predictions" or "lm_head": only models with an LM head
            if copy not in state_dict and source in state_dict and any(k.startswith(head + ".") for k in state_dict):
                state_dict[copy] = state_dict[source]
    return state_dict


def _refuse_leftovers(state_dict, target):
    if state_dict:
        raise ValueError(f"Keys with no counterpart in {target}: {', '.join(sorted(state_dict))}.")


def state_dict_from_transformers(state_dict, config):
    """Any transformers Bert* state dict ('bert.'-prefixed, or bare BertModel keys) -> ours.

    `config` (ours or transformers') gives the number of layers and whether the LM decoder is tied.
    """
    state_dict = _with_tied_copies(state_dict, transformers.BertForPreTraining._tied_weights_keys, config)
    prefix = _encoder_prefix(state_dict)
    converted = {}
    for sources, ours in _tensor_pairs(config.num_hidden_layers, prefix):
        if sources[0] in state_dict:
            converted[ours] = torch.cat([state_dict.pop(key) for key in sources])
    for key in (LM_BIAS, *(prefix + buffer for buffer in BUFFERS)):
        state_dict.pop(key, None)
    _refuse_leftovers(state_dict, "hf_course_models' BERT")
    return converted


def state_dict_to_transformers(state_dict, config):
    """Any of our BERT state dicts -> the matching transformers Bert* state dict."""
    state_dict = _with_tied_copies(state_dict, hfcm.HfcmBertForPreTraining._tied_weights_keys, config)
    converted = {}
    for targets, ours in _tensor_pairs(config.num_hidden_layers, _encoder_prefix(state_dict)):
        if ours in state_dict:
            converted.update(zip(targets, state_dict.pop(ours).chunk(len(targets))))
    if LM_DECODER_BIAS in converted:
        converted[LM_BIAS] = converted[LM_DECODER_BIAS]
    _refuse_leftovers(state_dict, "transformers' BERT")
    return converted


def config_from_transformers(bert_config):
    """transformers' BertConfig -> ours; refuses the BERT variants our model does not implement."""
    unsupported = {
        "is_decoder": getattr(bert_config, "is_decoder", False),
        "add_cross_attention": getattr(bert_config, "add_cross_attention", False),
        "position_embedding_type": getattr(bert_config, "position_embedding_type", "absolute") != "absolute",
    }
    if any(unsupported.values()):
        names = ", ".join(f"{name}={getattr(bert_config, name)!r}" for name, bad in unsupported.items() if bad)
        raise ValueError(f"Cannot convert a BERT with {names}: ours is the paper's bidirectional encoder "
                         "with absolute position embeddings.")
    return HfcmBertConfig(**{name: getattr(bert_config, name) for name in CONFIG_FIELDS})


def config_to_transformers(config):
    """Our config -> transformers' BertConfig."""
    return transformers.BertConfig(**{name: getattr(config, name) for name in CONFIG_FIELDS})


def _load_exactly(model_class, directory):
    """`from_pretrained`, refusing a checkpoint with missing, unexpected or mismatched keys."""
    model, info = model_class.from_pretrained(directory, use_safetensors=True, output_loading_info=True)
    problems = {kind: sorted(keys) for kind, keys in info.items() if keys}
    if problems:
        raise ValueError(f"{directory} does not hold a complete {model_class.__name__}: {problems}.")
    return model


def _save_converted(model_class, config, state_dict, dtype, out_dir):
    model = model_class(config).to(dtype)
    model.load_state_dict(state_dict, strict=True)
    model.save_pretrained(out_dir)


def _copy_tokenizer(src_dir, out_dir):
    if any((Path(src_dir) / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json", "vocab.txt")):
        AutoTokenizer.from_pretrained(src_dir).save_pretrained(out_dir)
    else:
        logger.warning("%s has no tokenizer files: %s holds the model only.", src_dir, out_dir)


def _architecture(directory, config_class, default):
    config = AutoConfig.from_pretrained(directory)
    if not isinstance(config, config_class):
        raise ValueError(f"{directory} holds a {config.model_type!r} model, not a {config_class.model_type!r} one.")
    return (config.architectures or [default])[0]


def convert_transformers_bert(src_dir, out_dir):
    """A transformers Bert* checkpoint directory -> ours (safetensors + tokenizer); returns `out_dir`."""
    name = _architecture(src_dir, transformers.BertConfig, "BertModel")
    if name not in ARCHITECTURES:
        raise ValueError(f"{src_dir}: cannot convert a {name}; supported: {', '.join(ARCHITECTURES)}.")
    reference = _load_exactly(getattr(transformers, name), src_dir)
    config = config_from_transformers(reference.config)
    state_dict = state_dict_from_transformers(reference.state_dict(), config)
    _save_converted(ARCHITECTURES[name], config, state_dict, reference.dtype, out_dir)
    _copy_tokenizer(src_dir, out_dir)
    return str(out_dir)


def export_to_transformers(src_dir, out_dir):
    """One of our BERT checkpoint directories -> transformers' Bert* class with the same head."""
    transformers_names = {ours.__name__: name for name, ours in ARCHITECTURES.items()}
    name = _architecture(src_dir, HfcmBertConfig, "HfcmBertModel")
    if name not in transformers_names:
        raise ValueError(f"{src_dir}: cannot export a {name}; supported: {', '.join(transformers_names)}.")
    ours = _load_exactly(getattr(hfcm, name), src_dir)
    state_dict = state_dict_to_transformers(ours.state_dict(), ours.config)
    bert_class = getattr(transformers, transformers_names[name])
    _save_converted(bert_class, config_to_transformers(ours.config), state_dict, ours.dtype, out_dir)
    _copy_tokenizer(src_dir, out_dir)
    return str(out_dir)

"""Transformers' GPT-2 and OpenAI-GPT (GPT-1) checkpoints to ours and back, with identical outputs.

The three models hold the same tensors, in the same layouts, under other names: our block projections store
their weights (in_features, out_features) as transformers' `Conv1D` does. GPT-2 is pre-LN with a final LayerNorm
(`ln_f`); OpenAI-GPT is post-LN without one, so our pre-LN models export to GPT-2's classes and post-LN ones to
OpenAI-GPT's. In both libraries the LM head is tied to the token embeddings; a saved checkpoint may leave either
copy out.
"""
import logging

import transformers

from ..modeling.gpt import modeling_hfcm_gpt as hfcm
from ..modeling.gpt.configuration_hfcm_gpt import HfcmGptConfig
from .bert import _architecture, _copy_tokenizer, _load_exactly, _save_converted

logger = logging.getLogger(__name__)

# Transformers' class names -> ours, per family.
ARCHITECTURES = {
    "gpt2": {
        "GPT2Model": hfcm.HfcmGptModel,
        "GPT2LMHeadModel": hfcm.HfcmGptForCausalLM,
        "GPT2ForSequenceClassification": hfcm.HfcmGptForSequenceClassification,
        "GPT2DoubleHeadsModel": hfcm.HfcmGptDoubleHeadsModel,
    },
    "openai-gpt": {
        "OpenAIGPTModel": hfcm.HfcmGptModel,
        "OpenAIGPTLMHeadModel": hfcm.HfcmGptForCausalLM,
        "OpenAIGPTForSequenceClassification": hfcm.HfcmGptForSequenceClassification,
        "OpenAIGPTDoubleHeadsModel": hfcm.HfcmGptDoubleHeadsModel,
    },
}
# Which family each of our LayerNorm placements exports to.
FAMILY_OF_LAYER_NORM_POSITION = {"pre": "gpt2", "post": "openai-gpt"}

# (transformers' module, ours). Decoder modules sit under "transformer." in the head models.
DECODER_MODULES = {
    "gpt2": [("wte", "wte"), ("wpe", "wpe"), ("ln_f", "final_norm")],
    "openai-gpt": [("tokens_embed", "wte"), ("positions_embed", "wpe")],
}
# Block modules: under "h.{i}." in transformers and "layers.{i}." in ours. ln_1 / ln_2 sit before attention
# and MLP in GPT-2 and after them in OpenAI-GPT, exactly where our pre-/post-LN blocks use the same norms.
LAYER_MODULES = [
    ("ln_1", "attention_norm"),
    ("attn.c_attn", "attention.qkv"),
    ("attn.c_proj", "attention.out"),
    ("ln_2", "mlp_norm"),
    ("mlp.c_fc", "mlp.intermediate"),
    ("mlp.c_proj", "mlp.output"),
]
HEAD_MODULES = [
    ("lm_head", "lm_head"),
    ("score", "score"),
    ("multiple_choice_head.summary", "multiple_choice_head"),
]
# Buffers that transformers' GPT classes (or older checkpoints of them) carry: causal masks and position
# ids, which ours computes.
BUFFER_SUFFIXES = ("attn.bias", "attn.masked_bias", "position_ids")

# GELU's tanh approximation is "gelu_new" in GPT-2 and "gelu" in OpenAI-GPT; ours runs it as one fused kernel.
TANH_GELU = "gelu_pytorch_tanh"
GPT2_ACTIVATIONS = {"gelu_new": TANH_GELU}
OPENAI_ACTIVATIONS = {"gelu": TANH_GELU, "relu": "relu", "silu": "silu", "swish": "silu"}

# Config attributes with the same names in all three configs (labels included).
SHARED_FIELDS = ("vocab_size", "initializer_range", "pad_token_id", "bos_token_id", "eos_token_id",
                 "tie_word_embeddings", "id2label", "label2id", "problem_type")
# Transformers' GPT name -> ours.
RENAMED_FIELDS = {
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_positions": "max_position_embeddings",
    "resid_pdrop": "hidden_dropout_prob",
    "embd_pdrop": "embedding_dropout_prob",
    "attn_pdrop": "attention_probs_dropout_prob",
    "layer_norm_epsilon": "layer_norm_eps",
    "summary_first_dropout": "classifier_dropout",
}
# GPT-2 variants our model does not implement: (attribute, the value ours corresponds to).
GPT2_UNSUPPORTED = (
    ("scale_attn_weights", True),
    ("scale_attn_by_inverse_layer_idx", False),
    ("reorder_and_upcast_attn", False),
    ("add_cross_attention", False),
)
# The multiple-choice head ours has: a linear projection to one score of the chosen token's hidden state.
SUMMARY_SETTINGS = (("summary_type", "cls_index"), ("summary_use_proj", True), ("summary_activation", None))


def _family(config):
    return "gpt2" if config.model_type == "gpt2" else "openai-gpt"


def _tensor_pairs(family, num_layers, prefix):
    """(transformers key, our key) for every weight and bias the family can have."""
    layers = [(f"h.{i}.{theirs}", f"layers.{i}.{ours}") for i in range(num_layers) for theirs, ours in LAYER_MODULES]
    modules = [(prefix + theirs, prefix + ours) for theirs, ours in DECODER_MODULES[family] + layers]
    return [(f"{theirs}.{name}", f"{ours}.{name}") for theirs, ours in modules + HEAD_MODULES
            for name in ("weight", "bias")]


def _decoder_prefix(state_dict):
    return "transformer." if any(key.startswith("transformer.") for key in state_dict) else ""


def _with_tied_head(state_dict, embedding_key, config):
    """The state dict with both tied copies, as the LM and double-heads models have them (a saved checkpoint
    keeps only one). The bare decoder (no prefix) and the sequence classifier (`score`) have no LM head."""
    state_dict = dict(state_dict)
    has_lm_head = embedding_key.startswith("transformer.") and not any(k.startswith("score.") for k in state_dict)
    if config.tie_word_embeddings and has_lm_head:
        for copy, source in (("lm_head.weight", embedding_key), (embedding_key, "lm_head.weight")):
            if copy not in state_dict and source in state_dict:
                state_dict[copy] = state_dict[source]
    return state_dict


def _refuse_leftovers(state_dict, target):
    leftovers = [key for key in state_dict if not key.endswith(BUFFER_SUFFIXES)]
    if leftovers:
        raise ValueError(f"Keys with no counterpart in {target}: {', '.join(sorted(leftovers))}.")


def state_dict_from_transformers(state_dict, config):
    """A transformers GPT2* / OpenAIGPT* state dict ('transformer.'-prefixed, or bare base-model keys) -> ours.

    `config` is the source's transformers config (it names the family and the number of layers).
    """
    family = _family(config)
    prefix = _decoder_prefix(state_dict)
    state_dict = _with_tied_head(state_dict, prefix + DECODER_MODULES[family][0][0] + ".weight", config)
    converted = {}
    for theirs, ours in _tensor_pairs(family, config.num_hidden_layers, prefix):
        if theirs in state_dict:
            converted[ours] = state_dict.pop(theirs)
    _refuse_leftovers(state_dict, "hf_course_models' GPT")
    return converted


def state_dict_to_transformers(state_dict, config):
    """Any of our GPT state dicts -> the matching transformers GPT-2 (pre-LN) or OpenAI-GPT (post-LN) one."""
    family = FAMILY_OF_LAYER_NORM_POSITION[config.layer_norm_position]
    prefix = _decoder_prefix(state_dict)
    state_dict = _with_tied_head(state_dict, prefix + "wte.weight", config)
    converted = {}
    for theirs, ours in _tensor_pairs(family, config.num_hidden_layers, prefix):
        if ours in state_dict:
            converted[theirs] = state_dict.pop(ours)
    _refuse_leftovers(state_dict, f"transformers' {family}")
    return converted


def _refuse(config, checks, what):
    wrong = [f"{name}={getattr(config, name, expected)!r}" for name, expected in checks
             if getattr(config, name, expected) != expected]
    if wrong:
        raise ValueError(f"Cannot convert a {config.model_type} model with {', '.join(wrong)}: {what}.")


def config_from_transformers(config, architecture=None):
    """transformers' GPT2Config or OpenAIGPTConfig -> ours; refuses variants our model does not implement."""
    if _family(config) == "gpt2":
        _refuse(config, GPT2_UNSUPPORTED, "ours is the papers' self-attention decoder, scaled by 1/sqrt(head_dim)")
        activation = GPT2_ACTIVATIONS.get(config.activation_function, config.activation_function)
        intermediate_size = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        placement = dict(layer_norm_position="pre", scale_residual_init=True)
    else:
        if config.afn not in OPENAI_ACTIVATIONS:
            raise ValueError(f"Cannot convert an openai-gpt model with afn={config.afn!r}; "
                             f"supported: {', '.join(OPENAI_ACTIVATIONS)}.")
        activation, intermediate_size = OPENAI_ACTIVATIONS[config.afn], 4 * config.n_embd
        placement = dict(layer_norm_position="post", scale_residual_init=False)
    if architecture is not None and "DoubleHeads" in architecture:
        _refuse(config, SUMMARY_SETTINGS, "ours scores each choice with one linear layer on its token")
    return HfcmGptConfig(
        **{name: getattr(config, name) for name in SHARED_FIELDS},
        **{ours: getattr(config, theirs) for theirs, ours in RENAMED_FIELDS.items()},
        hidden_act=activation, intermediate_size=intermediate_size, use_cache=getattr(config, "use_cache", True),
        **placement,
    )


def config_to_transformers(config):
    """Our config -> transformers' GPT2Config (pre-LN) or OpenAIGPTConfig (post-LN)."""
    fields = {**{name: getattr(config, name) for name in SHARED_FIELDS},
              **{theirs: getattr(config, ours) for theirs, ours in RENAMED_FIELDS.items()}}
    if config.classifier_dropout is None:  # ours then uses the hidden dropout; transformers' needs the number
        fields["summary_first_dropout"] = config.hidden_dropout_prob
    if config.layer_norm_position == "pre":
        activation = {TANH_GELU: "gelu_new"}.get(config.hidden_act, config.hidden_act)
        return transformers.GPT2Config(activation_function=activation, n_inner=config.intermediate_size,
                                       use_cache=config.use_cache, **fields)
    afn = {TANH_GELU: "gelu", "gelu_new": "gelu", "relu": "relu", "silu": "silu"}.get(config.hidden_act)
    if afn is None or config.intermediate_size != 4 * config.hidden_size:
        raise ValueError(
            f"OpenAI-GPT (transformers' class for post-LN GPT) supports hidden_act gelu_pytorch_tanh, relu or silu "
            f"and intermediate_size = 4 * hidden_size; this model has hidden_act={config.hidden_act!r}, "
            f"intermediate_size={config.intermediate_size}, hidden_size={config.hidden_size}."
        )
    return transformers.OpenAIGPTConfig(afn=afn, **fields)


def convert_transformers_gpt(src_dir, out_dir):
    """A transformers GPT2* or OpenAIGPT* checkpoint directory -> ours (safetensors + tokenizer); returns
    `out_dir`."""
    source_config = transformers.AutoConfig.from_pretrained(src_dir)
    family = _family(source_config)
    config_class = transformers.GPT2Config if family == "gpt2" else transformers.OpenAIGPTConfig
    architectures = ARCHITECTURES[family]
    name = _architecture(src_dir, config_class, next(iter(architectures)))
    if name not in architectures:
        raise ValueError(f"{src_dir}: cannot convert a {name}; supported: {', '.join(architectures)}.")
    config = config_from_transformers(source_config, name)
    reference = _load_exactly(getattr(transformers, name), src_dir)
    state_dict = state_dict_from_transformers(reference.state_dict(), reference.config)
    _save_converted(architectures[name], config, state_dict, reference.dtype, out_dir)
    _copy_tokenizer(src_dir, out_dir)
    return str(out_dir)


def export_to_transformers(src_dir, out_dir):
    """One of our GPT checkpoint directories -> transformers' class with the same head: GPT-2's for pre-LN
    models, OpenAI-GPT's for post-LN (GPT-1) ones."""
    name = _architecture(src_dir, HfcmGptConfig, "HfcmGptModel")
    ours = _load_exactly(getattr(hfcm, name), src_dir)
    family = FAMILY_OF_LAYER_NORM_POSITION[ours.config.layer_norm_position]
    transformers_names = {model.__name__: theirs for theirs, model in ARCHITECTURES[family].items()}
    config = config_to_transformers(ours.config)
    state_dict = state_dict_to_transformers(ours.state_dict(), ours.config)
    _save_converted(getattr(transformers, transformers_names[name]), config, state_dict, ours.dtype, out_dir)
    _copy_tokenizer(src_dir, out_dir)
    return str(out_dir)

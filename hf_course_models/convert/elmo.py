"""AllenNLP / bilm-tf ELMo weights (`options.json` + `weights.hdf5`) -> our ELMo, with the same outputs.

The hdf5 file holds bilm-tf's TensorFlow variables as numpy arrays (the layout AllenNLP reads):
- `char_embed` (261, d): our embedding gets a zero row 0 in front for padding tokens;
- `CNN/W_cnn_i` (1, width, d, n) and `CNN/b_cnn_i`: Conv1d weight (n, d, width);
- `CNN_high_k/{W,b}_{carry,transform}` and `CNN_proj/{W,b}_proj`: x·W + b, i.e. Linear weight Wᵀ;
- `RNN_{0,1}/RNN/MultiRNNCell/Cell{l}/LSTMCell/{W_0, B, W_P_0}` (direction 0 forward, 1 backward): W_0 is applied
  to [x; h] with gates ordered i, j, f, o; ours are torch's i, f, g(=j), o, split into weight_ih / weight_hh, and
  TF's forget bias of 1.0 is folded into our bias.
These files contain no softmax: a converted model has the biLM only. `AutoModelForPreTraining` on it gets a
freshly initialised softmax (reported as missing keys); the scalar mixes start at their initial values (equal
weights, γ = 1), as in AllenNLP.
"""
import json
import logging
from pathlib import Path

import torch

from ..modeling.elmo.configuration_hfcm_elmo import HfcmElmoConfig
from ..modeling.elmo.modeling_hfcm_elmo import HfcmElmoModel

logger = logging.getLogger(__name__)

TF_TO_TORCH_GATES = [0, 2, 1, 3]  # TF's (i, j, f, o) blocks in torch's order (i, f, g, o)
TF_FORGET_BIAS = 1.0


def _option(options, path):
    value = options
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"ELMo options lack {path!r}: pass the options.json that came with the weights "
                             "(bilm-tf's format, with 'lstm' and 'char_cnn' sections).")
        value = value[key]
    return value


def config_from_options(options, **overrides):
    """bilm-tf's options (the parsed options.json) -> HfcmElmoConfig; `overrides` set any other config value."""
    if "char_cnn" not in options:
        raise ValueError("These ELMo options describe a biLM over word embeddings (no 'char_cnn' section); only the "
                         "character-based ELMo is supported.")
    if options.get("bidirectional", True) is not True:
        raise ValueError("These ELMo options describe a one-direction LM (bidirectional: false); ELMo is a biLM.")
    n_characters = _option(options, "char_cnn.n_characters")
    if n_characters not in (261, 262):
        raise ValueError(f"char_cnn.n_characters is {n_characters}; bilm-tf's character ids need 261 (262 with the "
                         "padding id AllenNLP adds).")
    values = dict(
        hidden_size=_option(options, "lstm.projection_dim"),
        intermediate_size=_option(options, "lstm.dim"),
        num_hidden_layers=_option(options, "lstm.n_layers"),
        cell_clip=options["lstm"].get("cell_clip"),
        proj_clip=options["lstm"].get("proj_clip"),
        use_skip_connections=bool(options["lstm"].get("use_skip_connections", False)),
        char_embedding_size=_option(options, "char_cnn.embedding.dim"),
        char_filters=_option(options, "char_cnn.filters"),
        num_highway_layers=_option(options, "char_cnn.n_highway"),
        char_cnn_activation=_option(options, "char_cnn.activation"),
        max_characters_per_token=_option(options, "char_cnn.max_characters_per_token"),
        char_vocab_size=262,
    )
    if "n_tokens_vocab" in options:
        values["vocab_size"] = options["n_tokens_vocab"]
    if "dropout" in options:
        values["hidden_dropout_prob"] = options["dropout"]
    return HfcmElmoConfig(**{**values, **overrides})


def _lstm_prefix(direction, layer):
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def expected_datasets(config):
    """Every dataset the weight file must hold for `config`, with its TensorFlow shape."""
    width = config.num_char_filters
    shapes = {"char_embed": (config.char_vocab_size - 1, config.char_embedding_size)}
    for i, (kernel, count) in enumerate(config.char_filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, kernel, config.char_embedding_size, count)
        shapes[f"CNN/b_cnn_{i}"] = (count,)
    for k in range(config.num_highway_layers):
        for part in ("carry", "transform"):
            shapes[f"CNN_high_{k}/W_{part}"] = (width, width)
            shapes[f"CNN_high_{k}/b_{part}"] = (width,)
    shapes["CNN_proj/W_proj"] = (width, config.hidden_size)
    shapes["CNN_proj/b_proj"] = (config.hidden_size,)
    gates = 4 * config.intermediate_size
    for direction in (0, 1):
        for layer in range(config.num_hidden_layers):
            prefix = _lstm_prefix(direction, layer)
            shapes[f"{prefix}/W_0"] = (2 * config.hidden_size, gates)
            shapes[f"{prefix}/B"] = (gates,)
            shapes[f"{prefix}/W_P_0"] = (config.intermediate_size, config.hidden_size)
    return shapes


def read_weight_file(weight_file, config, options_file="the options"):
    """The datasets of `expected_datasets(config)` as float32 tensors, checked against their shapes."""
    import h5py  # only needed here; keeps `import hf_course_models` light

    weight_file = Path(weight_file)
    if not weight_file.is_file():
        raise OSError(f"ELMo weight file {weight_file} does not exist.")
    try:
        handle = h5py.File(weight_file, "r")
    except OSError as error:
        raise OSError(f"{weight_file} is not an HDF5 file ({error}): pass bilm-tf / AllenNLP's weights.hdf5.") from None
    tensors = {}
    with handle:
        for name, shape in expected_datasets(config).items():
            if name not in handle or not isinstance(handle[name], h5py.Dataset):
                raise ValueError(f"{weight_file} lacks dataset {name!r} that {options_file} implies "
                                 f"(shape {shape}): are the options and the weights from the same model?")
            if tuple(handle[name].shape) != shape:
                raise ValueError(f"{weight_file}: dataset {name!r} has shape {tuple(handle[name].shape)}, but "
                                 f"{options_file} implies {shape}: are the options and the weights from the same "
                                 "model?")
            tensors[name] = torch.from_numpy(handle[name][...]).float()
        extra = []
        handle.visititems(lambda name, item: extra.append(name)
                          if isinstance(item, h5py.Dataset) and name not in tensors else None)
    if extra:
        logger.warning("%s: ignored datasets that ELMo's biLM does not use: %s", weight_file, ", ".join(extra))
    return tensors


def _lstm_tensors(tensors, config, layer):
    """Our stacked [forward, backward] LSTM parameters of one layer, from TF's W_0, B and W_P_0."""
    cell, inputs = config.intermediate_size, config.hidden_size
    parts = {"weight_ih": [], "weight_hh": [], "bias": [], "weight_hr": []}
    for direction in (0, 1):
        prefix = _lstm_prefix(direction, layer)
        kernel = tensors[f"{prefix}/W_0"].view(-1, 4, cell)[:, TF_TO_TORCH_GATES].reshape(-1, 4 * cell).T
        bias = tensors[f"{prefix}/B"].view(4, cell)[TF_TO_TORCH_GATES].clone()
        bias[1] += TF_FORGET_BIAS  # torch order: forget gate second
        parts["weight_ih"].append(kernel[:, :inputs])
        parts["weight_hh"].append(kernel[:, inputs:])
        parts["bias"].append(bias.reshape(-1))
        parts["weight_hr"].append(tensors[f"{prefix}/W_P_0"].T)
    return {f"lstm.layers.{layer}.{name}": torch.stack(values).contiguous() for name, values in parts.items()}


def state_dict_from_tf(tensors, config):
    """bilm-tf's variables (as `read_weight_file` returns them) -> the base model's biLM state dict."""
    embedding = tensors["char_embed"]
    state_dict = {"token_embedder.char_embedding.weight": torch.cat([embedding.new_zeros(1, embedding.shape[1]),
                                                                     embedding])}
    for i in range(len(config.char_filters)):
        state_dict[f"token_embedder.convolutions.{i}.weight"] = tensors[f"CNN/W_cnn_{i}"][0].permute(2, 1, 0)
        state_dict[f"token_embedder.convolutions.{i}.bias"] = tensors[f"CNN/b_cnn_{i}"]
    for k in range(config.num_highway_layers):
        for part in ("carry", "transform"):
            state_dict[f"token_embedder.highways.{k}.{part}.weight"] = tensors[f"CNN_high_{k}/W_{part}"].T
            state_dict[f"token_embedder.highways.{k}.{part}.bias"] = tensors[f"CNN_high_{k}/b_{part}"]
    state_dict["token_embedder.projection.weight"] = tensors["CNN_proj/W_proj"].T
    state_dict["token_embedder.projection.bias"] = tensors["CNN_proj/b_proj"]
    for layer in range(config.num_hidden_layers):
        state_dict.update(_lstm_tensors(tensors, config, layer))
    return {name: tensor.contiguous() for name, tensor in state_dict.items()}


def read_options(options_file):
    options_file = Path(options_file)
    if not options_file.is_file():
        raise OSError(f"ELMo options file {options_file} does not exist.")
    try:
        return json.loads(options_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{options_file} is not valid JSON ({error}): pass bilm-tf / AllenNLP's options.json.") \
            from None


def load_allennlp_elmo(options_file, weight_file, *, model_class=None):
    """A model (default HfcmElmoModel; any of our ELMo classes) holding the biLM of `weight_file`, in eval mode.

    Everything outside the biLM (scalar mixes, softmax, task heads) keeps its initial values.
    """
    config = config_from_options(read_options(options_file))
    model_class = model_class or HfcmElmoModel
    state_dict = state_dict_from_tf(read_weight_file(weight_file, config, options_file), config)
    model = model_class(config)
    missing, unexpected = model.base_model.load_state_dict(state_dict, strict=False)
    missing = [name for name in missing if not name.startswith("scalar_mixes.")]
    if missing or unexpected:  # a model class whose `base_model` is not our biLM
        raise ValueError(f"{model_class.__name__} does not hold ELMo's biLM at `base_model`: missing "
                         f"{missing}, unexpected {unexpected}.")
    return model.eval()


def convert_allennlp_elmo(options_file, weight_file, out_dir):
    """Save the biLM of `options_file` + `weight_file` as our base model in `out_dir` (loads with AutoModel)."""
    load_allennlp_elmo(options_file, weight_file).save_pretrained(out_dir)
    return str(out_dir)

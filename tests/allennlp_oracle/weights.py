"""Random ELMo weights in bilm-tf's hdf5 layout, for any options dict, and the options.json beside them.

The layout is the one AllenNLP's `_ElmoBiLm` and our converter read (see ../shared/elmo_reference/README.md,
"Weight file format"): TensorFlow's variables as numpy arrays, `x @ W + b` orientation, LSTM gates packed
(i, j, f, o) in `W_0` applied to [x; h]. Weights are normal with standard deviation 1 / sqrt(fan_in), so the
char CNN and highway layers keep their activations near unit scale; `LstmInit` rescales the LSTM's parts, which
is how a caller makes the cell and projection clips bind (`CLIPS_BIND`).
"""
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

CHARACTERS_IN_FILE = 261  # bilm-tf's ids 0..260; AllenNLP and our loader prepend a zero row for padding


@dataclass(frozen=True)
class LstmInit:
    """Gains on W_0's input rows, its recurrent rows and W_P_0; the biases' standard deviation; a constant added
    to the forget gate's bias (TF adds another 1.0 when it runs)."""
    input_gain: float = 1.0
    recurrent_gain: float = 1.0
    projection_gain: float = 1.0
    bias_std: float = 0.1
    forget_bias: float = 0.0


# With cell_clip 1 and proj_clip 2 both clips bind on ordinary sentences, and removing either changes the
# outputs by more than 0.2 (seeds 0-3 of the oracle test's tiny config): forget gates near 1 let the cells
# accumulate past the cell clip, and a tripled projection pushes outputs past the projection clip. The recurrent
# rows are halved to keep the recurrence contractive: otherwise float rounding differences between two correct
# implementations grow along the sentence (all LSTM weights x4 made them reach 1e-2 after 28 steps).
CLIPS_BIND = LstmInit(recurrent_gain=0.5, projection_gain=3.0, bias_std=1.0, forget_bias=2.0)


def lstm_prefix(direction, layer):
    """Group of one LSTM cell: direction 0 is the forward LM, 1 the backward LM."""
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def dataset_shapes(options):
    """Every dataset of the weight file for `options` (bilm-tf's options.json as a dict) with its shape."""
    cnn, lstm = options["char_cnn"], options["lstm"]
    char_dim = cnn["embedding"]["dim"]
    total_filters = sum(count for _, count in cnn["filters"])
    projection, cell = lstm["projection_dim"], lstm["dim"]
    shapes = {"char_embed": (CHARACTERS_IN_FILE, char_dim)}
    for i, (width, count) in enumerate(cnn["filters"]):
        shapes[f"CNN/W_cnn_{i}"] = (1, width, char_dim, count)
        shapes[f"CNN/b_cnn_{i}"] = (count,)
    for k in range(cnn["n_highway"]):
        for gate in ("carry", "transform"):
            shapes[f"CNN_high_{k}/W_{gate}"] = (total_filters, total_filters)
            shapes[f"CNN_high_{k}/b_{gate}"] = (total_filters,)
    shapes["CNN_proj/W_proj"] = (total_filters, projection)
    shapes["CNN_proj/b_proj"] = (projection,)
    for direction in (0, 1):
        for layer in range(lstm["n_layers"]):
            # Every layer's input is the projection dimension (the token layer is projected to it too).
            shapes[f"{lstm_prefix(direction, layer)}/W_0"] = (2 * projection, 4 * cell)
            shapes[f"{lstm_prefix(direction, layer)}/B"] = (4 * cell,)
            shapes[f"{lstm_prefix(direction, layer)}/W_P_0"] = (cell, projection)
    return shapes


def _fan_in(name, shape):
    if name.startswith("CNN/W_cnn"):
        return shape[1] * shape[2]  # width x char embedding dim
    if "/W_" in name:
        return shape[0]  # x @ W: rows are inputs
    return None  # embeddings and biases


def random_weights(options, seed=0, lstm=LstmInit()):
    """{dataset name: float32 array} for `options`, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    projection = options["lstm"]["projection_dim"]
    weights = {}
    for name, shape in dataset_shapes(options).items():
        fan_in = _fan_in(name, shape)
        if name.endswith("/B"):
            array = rng.normal(0.0, lstm.bias_std, size=shape)
            array[2 * shape[0] // 4 : 3 * shape[0] // 4] += lstm.forget_bias  # gates i, j, f, o
        elif fan_in is None:
            array = rng.normal(0.0, 1.0 if name == "char_embed" else 0.1, size=shape)
        else:
            array = rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=shape)
        if name.endswith("/W_0"):
            array[:projection] *= lstm.input_gain
            array[projection:] *= lstm.recurrent_gain
        elif name.endswith("/W_P_0"):
            array *= lstm.projection_gain
        weights[name] = array.astype(np.float32)
    return weights


def write_elmo_files(directory, options, seed=0, lstm=LstmInit(), name="elmo"):
    """Write `<name>_options.json` and `<name>_weights.hdf5` under `directory`; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    options_file = directory / f"{name}_options.json"
    weight_file = directory / f"{name}_weights.hdf5"
    options_file.write_text(json.dumps(options, indent=2), encoding="utf-8")
    with h5py.File(weight_file, "w") as out:
        for dataset, array in random_weights(options, seed, lstm).items():
            out.create_dataset(dataset, data=array)
    return options_file, weight_file


def write_options(path, options):
    """Write an options.json (e.g. the same weights' options with the clips removed); return the path."""
    Path(path).write_text(json.dumps(options, indent=2), encoding="utf-8")
    return Path(path)

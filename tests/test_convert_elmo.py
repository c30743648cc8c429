"""AllenNLP / bilm-tf ELMo weights -> ours, checked against bilm-tf's own outputs.

Ground truth: AllenNLP's test fixtures (tests/elmo_fixtures.py finds them): a small trained biLM whose clips
bind, and the top layer bilm-tf computed for 3 lists of 10 sentences, run statefully (batch i = sentence i of
each list, each batch starting from the state the previous one left). We run the same way through the explicit
`lstm_state` and compare every real position. AllenNLP's `_ElmoBiLm` gets max |Δ| 1.19e-6 on these; the deltas we
measure are printed at the end of the module (`pytest -rA`).
"""
import json
import shutil

import h5py
import pytest
import torch
from elmo_fixtures import batch_char_ids, elmo_fixture_dir
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

import hf_course_models  # noqa: F401  (registers the Auto classes)
from hf_course_models.convert import convert_checkpoint
from hf_course_models.convert.elmo import config_from_options, convert_allennlp_elmo, load_allennlp_elmo
from hf_course_models.modeling.elmo.modeling_hfcm_elmo import HfcmElmoForBidirectionalLM, HfcmElmoModel

TOLERANCE = 1e-5
MEASURED = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    for name, delta in MEASURED.items():
        print(f"\n{name}: max |Δ| {delta:.3e}")


@pytest.fixture(scope="module")
def fixtures():
    return elmo_fixture_dir()


@pytest.fixture(scope="module")
def options(fixtures):
    return json.loads((fixtures / "options.json").read_text())


@pytest.fixture(scope="module")
def sentence_batches(fixtures):
    lists = json.loads((fixtures / "sentences.json").read_text())
    return [[lists[k][i].split() for k in range(3)] for i in range(len(lists[0]))]


def expected_top_layer(fixtures, k, i):
    """bilm-tf's top layer for sentence i of list k: (2, T, P) [forward, backward] -> (T, 2P)."""
    with h5py.File(fixtures / f"lm_embeddings_{k}.hdf5", "r") as handle:
        value = torch.from_numpy(handle[str(i)][...])
    return value.permute(1, 0, 2).reshape(value.shape[1], -1)


def load(fixtures, **kwargs):
    return load_allennlp_elmo(fixtures / "options.json", fixtures / "lm_weights.hdf5", **kwargs)


def run_statefully(model, sentence_batches):
    """Each batch from the state the previous batch left (as bilm-tf produced the fixtures); top layers."""
    state, outputs = model.initial_lstm_state(3), []
    with torch.no_grad():
        for sentences in sentence_batches:
            output = model(char_ids=batch_char_ids(sentences), lstm_state=state)
            state = output.lstm_state
            outputs.append(output)
    return outputs


def top_layer_delta(fixtures, sentence_batches, outputs):
    worst = 0.0
    for i, (sentences, output) in enumerate(zip(sentence_batches, outputs)):
        assert output.mask.sum(1).tolist() == [len(words) + 2 for words in sentences]
        for k, words in enumerate(sentences):
            ours = output.layer_activations[2][k, 1: len(words) + 1]  # without <S> and </S>
            worst = max(worst, (ours - expected_top_layer(fixtures, k, i)).abs().max().item())
    return worst


def test_matches_bilm_tf_run_statefully(fixtures, sentence_batches):
    model = load(fixtures)
    outputs = run_statefully(model, sentence_batches)
    delta = MEASURED["bilm-tf fixtures, top layer, stateful, exact path"] = top_layer_delta(
        fixtures, sentence_batches, outputs)
    assert delta <= TOLERANCE, f"max |Δ| {delta:.3e} against bilm-tf's lm_embeddings"
    assert model.lstm_implementation_used == "exact"
    # The first batch starts from zeros, which is what every stateless call does.
    with torch.no_grad():
        stateless = model(char_ids=batch_char_ids(sentence_batches[0]))
    for ours, stateful in zip(stateless.layer_activations, outputs[0].layer_activations):
        torch.testing.assert_close(ours, stateful, rtol=0, atol=0)
    # Later batches depend on the carried state: stateless they differ from bilm-tf's.
    with torch.no_grad():
        fresh = model(char_ids=batch_char_ids(sentence_batches[1]))
    assert (fresh.layer_activations[2] - outputs[1].layer_activations[2]).abs().max() > 1e-3


def test_fused_path_detects_the_binding_clips_and_falls_back(fixtures, sentence_batches):
    """These trained weights drive the cell and projection clips: fused + verification must notice."""
    exact, fused = load(fixtures), load(fixtures)
    fused.config.lstm_implementation = "fused"
    with torch.no_grad():
        for sentences in sentence_batches[:3]:
            char_ids = batch_char_ids(sentences)
            expected, actual = exact(char_ids=char_ids), fused(char_ids=char_ids)
            assert "exact (a clip binds on the fused trajectory)" in fused.lstm_implementation_used
            for ours, reference in zip(actual.layer_activations, expected.layer_activations):
                torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_config_from_options(options):
    config = config_from_options(options, num_output_representations=2)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (16, 64, 2)
    assert (config.cell_clip, config.proj_clip, config.use_skip_connections) == (3, 3, True)
    assert config.char_filters == [[1, 4], [2, 8], [3, 16], [4, 32], [5, 64]]
    assert (config.char_embedding_size, config.num_highway_layers, config.char_vocab_size) == (4, 2, 262)
    assert config.num_output_representations == 2
    no_clips = {**options, "lstm": {**options["lstm"], "cell_clip": None}}
    del no_clips["lstm"]["proj_clip"]
    assert (config_from_options(no_clips).cell_clip, config_from_options(no_clips).proj_clip) == (None, None)
    with pytest.raises(ValueError, match="lstm.projection_dim"):
        config_from_options({**options, "lstm": {"dim": 64, "n_layers": 2}})
    with pytest.raises(ValueError, match="word embeddings"):
        config_from_options({"lstm": options["lstm"]})


def copy_weights(fixtures, tmp_path, edit):
    path = tmp_path / "weights.hdf5"
    shutil.copy(fixtures / "lm_weights.hdf5", path)
    with h5py.File(path, "r+") as handle:
        edit(handle)
    return path


def test_shape_mismatch_names_the_dataset_and_both_shapes(fixtures, tmp_path, options):
    def wrong_projection(handle):
        del handle["CNN_proj/W_proj"]
        handle["CNN_proj/W_proj"] = torch.zeros(124, 17).numpy()

    weights = copy_weights(fixtures, tmp_path, wrong_projection)
    with pytest.raises(ValueError, match=r"'CNN_proj/W_proj' has shape \(124, 17\).*implies \(124, 16\)"):
        load_allennlp_elmo(fixtures / "options.json", weights)
    # Options from another model: the first dataset whose shape they contradict is named.
    bigger = tmp_path / "options.json"
    bigger.write_text(json.dumps({**options, "lstm": {**options["lstm"], "dim": 128}}))
    with pytest.raises(ValueError, match=r"'RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0' has shape \(32, 256\).*"
                                         r"implies \(32, 512\)"):
        load_allennlp_elmo(bigger, fixtures / "lm_weights.hdf5")


def test_missing_dataset_and_files_that_are_not_weights(fixtures, tmp_path):
    weights = copy_weights(fixtures, tmp_path, lambda handle: handle.__delitem__("CNN_high_1/W_carry"))
    with pytest.raises(ValueError, match="lacks dataset 'CNN_high_1/W_carry'"):
        load_allennlp_elmo(fixtures / "options.json", weights)
    text = tmp_path / "weights.txt"
    text.write_text("not hdf5")
    with pytest.raises(OSError, match="not an HDF5 file"):
        load_allennlp_elmo(fixtures / "options.json", text)
    with pytest.raises(OSError, match="does not exist"):
        load_allennlp_elmo(fixtures / "options.json", tmp_path / "missing.hdf5")
    with pytest.raises(OSError, match="does not exist"):
        load_allennlp_elmo(tmp_path / "missing.json", fixtures / "lm_weights.hdf5")


def test_converted_checkpoint_loads_with_the_auto_classes(fixtures, sentence_batches, tmp_path):
    loaded = load(fixtures)
    out = convert_allennlp_elmo(fixtures / "options.json", fixtures / "lm_weights.hdf5", tmp_path / "elmo")
    char_ids = batch_char_ids(sentence_batches[0])
    with torch.no_grad():
        expected = loaded(char_ids=char_ids)
        auto = AutoModel.from_pretrained(out).eval()
        assert isinstance(auto, HfcmElmoModel)
        actual = auto(char_ids=char_ids)
    for ours, reference in zip(actual.layer_activations, expected.layer_activations):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    # The file has no softmax: the biLM head loads the biLM and reports only the softmax as missing.
    lm, info = AutoModelForPreTraining.from_pretrained(out, output_loading_info=True)
    assert isinstance(lm, HfcmElmoForBidirectionalLM)
    assert sorted(info["missing_keys"]) == ["softmax.bias", "softmax.weight"]
    classifier = AutoModelForSequenceClassification.from_pretrained(out, num_labels=3).eval()
    with torch.no_grad():
        features = classifier.elmo(char_ids=char_ids).layer_activations
    torch.testing.assert_close(features[2], expected.layer_activations[2], rtol=0, atol=0)


def test_loader_fills_the_biLM_of_a_head_model(fixtures, sentence_batches):
    base, lm = load(fixtures), load(fixtures, model_class=HfcmElmoForBidirectionalLM)
    assert isinstance(lm, HfcmElmoForBidirectionalLM) and not lm.training
    char_ids = batch_char_ids(sentence_batches[2])
    with torch.no_grad():
        torch.testing.assert_close(lm.elmo(char_ids=char_ids).layer_activations[2],
                                   base(char_ids=char_ids).layer_activations[2], rtol=0, atol=0)


def test_convert_checkpoint_takes_the_file_pair(fixtures, tmp_path):
    out = convert_checkpoint((fixtures / "options.json", fixtures / "lm_weights.hdf5"), tmp_path / "pair")
    assert isinstance(AutoModel.from_pretrained(out), HfcmElmoModel)
    with pytest.raises(ValueError, match="options.json followed by its weights.hdf5"):
        convert_checkpoint((fixtures / "lm_weights.hdf5", fixtures / "options.json"), tmp_path / "swapped")
    with pytest.raises(ValueError, match="only to ours"):
        convert_checkpoint((fixtures / "options.json", fixtures / "lm_weights.hdf5"), tmp_path / "x",
                           to="transformers")


"""Our ELMo against an independent oracle: AllenNLP's own `_ElmoBiLm` (allennlp==2.10.1).

AllenNLP runs in a subprocess of its private environment (tests/allennlp_oracle/: pinned `--no-deps` install
into a cached directory, import shims); if that environment cannot be installed the tests here are skipped with
pip's reason. Weights are random, in bilm-tf's hdf5 format, for a tiny config whose LSTM weights are scaled so
that both the cell clip and the projection clip bind (proved below in AllenNLP itself). Sentences differ in
length and include a word over 50 UTF-8 bytes, Chinese, and a 20-character Chinese word cut inside a character.
AllenNLP gets the character ids without sentence boundaries and adds its own; ours gets the same rows with
BOS/EOS, as our tokenizer makes them; every layer (boundaries included) and the mask are compared.
"""
import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import transformers
from allennlp_oracle import (CLIPS_BIND, OracleJob, OracleUnavailable, environment_dir, run_elmo_bilm,
                             write_elmo_files, write_options)
from elmo_fixtures import elmo_fixture_dir

from hf_course_models.convert.elmo import load_allennlp_elmo
from hf_course_models.modeling.elmo.modeling_hfcm_elmo import HfcmElmoModel
from hf_course_models.tokenization.elmo import BOS_CHAR_IDS, EOS_CHAR_IDS, elmo_char_ids

TOLERANCE = 1e-5
CELL_CLIP, PROJ_CLIP = 1.0, 2.0  # different values, so that swapping them cannot go unnoticed
TINY_OPTIONS = {
    "lstm": {"use_skip_connections": True, "projection_dim": 16, "dim": 48, "n_layers": 2,
             "cell_clip": CELL_CLIP, "proj_clip": PROJ_CLIP},
    "char_cnn": {"activation": "relu", "filters": [[1, 8], [2, 16], [3, 16], [4, 32]], "n_highway": 2,
                 "embedding": {"dim": 8}, "n_characters": 262, "max_characters_per_token": 50},
}
SENTENCES = [
    "The quick brown fox jumps over the lazy dog .".split(),
    "Floccinaucinihilipilification-and-antidisestablishmentarianism-combined is a long word .".split(),
    list("春眠不觉晓，处处闻啼鸟。") + ["中华人民共和国全国人民代表大会常务委员会"],
    ("Shall I compare thee to a summer's day ? Thou art more lovely and more temperate : "
     "rough winds do shake the darling buds of May").split(),
    ["Hello"],
]
BATCH_A = SENTENCES
BATCH_B = [SENTENCES[4], SENTENCES[2], SENTENCES[0]]  # reordered, other companions, shorter padding


def without_clips(options, *clips):
    options = copy.deepcopy(options)
    for clip in clips:
        options["lstm"][clip] = None
    return options


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """options.json variants (clipped; cell clip, projection clip or both removed) sharing one weight file."""
    directory = tmp_path_factory.mktemp("elmo_oracle")
    options_file, weight_file = write_elmo_files(directory, TINY_OPTIONS, seed=0, lstm=CLIPS_BIND)
    variants = {"clipped": options_file}
    for name, clips in {"no_cell_clip": ["cell_clip"], "no_proj_clip": ["proj_clip"],
                        "no_clip": ["cell_clip", "proj_clip"]}.items():
        variants[name] = write_options(directory / f"{name}.json", without_clips(TINY_OPTIONS, *clips))
    return variants, weight_file


@pytest.fixture(scope="module")
def oracle(weights):
    """Every AllenNLP run of this file, in one subprocess: {job name: [OracleBatch per batch]}, libraries."""
    variants, weight_file = weights
    jobs = {
        "clipped": OracleJob(variants["clipped"], weight_file, [BATCH_A, BATCH_B]),
        "clipped_carried": OracleJob(variants["clipped"], weight_file, [BATCH_A, BATCH_B], state="carried"),
        **{name: OracleJob(variants[name], weight_file, [BATCH_A]) for name in ("no_cell_clip", "no_proj_clip", "no_clip")},
    }
    reference = elmo_fixture_dir()  # bilm-tf's fixture: ../shared, else from the allennlp==0.9.0 wheel
    lists = json.loads((reference / "sentences.json").read_text(encoding="utf-8"))
    fixture_batches = [[lists[k][i].split() for k in range(len(lists))] for i in range(len(lists[0]))]
    for state in ("carried", "fresh"):
        jobs[f"fixture_{state}"] = OracleJob(reference / "options.json", reference / "lm_weights.hdf5",
                                             fixture_batches, state=state)
    try:
        outputs, libraries = run_elmo_bilm(list(jobs.values()))
    except OracleUnavailable as error:
        pytest.skip(f"AllenNLP oracle environment could not be installed: {error}")
    return dict(zip(jobs, outputs)), libraries


def max_delta(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def our_char_ids(sentences):
    """[B, T + 2, 50] from our tokenizer's character ids, BOS/EOS added, zero rows as padding."""
    longest = max(len(words) for words in sentences)
    rows = np.zeros((len(sentences), longest + 2, len(BOS_CHAR_IDS)), dtype=np.int64)
    for b, words in enumerate(sentences):
        rows[b, : len(words) + 2] = [BOS_CHAR_IDS, *map(elmo_char_ids, words), EOS_CHAR_IDS]
    return torch.from_numpy(rows)


def run_ours(model, sentences):
    with torch.no_grad():
        output = model(char_ids=our_char_ids(sentences))
    return [layer.numpy() for layer in output.layer_activations], output.mask.numpy()


def assert_same_as_allennlp(ours, reference, what):
    layers, mask = ours
    assert len(layers) == len(reference.activations) == 3
    np.testing.assert_array_equal(mask, reference.mask, err_msg=f"{what}: masks differ")
    deltas = [max_delta(got, expected) for got, expected in zip(layers, reference.activations)]
    assert max(deltas) <= TOLERANCE, f"{what}: max |Δ| per layer vs AllenNLP {deltas} > {TOLERANCE}"
    return deltas


@pytest.fixture(scope="module")
def ours(weights, tmp_path_factory):
    """`ours(variant, implementation)`: our model from that options variant and the weights, via
    `load_allennlp_elmo`; for another LSTM path than the config's default, saved and reloaded with it."""
    variants, weight_file = weights

    def load(variant, implementation="auto"):
        model = load_allennlp_elmo(variants[variant], weight_file)
        if implementation == model.config.lstm_implementation:
            return model
        directory = tmp_path_factory.mktemp(f"ours_{variant}_{implementation}")
        model.save_pretrained(directory)
        return HfcmElmoModel.from_pretrained(directory, lstm_implementation=implementation).eval()

    return load


def test_oracle_uses_the_global_torch_numpy_and_transformers(oracle):
    _, libraries = oracle
    for module in (torch, np, transformers):
        version, file = libraries[module.__name__]
        assert (version, Path(file)) == (module.__version__, Path(module.__file__)), \
            f"the oracle imported {module.__name__} {version} from {file}, not the global {module.__version__}"
    version, file = libraries["allennlp"]
    assert version == "2.10.1" and Path(file).is_relative_to(environment_dir()), (version, file)


def test_allennlp_reproduces_bilm_tf_fixture_only_statefully(oracle):
    """The documented bilm-tf dumps (shared/elmo_reference): AllenNLP matches them when its LSTM state is carried
    across the 10 batches as bilm-tf's was, and a fresh module per batch matches only the first batch."""
    runs, _ = oracle
    deltas = {"carried": [], "fresh": []}
    for state in deltas:
        for i, batch in enumerate(runs[f"fixture_{state}"]):
            for k in range(batch.mask.shape[0]):
                length = int(batch.mask[k].sum()) - 2
                with h5py.File(elmo_fixture_dir() / f"lm_embeddings_{k}.hdf5", "r") as dumped:
                    forward, backward = dumped[str(i)][...]
                expected = np.concatenate([forward, backward], axis=-1)
                deltas[state].append(max_delta(batch.activations[2][k, 1 : length + 1], expected))
    assert max(deltas["carried"]) <= TOLERANCE, f"stateful AllenNLP vs bilm-tf: max |Δ| {max(deltas['carried']):.2e}"
    assert max(deltas["fresh"][:3]) <= TOLERANCE, f"first batch, fresh state: max |Δ| {max(deltas['fresh'][:3]):.2e}"
    assert min(deltas["fresh"][3:]) > 0.01, \
        f"later batches with a fresh state should differ from bilm-tf's stateful dumps: min |Δ| {min(deltas['fresh'][3:])}"


def test_clipping_binds_in_allennlp(oracle):
    """With these weights and sentences both clips change AllenNLP's outputs, and layer 1 (no residual) has values
    sitting exactly on the projection clip."""
    runs, _ = oracle
    clipped = runs["clipped"][0]
    layer1 = clipped.activations[1][clipped.mask]
    on_the_clip = int((np.abs(layer1) == PROJ_CLIP).sum())
    assert on_the_clip >= 10, f"only {on_the_clip} of {layer1.size} layer-1 values sit on proj_clip={PROJ_CLIP}"
    for name in ("no_cell_clip", "no_proj_clip", "no_clip"):
        delta = max(max_delta(a, b) for a, b in zip(runs[name][0].activations, clipped.activations))
        assert delta > 0.2, f"removing {name[3:]} changes AllenNLP's outputs by only {delta:.3g}: the clip does not bind"


def test_our_character_ids_are_allennlps(oracle):
    runs, _ = oracle
    for sentences, reference in zip((BATCH_A, BATCH_B), runs["clipped"]):
        np.testing.assert_array_equal(our_char_ids(sentences).numpy(), reference.char_ids)


@pytest.mark.parametrize("implementation", ["auto", "exact", "fused"])
def test_parity_with_clipping_that_binds(oracle, ours, implementation):
    runs, _ = oracle
    model = ours("clipped", implementation)
    for name, sentences, reference in zip("AB", (BATCH_A, BATCH_B), runs["clipped"]):
        assert_same_as_allennlp(run_ours(model, sentences), reference, f"batch {name}, {implementation}")
    used = model.lstm_implementation_used
    if implementation == "fused":
        assert "exact" in used, f"a clip binds, yet the fused path kept its unclipped result: {used!r}"


@pytest.mark.parametrize("variant", ["no_cell_clip", "no_proj_clip", "no_clip"])
@pytest.mark.parametrize("implementation", ["exact", "fused"])
def test_parity_without_one_or_both_clips(oracle, ours, variant, implementation):
    runs, _ = oracle
    model = ours(variant, implementation)
    assert_same_as_allennlp(run_ours(model, BATCH_A), runs[variant][0], f"{variant}, {implementation}")
    if variant == "no_clip":
        assert model.lstm_implementation_used == implementation, model.lstm_implementation_used


def test_ours_is_stateless_where_allennlp_carries_state(oracle, ours):
    """Each sentence gets the same vectors in batch A, in the reordered batch B and on a repeated call; AllenNLP's
    module, fed A then B, gives B different vectors (its LSTM starts B from A's final state)."""
    runs, _ = oracle
    model = ours("clipped")
    layers_a, mask_a = run_ours(model, BATCH_A)
    layers_b, _ = run_ours(model, BATCH_B)
    again, _ = run_ours(model, BATCH_A)
    assert all(np.array_equal(x, y) for x, y in zip(layers_a, again)), "a repeated call changed the outputs"
    deltas = []
    for b, sentence in enumerate(BATCH_B):
        a = BATCH_A.index(sentence)
        length = len(sentence) + 2
        deltas += [max_delta(x[a, :length], y[b, :length]) for x, y in zip(layers_a, layers_b)]
    assert max(deltas) <= TOLERANCE, f"a sentence's vectors depend on its batch: max |Δ| {max(deltas):.2e}"
    carried_b, fresh_b = runs["clipped_carried"][1], runs["clipped"][1]
    carried_delta = max(max_delta(x, y) for x, y in zip(carried_b.activations, fresh_b.activations))
    assert carried_delta > 0.1, f"AllenNLP's carried state changed batch B by only {carried_delta:.3g}"

"""ELMo's model classes: the biLM's computation and its shortcuts, statelessness, scalar mixes, the biLM loss
(full and sampled softmax), the task heads, save/load through the Auto classes and bad input.

Parity with bilm-tf's own outputs is in test_convert_elmo.py; against AllenNLP's `_ElmoBiLm` in
test_elmo_allennlp_oracle.py. Models here are random (the tiny preset, bilm-tf's initialisation).
"""
import math

import pytest
import torch
from elmo_fixtures import CHAR_PADDING, batch_char_ids, word_char_ids
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    pipeline,
)

import hf_course_models  # noqa: F401  (registers the Auto classes)
from hf_course_models.modeling.elmo.char_encoder import trim_padding_characters
from hf_course_models.modeling.elmo.configuration_hfcm_elmo import PRESETS, HfcmElmoConfig
from hf_course_models.modeling.elmo.modeling_hfcm_elmo import (
    HfcmElmoForBidirectionalLM,
    HfcmElmoForSequenceClassification,
    HfcmElmoForTokenClassification,
    HfcmElmoModel,
    HfcmElmoScalarMix,
)
from hf_course_models.modeling.elmo.sampled_softmax import (
    expected_counts,
    log_uniform_probabilities,
    sample_log_uniform_candidates,
    sampled_softmax_loss,
)
from hf_course_models.tokenization.elmo import HfcmElmoTokenizer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog .".split(),
    ["Hello", "world"],
    # 49 and 50 characters with BOW/EOW; 60 bytes and 60 UTF-8 bytes of Chinese cut to 48; a 4-byte emoji
    ["a" * 47, "b" * 48, "c" * 60, "春眠不觉晓处处闻啼鸟夜来风雨声花落知多少", "😀"],
    list("床前明月光"),
]
VOCAB_SIZE = 40


def tiny(**overrides):
    return HfcmElmoConfig(preset="tiny", **{"vocab_size": VOCAB_SIZE, **overrides})


def random_model(model_class=HfcmElmoModel, seed=0, **overrides):
    torch.manual_seed(seed)
    return model_class(tiny(**overrides)).eval()


def run(model, sentences, **kwargs):
    with torch.no_grad():
        return model(char_ids=batch_char_ids(sentences), **kwargs)


def max_delta(first, second):
    return (first - second).abs().max().item()


# Configuration --------------------------------------------------------------------------------------------

def bilm_tf_parameter_count(char_embedding, filters, highways, cell, projection):
    """Counted from bilm-tf's variables (README of the reference data), not from our modules."""
    total_filters = sum(count for _, count in filters)
    char_cnn = 261 * char_embedding + sum(width * char_embedding * count + count for width, count in filters)
    highway = highways * 2 * (total_filters * total_filters + total_filters)
    token_projection = total_filters * projection + projection
    lstm_cell = (projection + projection) * 4 * cell + 4 * cell + cell * projection  # W_0, B, W_P_0
    return char_cnn + highway + token_projection + 2 * 2 * lstm_cell


@pytest.mark.parametrize("preset, cell, projection, highways, millions", [
    ("small", 1024, 128, 1, 13.6),
    ("original", 4096, 512, 2, 93.6),
])
def test_released_sizes_have_the_papers_parameter_counts(preset, cell, projection, highways, millions):
    with torch.device("meta"):
        model = HfcmElmoModel(HfcmElmoConfig(preset=preset), add_scalar_mixes=False)
    count = sum(parameter.numel() for parameter in model.parameters())
    # + 16: our embedding's zero row for padding tokens, which bilm-tf's file leaves out.
    expected = bilm_tf_parameter_count(16, PRESETS[preset]["char_filters"], highways, cell, projection) + 16
    assert count == expected and round(count / 1e6, 1) == millions, count


def test_config_presets_overrides_and_errors(tmp_path):
    config = AutoConfig.for_model("hfcm_elmo", preset="small", vocab_size=1000, cell_clip=None)
    assert (config.hidden_size, config.intermediate_size, config.num_highway_layers) == (128, 1024, 1)
    assert (config.vocab_size, config.cell_clip, config.proj_clip) == (1000, None, 3.0)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, HfcmElmoConfig) and reloaded.to_diff_dict() == config.to_diff_dict()
    with pytest.raises(ValueError, match="tiny, mini, small, original"):
        HfcmElmoConfig(preset="large")
    bad = [
        (dict(char_filters=[[0, 4]]), "char_filters entry"),
        (dict(char_filters=[[51, 4]]), "max_characters_per_token"),
        (dict(cell_clip=-1.0), "cell_clip"),
        (dict(lstm_implementation="cudnn"), "auto, exact, fused"),
        (dict(char_cnn_activation="gelu"), "relu, tanh"),
        (dict(softmax_negative_samples=VOCAB_SIZE), "softmax_negative_samples"),
        (dict(char_vocab_size=100), "at least 262"),
        (dict(eos_token_id=VOCAB_SIZE), "eos_token_id"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            tiny(**overrides)


# The biLM's computation ------------------------------------------------------------------------------------

def test_trimming_keeps_an_all_padding_window_for_every_width():
    widest = 5
    short = torch.tensor([word_char_ids("hey"), word_char_ids("a")])  # longest: 5 characters with BOW/EOW
    assert trim_padding_characters(short, widest).shape[1] == 10
    for length in (43, 44, 47, 48, 60):  # 45 + 5 >= 50: nothing to cut
        rows = torch.tensor([word_char_ids("x" * length), word_char_ids("a")])
        assert trim_padding_characters(rows, widest).shape[1] == min(50, length + 2 + widest)
        assert (rows[:, trim_padding_characters(rows, widest).shape[1]:] == CHAR_PADDING).all()


def test_character_encoder_shortcuts_equal_the_plain_computation():
    """Distinct tokens only, padding tokens skipped, character axis cut: the same vectors as encoding every row."""
    model = random_model()
    encoder = model.token_embedder
    char_ids = batch_char_ids(SENTENCES)
    mask = (char_ids != 0).any(-1)
    with torch.no_grad():
        fast = encoder(char_ids, mask)
        plain = encoder.encode(char_ids.flatten(0, 1)).view(*mask.shape, -1) * mask[..., None]
        rows = char_ids[mask]
        trimmed = encoder.encode(trim_padding_characters(rows, encoder.widest_filter))
        untrimmed = encoder.encode(rows)
    assert max_delta(fast, plain) <= 1e-6, max_delta(fast, plain)
    torch.testing.assert_close(trimmed, untrimmed, rtol=0, atol=0)  # same rows, same matmuls: bit-identical
    assert (fast[~mask] == 0).all()


def plain_convolution_features(encoder, char_rows):
    """bilm-tf's character CNN as it is written: embed, nn.Conv1d per width, max over positions, activation."""
    embedded = encoder.char_embedding(char_rows).transpose(1, 2)
    return encoder.activation(torch.cat([convolution(embedded).amax(-1) for convolution in encoder.convolutions], -1)).T


def convolution_and_gradients(dtype, compute):
    encoder = random_model().token_embedder.to(dtype)
    rows = batch_char_ids(SENTENCES).flatten(0, 1)
    features = compute(encoder, rows[(rows != 0).any(-1)])
    weights = torch.rand(features.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    (features * weights).sum().backward()
    return features.detach(), {name: parameter.grad for name, parameter in encoder.named_parameters()
                               if parameter.grad is not None}


def test_lookup_table_convolution_equals_conv1d_in_values_and_gradients():
    """The same function as nn.Conv1d, gradients included: float64 shows it free of float32 rounding (in float32
    a near-tie between two windows can put the max, and with it the gradient, at another position)."""
    table = lambda encoder, rows: encoder.convolve(rows)  # noqa: E731
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        table_features, table_gradients = convolution_and_gradients(dtype, table)
        plain_features, plain_gradients = convolution_and_gradients(dtype, plain_convolution_features)
        assert max_delta(table_features, plain_features) <= tolerance, (dtype, max_delta(table_features, plain_features))
        if dtype == torch.float64:
            assert table_gradients.keys() == plain_gradients.keys()
            assert {"char_embedding.weight", "convolutions.0.weight", "convolutions.0.bias"} <= table_gradients.keys()
            for name, gradient in plain_gradients.items():
                assert max_delta(table_gradients[name], gradient) <= tolerance * float(gradient.abs().max()), name
            assert (table_gradients["char_embedding.weight"][0] == 0).all()  # the padding id 0 is never looked up


@pytest.mark.parametrize("clip", [None, 1e4])
def test_exact_and_fused_paths_agree_where_clipping_cannot_bind(clip):
    exact = random_model(cell_clip=clip, proj_clip=clip, lstm_implementation="exact")
    fused = random_model(cell_clip=clip, proj_clip=clip, lstm_implementation="fused")
    expected, actual = run(exact, SENTENCES), run(fused, SENTENCES)
    assert exact.lstm_implementation_used == "exact"
    assert fused.lstm_implementation_used == ("fused" if clip is None else "fused (verified: no clip binds)")
    for ours, reference in zip(actual.layer_activations, expected.layer_activations):
        assert max_delta(ours, reference) <= 1e-6, max_delta(ours, reference)


def test_fused_path_falls_back_to_exact_when_a_clip_binds():
    exact = random_model(cell_clip=0.05, proj_clip=0.02, lstm_implementation="exact")
    fused = random_model(cell_clip=0.05, proj_clip=0.02, lstm_implementation="fused")
    expected, actual = run(exact, SENTENCES), run(fused, SENTENCES)
    assert "exact (a clip binds on the fused trajectory)" in fused.lstm_implementation_used
    # Layer 1 falls back (its clips bind) and runs the exact loop itself; layer 2's clipped inputs are small enough
    # for the fused kernel to be verified, which rounds differently from the loop.
    torch.testing.assert_close(actual.layer_activations[1], expected.layer_activations[1], rtol=0, atol=0)
    delta = max_delta(actual.layer_activations[2], expected.layer_activations[2])
    assert delta <= 1e-6, delta
    assert expected.layer_activations[2].abs().max() <= 0.02 * 2  # residual: two clipped layers


def test_stateless_a_sentence_gets_the_same_vectors_in_any_batch():
    model = random_model(scalar_mix_layer_norm=True)
    alone = run(model, [SENTENCES[1]])
    for batch in ([SENTENCES[0], SENTENCES[1]], [SENTENCES[2], SENTENCES[3], SENTENCES[1]]):
        together = run(model, batch)
        row = batch.index(SENTENCES[1])
        length = len(SENTENCES[1]) + 2
        for single, batched in zip((*alone.layer_activations, alone.last_hidden_state),
                                   (*together.layer_activations, together.last_hidden_state)):
            delta = max_delta(single[0], batched[row, :length])
            assert delta <= 1e-6, delta
    again = run(model, [SENTENCES[1]])  # and no state is carried from call to call
    torch.testing.assert_close(again.last_hidden_state, alone.last_hidden_state, rtol=0, atol=0)


def test_layers_masks_and_the_duplicated_token_layer():
    model = random_model()
    output = run(model, SENTENCES)
    lengths = [len(words) + 2 for words in SENTENCES]
    assert output.mask.sum(1).tolist() == lengths
    explicit = run(model, SENTENCES, attention_mask=output.mask.long())
    torch.testing.assert_close(explicit.last_hidden_state, output.last_hidden_state, rtol=0, atol=0)
    assert len(output.layer_activations) == 3 and output.lstm_state is None
    for layer in (*output.layer_activations, output.last_hidden_state):
        assert layer.shape == (4, max(lengths), 32) and (layer[~output.mask] == 0).all()
    token_layer = output.layer_activations[0]
    tokens = model.token_embedder(batch_char_ids(SENTENCES), output.mask)
    torch.testing.assert_close(token_layer[..., :16], tokens, rtol=0, atol=0)
    torch.testing.assert_close(token_layer[..., 16:], tokens, rtol=0, atol=0)
    torch.testing.assert_close(output[0], output.mixed_representations[0], rtol=0, atol=0)
    with torch.no_grad():
        as_tuple = model(char_ids=batch_char_ids(SENTENCES), return_dict=False, output_hidden_states=True)
    torch.testing.assert_close(as_tuple[0], output.last_hidden_state, rtol=0, atol=0)


def test_forward_half_reads_the_past_backward_half_the_future():
    model = random_model()
    words = SENTENCES[0]
    changed = list(words)
    changed[4] = "cat"  # position 5 with <S>
    first, second = run(model, [words]), run(model, [changed])
    for layer in (1, 2):
        forward_delta = (first.layer_activations[layer][0, :, :16] - second.layer_activations[layer][0, :, :16])
        backward_delta = (first.layer_activations[layer][0, :, 16:] - second.layer_activations[layer][0, :, 16:])
        assert forward_delta[:5].abs().max() == 0 and forward_delta[5:].abs().amax(-1).min() > 0
        assert backward_delta[6:].abs().max() == 0 and backward_delta[:6].abs().amax(-1).min() > 0


def test_scalar_mix_by_hand_with_and_without_layer_norm():
    torch.manual_seed(1)
    layers = [torch.randn(2, 5, 6) * (i + 1) + i for i in range(3)]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    layers = [layer * mask[..., None] for layer in layers]
    weights, gamma = torch.tensor([0.3, -1.0, 2.0]), 1.7
    plain, normed = HfcmElmoScalarMix(3), HfcmElmoScalarMix(3, layer_norm=True, eps=1e-12)
    for mix in (plain, normed):
        with torch.no_grad():
            mix.weights.copy_(weights)
            mix.gamma.fill_(gamma)
    shares = [math.exp(w) / sum(math.exp(v) for v in weights.tolist()) for w in weights.tolist()]
    expected = gamma * sum(share * layer for share, layer in zip(shares, layers))
    torch.testing.assert_close(plain(layers, mask), expected, rtol=0, atol=1e-6)

    def allennlp_layer_norm(tensor, row_mask):
        """AllenNLP ScalarMix._do_layer_norm on one sentence (a batch of one)."""
        broadcast = row_mask[..., None].float()
        count = broadcast.sum() * tensor.shape[-1]
        mean = (tensor * broadcast).sum() / count
        variance = (((tensor * broadcast - mean) * broadcast) ** 2).sum() / count
        return (tensor - mean) / torch.sqrt(variance + 1e-12)

    for row in range(2):
        normalised = [allennlp_layer_norm(layer[row], mask[row]) for layer in layers]
        by_hand = gamma * sum(share * layer for share, layer in zip(shares, normalised)) * mask[row, :, None]
        torch.testing.assert_close(normed(layers, mask)[row], by_hand, rtol=0, atol=1e-5)


def test_explicit_state_in_and_out():
    model = random_model()
    stateless = run(model, SENTENCES[:2])
    zero_state = model.initial_lstm_state(2)
    stateful = run(model, SENTENCES[:2], lstm_state=zero_state)
    torch.testing.assert_close(stateful.last_hidden_state, stateless.last_hidden_state, rtol=0, atol=0)
    hidden, cell = stateful.lstm_state
    assert hidden.shape == (2, 2, 2, 16) and cell.shape == (2, 2, 2, 64)
    # The forward LSTM's final output is the top-level forward state's last real position (layer 1: no residual).
    last = len(SENTENCES[1]) + 1
    torch.testing.assert_close(hidden[0, 0, 1], stateful.layer_activations[1][1, last, :16], rtol=0, atol=0)
    torch.testing.assert_close(hidden[0, 1, 1], stateful.layer_activations[1][1, 0, 16:], rtol=0, atol=0)
    # A row with no tokens passes its state through unchanged.
    char_ids = batch_char_ids(SENTENCES[:2])
    char_ids[1] = 0
    with torch.no_grad():
        output = model(char_ids=char_ids, lstm_state=stateful.lstm_state)
    for new, old in zip(output.lstm_state, stateful.lstm_state):
        torch.testing.assert_close(new[:, :, 1], old[:, :, 1], rtol=0, atol=0)
        assert (new[:, :, 0] != old[:, :, 0]).any()
    with pytest.raises(ValueError, match="lstm_state must be"):
        run(model, SENTENCES[:2], lstm_state=model.initial_lstm_state(3))


# Bad input -------------------------------------------------------------------------------------------------

def test_empty_sentences_and_all_padding_batches():
    model = random_model(scalar_mix_layer_norm=True, num_output_representations=2)
    mixed = run(model, [[], SENTENCES[1], []])
    assert mixed.mask.sum(1).tolist() == [2, 4, 2] and torch.isfinite(mixed.last_hidden_state).all()
    torch.testing.assert_close(mixed.last_hidden_state[0, :2], run(model, [[]]).last_hidden_state[0],
                               rtol=0, atol=1e-6)
    padding = torch.zeros(3, 4, 50, dtype=torch.long)
    with torch.no_grad():
        output = model(char_ids=padding)
    for tensor in (*output.layer_activations, *output.mixed_representations):
        assert tensor.shape == (3, 4, 32) and (tensor == 0).all()
    assert not output.mask.any()


def test_bad_input_is_refused_with_the_reason():
    model = random_model()
    char_ids = batch_char_ids(SENTENCES[:2])
    for bad_value in (262, -1):
        wrong = char_ids.clone()
        wrong[0, 1, 3] = bad_value
        with pytest.raises(ValueError, match=rf"char_ids contains {bad_value}, outside \[0, 262\)"):
            model(char_ids=wrong)
    with pytest.raises(ValueError, match=r"shape \[batch, seq, 50\]"):
        model(char_ids=char_ids[..., :40])
    with pytest.raises(ValueError, match="pass char_ids"):
        model(input_ids=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids has shape"):
        model(input_ids=torch.ones(2, 3, dtype=torch.long), char_ids=char_ids)
    left_padded = (char_ids != 0).any(-1).flip(1)
    with pytest.raises(ValueError, match="right-padded"):
        model(char_ids=char_ids, attention_mask=left_padded)


# The biLM head and its losses ------------------------------------------------------------------------------

def word_ids(sentences, seed=0):
    """Random word ids in the layout of batch_char_ids (<S>=1, </S>=2, padding -100 as labels)."""
    generator = torch.Generator().manual_seed(seed)
    length = max(map(len, sentences)) + 2
    labels = torch.full((len(sentences), length), -100)
    for row, words in enumerate(sentences):
        labels[row, : len(words) + 2] = torch.tensor([1, *torch.randint(3, VOCAB_SIZE, (len(words),),
                                                                        generator=generator).tolist(), 2])
    return labels


def test_bidirectional_lm_loss_is_the_mean_of_both_directions_nll():
    model = random_model(HfcmElmoForBidirectionalLM)
    labels = word_ids(SENTENCES)
    output = run(model, SENTENCES, labels=labels)
    top = model.elmo(char_ids=batch_char_ids(SENTENCES)).layer_activations[2].detach()
    log_probs = {"forward": torch.log_softmax(model.softmax(top[..., :16]), -1),
                 "backward": torch.log_softmax(model.softmax(top[..., 16:]), -1)}
    losses = {"forward": [], "backward": []}
    for row, words in enumerate(SENTENCES):
        for t in range(len(words) + 2):
            if t + 1 < len(words) + 2:
                losses["forward"].append(-log_probs["forward"][row, t, labels[row, t + 1]])
            if t > 0:
                losses["backward"].append(-log_probs["backward"][row, t, labels[row, t - 1]])
    forward, backward = (torch.stack(losses[name]).mean() for name in ("forward", "backward"))
    torch.testing.assert_close(output.forward_loss, forward, rtol=0, atol=1e-5)
    torch.testing.assert_close(output.backward_loss, backward, rtol=0, atol=1e-5)
    torch.testing.assert_close(output.loss, 0.5 * (forward + backward), rtol=0, atol=1e-5)
    torch.testing.assert_close(output.forward_perplexity, forward.exp(), rtol=1e-5, atol=0)
    assert output.forward_logits.shape == (4, labels.shape[1], VOCAB_SIZE)


def test_sampled_softmax_draws_and_corrections_as_tensorflow():
    vocab_size, num_sampled = 30, 12
    probabilities = log_uniform_probabilities(torch.arange(vocab_size), vocab_size)
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0, dtype=torch.float64))
    candidates, tries = sample_log_uniform_candidates(vocab_size, num_sampled, torch.Generator().manual_seed(3))
    # By hand: the same uniforms, k = floor(exp(u·log(V+1))) − 1, duplicates rejected, until 12 distinct.
    uniforms = torch.rand(2 * num_sampled + 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    by_hand, draws = [], 0
    for u in uniforms.tolist():
        draws += 1
        k = int(math.exp(u * math.log(vocab_size + 1))) - 1
        if k not in by_hand:
            by_hand.append(k)
        if len(by_hand) == num_sampled:
            break
    assert candidates.tolist() == by_hand and tries == draws and tries > num_sampled
    ids = torch.tensor([0, 5, 29])
    p = probabilities[ids]
    torch.testing.assert_close(expected_counts(ids, num_sampled, tries, vocab_size), 1 - (1 - p) ** tries)
    torch.testing.assert_close(expected_counts(ids, num_sampled, num_sampled, vocab_size), p * num_sampled)

    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(3, 4), torch.randn(vocab_size, 4), torch.randn(vocab_size)
    targets = torch.tensor([candidates[0].item(), 7 if 7 not in by_hand else 1, candidates[5].item()])
    loss = sampled_softmax_loss(hidden, targets, weight, bias, num_sampled, torch.Generator().manual_seed(3))
    for row in range(3):
        target = targets[row].item()
        logit = lambda k: (hidden[row] @ weight[k] + bias[k]).item() - math.log(  # noqa: E731
            expected_counts(torch.tensor([k]), num_sampled, tries, vocab_size).item())
        negatives = [logit(k) for k in by_hand if k != target]  # accidental hits removed
        scores = torch.tensor([logit(target), *negatives], dtype=torch.float64)
        assert abs(loss[row].item() + torch.log_softmax(scores, 0)[0].item()) <= 1e-5


def test_bidirectional_lm_uses_the_sampled_softmax_in_training_only():
    model = random_model(HfcmElmoForBidirectionalLM, softmax_negative_samples=10, hidden_dropout_prob=0.0)
    labels, char_ids = word_ids(SENTENCES), batch_char_ids(SENTENCES)
    model.train()
    output = model(char_ids=char_ids, labels=labels, generator=torch.Generator().manual_seed(5))
    assert output.forward_logits is None and output.backward_logits is None
    top = model.elmo(char_ids=char_ids).layer_activations[2]
    generator = torch.Generator().manual_seed(5)  # forward direction's sample first, then backward's
    expected = []
    for half, shift in ((top[..., :16], 1), (top[..., 16:], -1)):
        targets = torch.full_like(labels, -100)  # the next (previous) word where both positions are words
        if shift == 1:
            targets[:, :-1] = torch.where(labels[:, :-1] != -100, labels[:, 1:], -100)
        else:
            targets[:, 1:] = torch.where(labels[:, 1:] != -100, labels[:, :-1], -100)
        selected = targets != -100
        expected.append(sampled_softmax_loss(half[selected], targets[selected], model.softmax.weight,
                                             model.softmax.bias, 10, generator).mean())
    torch.testing.assert_close(output.forward_loss, expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(output.backward_loss, expected[1], rtol=0, atol=1e-6)
    output.loss.backward()
    assert model.softmax.weight.grad.abs().sum() > 0 and model.elmo.lstm.layers[0].weight_hh.grad.abs().sum() > 0
    model.eval()
    evaluated = run(model, SENTENCES, labels=labels)
    full = torch.nn.functional.cross_entropy(
        evaluated.forward_logits[:, :-1].reshape(-1, VOCAB_SIZE), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(evaluated.forward_loss, full, rtol=0, atol=1e-6)


# Task heads, freezing, save/load ---------------------------------------------------------------------------

@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_sequence_classification_pools_the_mix_over_real_tokens(pooling):
    model = random_model(HfcmElmoForSequenceClassification, num_labels=3, classifier_pooling=pooling)
    output = run(model, SENTENCES, labels=torch.tensor([0, 1, 2, 1]), output_hidden_states=True)
    features = run(model.elmo, SENTENCES).last_hidden_state
    for row, words in enumerate(SENTENCES):
        real = features[row, : len(words) + 2]
        pooled = real.mean(0) if pooling == "mean" else real.amax(0)
        torch.testing.assert_close(output.logits[row], model.classifier(pooled), rtol=0, atol=1e-6)
    assert output.loss is not None and len(output.hidden_states) == 3


def test_token_classification_ignores_unlabelled_positions():
    model = random_model(HfcmElmoForTokenClassification, num_labels=4)
    labels = word_ids(SENTENCES) % 4
    labels[:, 0] = -100
    labels[word_ids(SENTENCES) == -100] = -100
    output = run(model, SENTENCES, labels=labels)
    selected = labels != -100
    expected = torch.nn.functional.cross_entropy(output.logits[selected], labels[selected])
    torch.testing.assert_close(output.loss, expected, rtol=0, atol=1e-6)


def trainable_gradients(model, sentences):
    model.train()
    model.zero_grad()
    model(char_ids=batch_char_ids(sentences), labels=torch.tensor([1] * len(sentences))).loss.backward()
    return {name for name, parameter in model.named_parameters()
            if parameter.grad is not None and parameter.grad.abs().sum() > 0}


def test_frozen_bilm_gets_no_gradients_and_no_dropout(tmp_path):
    model = random_model(HfcmElmoForSequenceClassification, num_labels=2, hidden_dropout_prob=0.5)
    assert trainable_gradients(model, SENTENCES) == {"elmo.scalar_mixes.0.weights", "elmo.scalar_mixes.0.gamma",
                                                     "classifier.weight", "classifier.bias"}
    assert not model.elmo.lstm.training and model.elmo.scalar_mixes.training
    features = [model.elmo(char_ids=batch_char_ids(SENTENCES)).layer_activations[2] for _ in range(2)]
    torch.testing.assert_close(features[0], features[1], rtol=0, atol=0)  # no dropout inside the frozen biLM
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert trainable_gradients(reloaded, SENTENCES) == {"elmo.scalar_mixes.0.weights", "elmo.scalar_mixes.0.gamma",
                                                        "classifier.weight", "classifier.bias"}
    fine_tuned = AutoModelForSequenceClassification.from_pretrained(tmp_path, freeze_bilm=False)
    gradients = trainable_gradients(fine_tuned, SENTENCES)
    assert {"elmo.lstm.layers.1.weight_hh", "elmo.token_embedder.char_embedding.weight"} <= gradients
    assert fine_tuned.elmo.lstm.training


@pytest.mark.parametrize("auto_class, model_class", [
    (AutoModel, HfcmElmoModel),
    (AutoModelForPreTraining, HfcmElmoForBidirectionalLM),
    (AutoModelForSequenceClassification, HfcmElmoForSequenceClassification),
    (AutoModelForTokenClassification, HfcmElmoForTokenClassification),
])
def test_save_and_load_through_the_auto_classes(tmp_path, auto_class, model_class):
    model = random_model(model_class, num_output_representations=2)
    with torch.no_grad():  # move the mixes off their initial values so that a dropped one shows
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path)
    reloaded, info = auto_class.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded) is model_class and not any(info.values()), info
    expected, actual = run(model, SENTENCES), run(reloaded.eval(), SENTENCES)
    torch.testing.assert_close(actual[0], expected[0], rtol=0, atol=0)


def test_feature_extraction_pipeline_returns_the_mix():
    words = ["<pad>", "<S>", "</S>", "<UNK>", "Hello", "world", "春"]
    tokenizer = HfcmElmoTokenizer({word: index for index, word in enumerate(words)})
    model = random_model(vocab_size=len(words))
    extractor = pipeline("feature-extraction", model=model, tokenizer=tokenizer)
    texts = ["Hello world", "春眠不觉晓 Hello"]
    one_by_one = [torch.tensor(extractor(text))[0] for text in texts]
    batched = [torch.tensor(features)[0] for features in extractor(texts, batch_size=2)]
    expected = run(model, [["Hello", "world"]]).last_hidden_state[0]
    torch.testing.assert_close(one_by_one[0], expected, rtol=0, atol=1e-6)
    for single, together in zip(one_by_one, batched):
        torch.testing.assert_close(together[: len(single)], single, rtol=0, atol=1e-6)

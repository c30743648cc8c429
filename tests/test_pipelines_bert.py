"""transformers pipelines on our BERT, loaded from a saved directory after `import hf_course_models`.

question-answering (removed from transformers 5, brought back by this package) has its own test file."""
import pytest
import torch
from transformers import pipeline

import hf_course_models
from hf_course_models.corpora import corpus_files
from hf_course_models.tokenization.wordpiece import train_wordpiece_tokenizer

LABELS = {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(corpus_files(), vocab_size=4000, model_max_length=64)


@pytest.fixture(scope="module")
def save(tokenizer, tmp_path_factory):
    """save(model class, **config overrides) -> a directory holding a tiny random model + tokenizer."""

    def _save(model_class, **overrides):
        torch.manual_seed(0)
        config = hf_course_models.HfcmBertConfig(preset="tiny", vocab_size=len(tokenizer),
                                                 max_position_embeddings=64, **overrides)
        directory = tmp_path_factory.mktemp(model_class.__name__)
        model_class(config).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return str(directory)

    return _save


def test_fill_mask_scores_are_the_models_probabilities(save, tokenizer):
    fill_mask = pipeline("fill-mask", model=save(hf_course_models.HfcmBertForMaskedLM))
    assert type(fill_mask.model).__name__ == "HfcmBertForMaskedLM"
    text = "shall i compare thee to a summer's [MASK]?"
    guesses = fill_mask(text, top_k=7)
    assert len(guesses) == 7

    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = fill_mask.model(**inputs).logits[0]
    position = inputs.input_ids[0].tolist().index(tokenizer.mask_token_id)
    probabilities = logits[position].softmax(-1)
    top = probabilities.topk(7)
    assert [g["token"] for g in guesses] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([g["score"] for g in guesses]), top.values, atol=1e-6, rtol=0)
    for guess in guesses:
        filled = inputs.input_ids[0].clone()
        filled[position] = guess["token"]
        assert guess["sequence"] == tokenizer.decode(filled, skip_special_tokens=True)


def test_fill_mask_targets_and_batches(save):
    fill_mask = pipeline("fill-mask", model=save(hf_course_models.HfcmBertForMaskedLM))
    targets = ["love", "day", "月"]
    restricted = fill_mask("my [MASK] is fair", targets=targets)
    assert sorted(g["token_str"] for g in restricted) == sorted(targets)

    texts = ["my [MASK] is fair", "床前明月[MASK]", "the [MASK] of the world"]
    batched = fill_mask(texts, top_k=3, batch_size=3)
    for text, result in zip(texts, batched):
        alone = fill_mask(text, top_k=3)
        assert [g["token"] for g in result] == [g["token"] for g in alone]
        torch.testing.assert_close(torch.tensor([g["score"] for g in result]),
                                   torch.tensor([g["score"] for g in alone]), atol=1e-5, rtol=0)


def test_feature_extraction_returns_the_last_hidden_state(save, tokenizer):
    directory = save(hf_course_models.HfcmBertModel)
    extractor = pipeline("feature-extraction", model=directory)
    text = "from fairest creatures we desire increase 春眠不觉晓"
    features = torch.tensor(extractor(text))
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        expected = extractor.model(**inputs).last_hidden_state
    assert features.shape == expected.shape
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_text_classification_uses_label_names_and_pairs(save, tokenizer):
    directory = save(hf_course_models.HfcmBertForSequenceClassification, num_labels=3, id2label=LABELS,
                     label2id={v: k for k, v in LABELS.items()})
    classify = pipeline("text-classification", model=directory, top_k=None)
    [scores] = classify(["thy eternal summer shall not fade"])
    assert sorted(s["label"] for s in scores) == sorted(LABELS.values())
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)

    inputs = tokenizer("thy eternal summer shall not fade", return_tensors="pt")
    with torch.no_grad():
        probabilities = classify.model(**inputs).logits[0].softmax(-1)
    for s in scores:
        assert s["score"] == pytest.approx(probabilities[classify.model.config.label2id[s["label"]]].item(), abs=1e-6)

    pair = classify({"text": "shall i compare thee", "text_pair": "to a summer's day"})
    assert sorted(s["label"] for s in pair) == sorted(LABELS.values())
    pair_inputs = tokenizer("shall i compare thee", "to a summer's day", return_tensors="pt")
    assert pair_inputs.token_type_ids.max() == 1
    with torch.no_grad():
        pair_probabilities = classify.model(**pair_inputs).logits[0].softmax(-1)
    for s in pair:
        assert s["score"] == pytest.approx(pair_probabilities[classify.model.config.label2id[s["label"]]].item(), abs=1e-6)


def test_token_classification_labels_every_word(save):
    tags = {0: "O", 1: "B-PER", 2: "I-PER"}
    directory = save(hf_course_models.HfcmBertForTokenClassification, num_labels=3, id2label=tags,
                     label2id={v: k for k, v in tags.items()})
    tagger = pipeline("token-classification", model=directory, aggregation_strategy="none", ignore_labels=[])
    entities = tagger("juliet loves romeo 李白")
    words = [e["word"] for e in entities]
    assert "李" in words and "白" in words
    assert all(e["entity"] in tags.values() for e in entities)
    assert all(0 <= e["start"] < e["end"] for e in entities)

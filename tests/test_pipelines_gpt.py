"""transformers pipelines on our GPT, loaded from a saved directory after `import hf_course_models`.

The model is a tiny random one and the tokenizer a byte-level BPE trained on the embedded corpus. Every
model parameter is perturbed by N(0, 0.3²) so that next-token distributions are far from uniform: greedy
decoding then has no near-ties that rounding differences between batched and single prompts could flip.
"""
import pytest
import torch
import transformers
from transformers import AutoTokenizer, pipeline, set_seed

import hf_course_models
from hf_course_models.convert.gpt import config_to_transformers, state_dict_to_transformers
from hf_course_models.corpora import corpus_files
from hf_course_models.tokenization.bpe import train_bpe_tokenizer

PROMPT = "Shall I compare thee to a summer's day?"
# Different token counts, Chinese and emoji included, so a batch of them is padded.
PROMPTS = [PROMPT, "春眠不觉晓，处处闻啼鸟。", "Thou art more lovely 😀", "床"]
LABELS = {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}
NEW_TOKENS = 12
GREEDY = dict(do_sample=False, max_new_tokens=NEW_TOKENS)
# transformers' advice when a pipeline is asked to batch with a tokenizer that has no pad token.
PIPELINE_PAD_ADVICE = "pipe.tokenizer.pad_token_id = model.config.eos_token_id"


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(corpus_files(), vocab_size=1000)


@pytest.fixture(scope="module")
def save(tokenizer, tmp_path_factory):
    """save(model class, pad=..., **config overrides) -> a directory holding a tiny random model and the
    tokenizer, as trained (no pad token, as GPT-2's) or with pad=True padding with its end-of-text token."""

    def _save(model_class, pad=False, **overrides):
        torch.manual_seed(0)
        eos = tokenizer.eos_token_id
        config = hf_course_models.HfcmGptConfig(preset="tiny", vocab_size=len(tokenizer), max_position_embeddings=128,
                                                bos_token_id=eos, eos_token_id=eos, **overrides)
        model = model_class(config)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
        directory = tmp_path_factory.mktemp(model_class.__name__)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        if pad:
            padding = AutoTokenizer.from_pretrained(directory)
            padding.pad_token = padding.eos_token
            padding.save_pretrained(directory)
        return str(directory)

    return _save


@pytest.fixture(scope="module")
def unpadded(save):
    return save(hf_course_models.HfcmGptForCausalLM)


@pytest.fixture(scope="module")
def padded(save):
    return save(hf_course_models.HfcmGptForCausalLM, pad=True)


@pytest.fixture(scope="module")
def classifier(save):
    return save(hf_course_models.HfcmGptForSequenceClassification, pad=True, num_labels=3, id2label=LABELS,
                label2id={label: i for i, label in LABELS.items()})


def transformers_gpt2(model):
    """transformers' GPT2LMHeadModel holding our model's weights."""
    reference = transformers.GPT2LMHeadModel(config_to_transformers(model.config))
    reference.load_state_dict(state_dict_to_transformers(model.state_dict(), model.config))
    return reference.eval()


def test_generation_continues_the_prompt_exactly_as_generate_and_transformers_gpt2(unpadded, tokenizer):
    generator = pipeline("text-generation", model=unpadded)
    assert type(generator.model) is hf_course_models.HfcmGptForCausalLM
    inputs = tokenizer(PROMPT, return_tensors="pt")
    expected = generator.model.generate(**inputs, **GREEDY)[0]
    new_tokens = expected[inputs.input_ids.shape[1]:]
    assert len(new_tokens) == NEW_TOKENS and tokenizer.eos_token_id not in new_tokens

    [full] = generator(PROMPT, **GREEDY)
    assert full["generated_text"] == PROMPT + tokenizer.decode(new_tokens)
    [continuation] = generator(PROMPT, return_full_text=False, **GREEDY)
    assert continuation["generated_text"] == tokenizer.decode(new_tokens)
    [ids] = generator(PROMPT, return_tensors=True, **GREEDY)
    assert ids["generated_token_ids"] == expected.tolist()
    assert generator(PROMPT, **GREEDY) == [full], "greedy decoding must repeat itself"

    reference = pipeline("text-generation", model=transformers_gpt2(generator.model), tokenizer=unpadded)
    assert reference(PROMPT, **GREEDY) == [full]


@pytest.mark.parametrize("max_new_tokens", [1, 5, 30])
def test_max_new_tokens_is_the_number_of_tokens_added(unpadded, tokenizer, max_new_tokens):
    generator = pipeline("text-generation", model=unpadded)
    [ids] = generator(PROMPT, return_tensors=True, do_sample=False, max_new_tokens=max_new_tokens)
    prompt_ids = tokenizer(PROMPT).input_ids
    generated = ids["generated_token_ids"]
    assert generated[:len(prompt_ids)] == prompt_ids
    assert len(generated) - len(prompt_ids) == max_new_tokens, "no end-of-text token was generated"


def test_batched_prompts_of_different_lengths_generate_what_each_generates_alone(padded, tokenizer):
    generator = pipeline("text-generation", model=padded)
    assert generator.tokenizer.padding_side == "left"
    lengths = [len(tokenizer(prompt).input_ids) for prompt in PROMPTS]
    assert len(set(lengths)) == len(PROMPTS), f"the prompts must need padding in a batch: {lengths} tokens"
    seen_masks = []
    generator.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen_masks.append(kwargs.get("attention_mask")), with_kwargs=True)

    batched = generator(PROMPTS, batch_size=len(PROMPTS), **GREEDY)
    first_mask = seen_masks[0]
    assert first_mask.shape == (len(PROMPTS), max(lengths)), "the prompts went to generate as one batch"
    assert first_mask.sum(-1).tolist() == lengths and first_mask[:, -1].all(), "left padding"

    for prompt, result in zip(PROMPTS, batched):
        assert result == generator(prompt, **GREEDY)
    # Token ids come back as generate returns them: each row behind its left padding.
    batched_ids = generator(PROMPTS, batch_size=len(PROMPTS), return_tensors=True, **GREEDY)
    for prompt, length, [result] in zip(PROMPTS, lengths, batched_ids):
        [alone] = generator(prompt, return_tensors=True, **GREEDY)
        padding = [generator.tokenizer.pad_token_id] * (max(lengths) - length)
        assert result["generated_token_ids"] == padding + alone["generated_token_ids"]


def test_num_return_sequences(padded, tokenizer):
    generator = pipeline("text-generation", model=padded)
    sampling = dict(do_sample=True, temperature=1.5, top_k=0, max_new_tokens=8, num_return_sequences=3)
    set_seed(0)
    samples = generator(PROMPT, **sampling)
    assert len(samples) == 3 and all(s["generated_text"].startswith(PROMPT) for s in samples)
    assert len({s["generated_text"] for s in samples}) > 1, "three samples at temperature 1.5 all equal"
    set_seed(0)
    assert generator(PROMPT, **sampling) == samples, "the same seed samples the same sequences"
    inputs = tokenizer(PROMPT, return_tensors="pt")
    set_seed(0)
    expected = generator.model.generate(**inputs, **sampling)
    assert [s["generated_text"] for s in samples] == [PROMPT + tokenizer.decode(row[inputs.input_ids.shape[1]:])
                                                      for row in expected]

    beams = generator(PROMPT, num_beams=4, num_return_sequences=3, **GREEDY)
    assert len({b["generated_text"] for b in beams}) == 3
    [best] = generator(PROMPT, num_beams=4, **GREEDY)
    assert beams[0] == best

    per_prompt = generator(PROMPTS[:2], batch_size=2, **sampling)
    assert [len(results) for results in per_prompt] == [3, 3]
    assert all(r["generated_text"].startswith(prompt) for prompt, results in zip(PROMPTS, per_prompt)
               for r in results)


def class_probabilities(model, tokenizer, text):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits[0].softmax(-1)


def test_text_classification_scores_the_last_token_with_label_names(classifier, tokenizer):
    classify = pipeline("text-classification", model=classifier)
    assert type(classify.model) is hf_course_models.HfcmGptForSequenceClassification
    probabilities = class_probabilities(classify.model, tokenizer, PROMPT)

    [best] = classify(PROMPT)
    assert best["label"] == LABELS[int(probabilities.argmax())]
    assert best["score"] == pytest.approx(probabilities.max().item(), abs=1e-6)

    # transformers 5.24: top_k=None in the call returns one flat list for a single text; given to pipeline()
    # instead, it returns a list holding that list.
    every = classify(PROMPT, top_k=None)
    assert sorted(s["label"] for s in every) == sorted(LABELS.values())
    for s in every:
        assert s["score"] == pytest.approx(probabilities[classify.model.config.label2id[s["label"]]].item(), abs=1e-6)
    assert pipeline("text-classification", model=classifier, top_k=None)(PROMPT) == [every]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_text_classification_batches_equal_single_texts(classifier, padding_side):
    classify = pipeline("text-classification", model=classifier, top_k=None)
    classify.tokenizer.padding_side = padding_side
    batched = classify(PROMPTS, batch_size=len(PROMPTS))
    for text, scores in zip(PROMPTS, batched):
        [alone] = classify(text)
        assert [s["label"] for s in scores] == [s["label"] for s in alone]
        torch.testing.assert_close(torch.tensor([s["score"] for s in scores]),
                                   torch.tensor([s["score"] for s in alone]), atol=1e-5, rtol=0)


# Following transformers' advice after the pipeline was built leaves generate without a pad_token_id; generate
# then pads finished rows with the EOS token, as GPT2LMHeadModel does.
@pytest.mark.parametrize("task", ["text-generation", "text-classification"])
def test_batching_without_a_pad_token_says_how_to_set_one(save, unpadded, task):
    directory = unpadded if task == "text-generation" else save(
        hf_course_models.HfcmGptForSequenceClassification, num_labels=3, id2label=LABELS)
    pipe = pipeline(task, model=directory)
    assert pipe.tokenizer.pad_token is None
    kwargs = GREEDY if task == "text-generation" else {}
    one_by_one = pipe(PROMPTS, **kwargs)  # batch_size 1 needs no padding
    with pytest.raises(ValueError, match="without pad_token cannot do batching") as error:
        pipe(PROMPTS, batch_size=2, **kwargs)
    assert PIPELINE_PAD_ADVICE in str(error.value)

    pipe.tokenizer.pad_token_id = pipe.model.config.eos_token_id  # the advice, followed
    batched = pipe(PROMPTS, batch_size=2, **kwargs)
    if task == "text-generation":
        assert batched == one_by_one
    else:
        assert [r["label"] for r in batched] == [r["label"] for r in one_by_one]
        assert [r["score"] for r in batched] == pytest.approx([r["score"] for r in one_by_one], abs=1e-5)

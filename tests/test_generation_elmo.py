"""ELMo's forward LM generating text through transformers' `generate` (HfcmElmoForCausalLM).

Each generated word is fed back through the vocabulary's id -> character-ids table; the cache carries the forward
LSTM's state, so cached generation must give exactly what recomputing the whole text gives. The model is a random
tiny biLM saved with a tokenizer trained on the embedded corpus.
"""
import pytest
import torch
from transformers import AutoModelForCausalLM, pipeline

import hf_course_models  # noqa: F401  (registers the Auto classes)
from hf_course_models.corpora import corpus_files
from hf_course_models.modeling.elmo.configuration_hfcm_elmo import HfcmElmoConfig
from hf_course_models.modeling.elmo.modeling_hfcm_elmo import HfcmElmoForBidirectionalLM, HfcmElmoForCausalLM
from hf_course_models.tokenization.elmo_vocab import train_elmo_tokenizer

NEW_TOKENS = 32
PROMPTS = ["When I do count the clock", "Shall I compare thee to a summer's day"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(directory with a random tiny biLM and its tokenizer, the biLM, the tokenizer)."""
    tokenizer = train_elmo_tokenizer(corpus_files(), vocab_size=400, min_frequency=1)
    torch.manual_seed(0)
    bilm = HfcmElmoForBidirectionalLM(HfcmElmoConfig(preset="tiny", vocab_size=len(tokenizer))).eval()
    directory = tmp_path_factory.mktemp("elmo-lm")
    bilm.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, bilm, tokenizer


@pytest.fixture(scope="module")
def model(saved):
    return AutoModelForCausalLM.from_pretrained(saved[0]).eval()


def prompt_ids(tokenizer, text):
    """The prompt as generation continues it: `<S>` and the words, without `</S>`."""
    return tokenizer(text, return_tensors="pt")["input_ids"][:, :-1]


def greedy(model, input_ids, new_tokens=NEW_TOKENS, **kwargs):
    # min_new_tokens keeps </S> from ending the text early, so every run generates `new_tokens` words.
    return model.generate(input_ids=input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                          **kwargs)


def test_auto_class_loads_the_bilm_checkpoint_with_its_vocabulary_table(saved, model):
    directory, bilm, tokenizer = saved
    assert isinstance(model, HfcmElmoForCausalLM)
    assert torch.equal(model.word_char_ids, torch.tensor(tokenizer.vocabulary_char_ids()))
    assert "word_char_ids" not in model.state_dict()  # a non-persistent buffer: rebuilt from the tokenizer
    for name, parameter in bilm.state_dict().items():
        assert torch.equal(model.state_dict()[name], parameter), name


def test_logits_equal_the_bilm_forward_lm_for_any_batch_and_padding_side(saved, model):
    _, bilm, tokenizer = saved
    for side in ("right", "left"):
        tokenizer.padding_side = side
        batch = tokenizer(PROMPTS + ["xyzzy plover"], padding=True, return_tensors="pt")  # unknown words too
        with torch.no_grad():
            ours = model(**batch).logits
        mask = batch["attention_mask"].bool()
        for row, text in enumerate(PROMPTS + ["xyzzy plover"]):
            alone = tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                reference = bilm(**alone).forward_logits[0]
            delta = (ours[row][mask[row]] - reference).abs().max().item()
            assert delta <= 1e-5, (side, row, delta)
    tokenizer.padding_side = "right"


def test_cached_greedy_equals_uncached_recomputation_token_for_token(saved, model):
    _, bilm, tokenizer = saved
    input_ids = prompt_ids(tokenizer, PROMPTS[1])
    cached = greedy(model, input_ids, return_dict_in_generate=True, output_logits=True)
    uncached = greedy(model, input_ids, use_cache=False)
    assert cached.sequences.shape[1] == input_ids.shape[1] + NEW_TOKENS
    assert torch.equal(cached.sequences, uncached), (cached.sequences, uncached)
    # Recomputed from scratch by the biLM on the whole generated text: every step's logits and choice agree.
    with torch.no_grad():
        full = bilm(char_ids=model.word_characters(cached.sequences)).forward_logits[0]
    start = input_ids.shape[1] - 1
    delta = (torch.cat(cached.logits) - full[start: start + NEW_TOKENS]).abs().max().item()
    assert delta <= 1e-5, delta
    full[:, tokenizer.eos_token_id] = -float("inf")  # as min_new_tokens does in the step logits
    assert torch.equal(full[start: start + NEW_TOKENS].argmax(-1), cached.sequences[0, start + 1:])


def test_sampling_with_a_seed_repeats(saved, model):
    input_ids = prompt_ids(saved[2], PROMPTS[0])

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(input_ids=input_ids, do_sample=True, top_k=50, temperature=0.9, max_new_tokens=16,
                              min_new_tokens=16)

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_a_left_padded_batch_generates_what_each_prompt_generates_alone(saved, model):
    tokenizer = saved[2]
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, padding=True, add_special_tokens=False, return_tensors="pt")
    tokenizer.padding_side = "right"
    together = greedy(model, batch["input_ids"], new_tokens=12, attention_mask=batch["attention_mask"])
    for row, text in enumerate(PROMPTS):
        alone = greedy(model, tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"], 12)
        assert torch.equal(together[row, -alone.shape[1]:], alone[0]), (row, together[row], alone[0])


def test_a_prompts_own_characters_are_read_for_unknown_words(saved, model):
    tokenizer = saved[2]
    encoded = tokenizer("the xyzzy", return_tensors="pt")
    assert tokenizer.unk_token_id in encoded["input_ids"][0].tolist()
    encoded = {name: value[:, :-1] for name, value in encoded.items()}  # without </S>
    with_characters = model.generate(**encoded, max_new_tokens=1, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True)
    with torch.no_grad():
        expected = model(char_ids=encoded["char_ids"]).logits[:, -1]
        through_unk = model(input_ids=encoded["input_ids"]).logits[:, -1]
    assert (with_characters.logits[0] - expected).abs().max() <= 1e-6
    assert (expected - through_unk).abs().max() > 1e-3  # "xyzzy" is not read as <unk>'s characters


def test_the_backward_lm_is_not_used(saved):
    """Poisoning every backward-LSTM weight changes nothing: generation runs the forward LSTM only."""
    directory, _, tokenizer = saved
    clean = AutoModelForCausalLM.from_pretrained(directory).eval()
    poisoned = AutoModelForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        for layer in poisoned.elmo.lstm.layers:
            for weight in (layer.weight_ih, layer.weight_hh, layer.bias, layer.weight_hr):
                weight[1] = float("nan")
    input_ids = prompt_ids(tokenizer, PROMPTS[1])
    assert torch.equal(greedy(clean, input_ids), greedy(poisoned, input_ids))


def test_text_generation_pipeline_from_the_saved_directory(saved, model):
    """The pipeline passes word ids only (no char_ids). The tokenizer adds <S> ... </S> by default: a prompt to be
    continued is encoded with add_special_tokens=False."""
    directory, _, tokenizer = saved
    generator = pipeline("text-generation", model=str(directory))
    settings = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, add_special_tokens=False)
    output = generator(PROMPTS[0], return_tensors=True, **settings)[0]["generated_token_ids"]
    expected = greedy(model, tokenizer(PROMPTS[0], add_special_tokens=False, return_tensors="pt")["input_ids"], 8)
    assert output == expected[0].tolist()
    text = generator(PROMPTS[0], **settings)[0]["generated_text"]
    assert text.startswith(PROMPTS[0]) and len(text) > len(PROMPTS[0]), text
    batched = generator(PROMPTS, batch_size=2, **settings)
    assert batched == [generator(prompt, **settings) for prompt in PROMPTS]


def test_bad_vocabulary_tables_and_missing_characters_are_refused(saved):
    directory, _, tokenizer = saved
    model = HfcmElmoForCausalLM(HfcmElmoConfig(preset="tiny", vocab_size=len(tokenizer))).eval()
    with pytest.raises(ValueError, match="set_vocabulary_char_ids"):
        model(input_ids=torch.tensor([[1, 5, 6]]))
    with pytest.raises(ValueError, match=r"\[10, 50\].*\[%d, 50\]" % len(tokenizer)):
        model.set_vocabulary_char_ids(torch.zeros(10, 50, dtype=torch.long))
    model.set_vocabulary_char_ids(tokenizer.vocabulary_char_ids())
    assert model(input_ids=torch.tensor([[1, 5, 6]])).logits.shape == (1, 3, len(tokenizer))

"""`hfcm demo`: the main job in miniature, on the embedded corpus (English sonnets and Tang poems).

For each family — BERT (masked LM + next sentence), GPT (causal LM), ELMo (bidirectional LM) — train a
tokenizer, pre-train a tiny model with the same loop as `hfcm pretrain`, reload it through the Auto
classes and show what it learned through a pipeline, in English and Chinese. Every model directory
gets its metrics (metrics.jsonl), loss curves (PNG) and model card.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, pipeline

from .corpora import corpus_files
from .tokenization.bpe import train_bpe_tokenizer
from .tokenization.elmo_vocab import train_elmo_tokenizer
from .tokenization.wordpiece import train_wordpiece_tokenizer
from .training.loop import TrainingArguments
from .training.pretrain import pretrain


@dataclass(frozen=True)
class DemoModel:
    family: str
    steps: int  # optimizer steps of the full demo
    batch_size: int
    seq_len: int
    learning_rate: float
    vocab_size: int


# Sized so the whole demo takes about 5 minutes on 2 CPU cores.
MODELS = (
    DemoModel("bert", steps=500, batch_size=32, seq_len=64, learning_rate=2e-3, vocab_size=4000),
    DemoModel("gpt", steps=400, batch_size=16, seq_len=64, learning_rate=2e-3, vocab_size=3000),
    DemoModel("elmo", steps=300, batch_size=16, seq_len=64, learning_rate=2e-3, vocab_size=3000),
)
FILL_MASK_PROMPTS = ("Shall I compare thee to a summer's [MASK]?", "床前明月光，疑是地上[MASK]。")
GENERATION_PROMPTS = ("When in the chronicle of", "春眠不觉晓，")
# (sentence, sentence, a word both contain): ELMo gives that word a different vector in each context
FEATURE_SENTENCES = (("The summer day is fair", "Thy eternal summer shall not fade", "summer"),
                     ("明月照高楼", "举头望明月", "月"))


def train_tokenizer(family: str, files: list[str], vocab_size: int, seq_len: int):
    if family == "bert":
        return train_wordpiece_tokenizer(files, vocab_size=vocab_size, model_max_length=seq_len)
    if family == "gpt":
        return train_bpe_tokenizer(files, vocab_size=vocab_size, model_max_length=seq_len)
    return train_elmo_tokenizer(files, vocab_size=vocab_size)


def show_fill_mask(model_dir: str) -> None:
    fill_mask = pipeline("fill-mask", model=AutoModelForMaskedLM.from_pretrained(model_dir),
                         tokenizer=AutoTokenizer.from_pretrained(model_dir))
    for prompt in FILL_MASK_PROMPTS:
        guesses = ", ".join(f"{guess['token_str']} ({guess['score']:.2f})" for guess in fill_mask(prompt, top_k=5))
        print(f"  {prompt}\n    -> {guesses}")


def show_generation(model_dir: str, seed: int) -> None:
    generator = pipeline("text-generation", model=AutoModelForCausalLM.from_pretrained(model_dir),
                         tokenizer=AutoTokenizer.from_pretrained(model_dir))
    for prompt in GENERATION_PROMPTS:
        torch.manual_seed(seed)
        text = generator(prompt, max_new_tokens=24, do_sample=True, top_k=20, temperature=0.8)[0]["generated_text"]
        print(f"  {prompt!r}\n    -> {text!r}")


def show_features(model_dir: str) -> None:
    """ELMo's vectors depend on context: the same word gets a different vector in each sentence (a context-free
    embedding would give cosine similarity 1)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    extractor = pipeline("feature-extraction", model=AutoModel.from_pretrained(model_dir), tokenizer=tokenizer)
    for first, second, word in FEATURE_SENTENCES:
        vectors = []
        for sentence in (first, second):
            features = torch.tensor(extractor(sentence))[0]  # [tokens incl. <S> and </S>, 2 x hidden]
            tokens = tokenizer.convert_ids_to_tokens(tokenizer(sentence)["input_ids"])
            vectors.append(features[tokens.index(word)])
        similarity = torch.nn.functional.cosine_similarity(vectors[0], vectors[1], dim=0)
        print(f"  {word!r} in {first!r} and in {second!r}: {vectors[0].numel()}-dim vectors, "
              f"cosine similarity {similarity:.3f}")


SHOW = {"bert": lambda directory, seed: show_fill_mask(directory),
        "gpt": show_generation,
        "elmo": lambda directory, seed: show_features(directory)}


def run_demo(out_dir: str, seed: int = 0, step_fraction: float = 1.0, families=("bert", "gpt", "elmo")) -> dict:
    """Train, reload and show each family; `step_fraction` < 1 shortens every run (the CI test uses it).
    Returns {family: training summary}."""
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must lie in (0, 1], got {step_fraction!r}.")
    unknown = set(families) - {model.family for model in MODELS}
    if unknown:
        raise ValueError(f"Unknown families {sorted(unknown)}; the demo trains bert, gpt and elmo.")
    files = corpus_files()
    summaries = {}
    started = time.perf_counter()
    for spec in (model for model in MODELS if model.family in families):
        family_dir = os.path.join(out_dir, spec.family)
        tokenizer_dir = os.path.join(family_dir, "tokenizer")
        print(f"\n=== {spec.family}: tokenizer and pre-training on {', '.join(map(os.path.basename, files))}")
        train_tokenizer(spec.family, files, spec.vocab_size, spec.seq_len).save_pretrained(tokenizer_dir)
        steps = max(1, round(spec.steps * step_fraction))
        args = TrainingArguments(out_dir=os.path.join(family_dir, "model"), max_steps=steps,
                                 batch_size=spec.batch_size, learning_rate=spec.learning_rate, seed=seed,
                                 save_steps=steps, save_total_limit=1, logging_steps=max(1, steps // 20))
        summaries[spec.family] = pretrain(spec.family, tokenizer_dir, files, "tiny", args, spec.seq_len)
        print(f"--- {spec.family}, reloaded with the Auto classes:")
        SHOW[spec.family](args.out_dir, seed)
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s; models, metrics and loss curves are in "
          f"{os.path.abspath(out_dir)}")
    return summaries

"""`hfcm pretrain {bert,gpt,elmo}`: a model of a preset size, sized to a tokenizer, pre-trained on text files."""
from __future__ import annotations

import os

import datasets
import transformers
from accelerate.utils import set_seed
from transformers import AutoTokenizer

from ..data.pretraining import build_pretraining_data
from ..modeling.bert.configuration_hfcm_bert import HfcmBertConfig
from ..modeling.bert.modeling_hfcm_bert import HfcmBertForPreTraining
from ..modeling.elmo.configuration_hfcm_elmo import HfcmElmoConfig
from ..modeling.elmo.modeling_hfcm_elmo import HfcmElmoForBidirectionalLM
from ..modeling.gpt.configuration_hfcm_gpt import HfcmGptConfig
from ..modeling.gpt.modeling_hfcm_gpt import HfcmGptForCausalLM
from .loop import TrainingArguments, check_out_dir, process_state, train

# family -> (config class, pre-training model: BERT's MLM + NSP, GPT's causal LM, ELMo's biLM)
FAMILIES = {
    "bert": (HfcmBertConfig, HfcmBertForPreTraining),
    "gpt": (HfcmGptConfig, HfcmGptForCausalLM),
    "elmo": (HfcmElmoConfig, HfcmElmoForBidirectionalLM),
}


def build_model(family: str, tokenizer, preset: str, seq_len: int, **model_overrides):
    """A freshly initialised pre-training model whose vocabulary and special ids are the tokenizer's and whose
    context is `seq_len` (ELMo's LSTMs have none); `model_overrides` set any other config value."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; choose one of {', '.join(FAMILIES)}.")
    config_class, model_class = FAMILIES[family]
    settings = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    if family in ("gpt", "elmo"):
        settings |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if family != "elmo":
        settings["max_position_embeddings"] = seq_len
    settings |= model_overrides
    context = settings.get("max_position_embeddings")
    if context is not None and seq_len > context:
        raise ValueError(f"seq_len={seq_len} is longer than the model's context, max_position_embeddings={context}; "
                         f"use seq_len <= {context} or a larger max_position_embeddings.")
    return model_class(config_class(preset=preset, **settings))


def pretrain(family: str, tokenizer_dir: str, files, preset: str, args: TrainingArguments, seq_len: int, *,
             validation_files=None, validation_fraction: float = 0.05, streaming: bool = False,
             whole_word_masking: bool = False, num_proc: int | None = None, **model_overrides) -> dict:
    """Pre-train a `family` model of size `preset` on `files` with the tokenizer saved in `tokenizer_dir`; the
    model, tokenizer, card, metrics and curves end up in `args.out_dir`. Returns the training summary."""
    state = process_state()
    check_out_dir(args)  # a bad --resume fails before the data is read
    if not state.is_main_process:  # one process reports
        datasets.disable_progress_bars()
        transformers.logging.set_verbosity_error()
    if not os.path.isdir(tokenizer_dir):
        raise OSError(f"Tokenizer directory {tokenizer_dir!r} does not exist; train one with "
                      f"`hfcm train-tokenizer` and pass its --out directory.")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    set_seed(args.seed)  # the same initial weights in every process and every run with this seed
    model = build_model(family, tokenizer, preset, seq_len, **model_overrides)
    with state.main_process_first():  # the main process tokenises and caches; the others read its cache
        data = build_pretraining_data(family, tokenizer, files, seq_len, seed=args.seed,
                                      validation_files=validation_files, validation_fraction=validation_fraction,
                                      streaming=streaming, num_proc=num_proc, whole_word_masking=whole_word_masking)
    card_info = {
        "datasets": [os.path.basename(str(path)) for path in ([files] if isinstance(files, (str, os.PathLike))
                                                              else files)],
        "settings": {"family": family, "preset": preset, "seq_len": seq_len, **model_overrides},
    }
    return train(model, data, args, tokenizer=tokenizer, card_info=card_info)

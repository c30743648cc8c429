"""Fine-tuning a saved model (pre-trained or converted) on labelled JSON lines / CSV: `hfcm finetune TASK ...`.

The task picks the head: sequence classification, token classification, extractive question answering or
multiple choice, each loaded with its Auto class (GPT's multiple choice goes through its double-heads model,
as in GPT-1 §3.3, which has no Auto class). The data, tokenisation and metrics live in
`hf_course_models.data.finetuning`; the optimisation is the shared loop of `hf_course_models.training.loop`.
"""
from transformers import (
    AutoConfig,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from ..data.finetuning import build_finetuning_data
from ..modeling.gpt.modeling_hfcm_gpt import HfcmGptDoubleHeadsModel
from .loop import TrainingArguments, train

TASK_HEADS = {
    "sequence-classification": AutoModelForSequenceClassification,
    "token-classification": AutoModelForTokenClassification,
    "question-answering": AutoModelForQuestionAnswering,
    "multiple-choice": AutoModelForMultipleChoice,
}
# heads outside the Auto classes: model_type -> {task: model class}
EXTRA_HEADS = {"hfcm_gpt": {"multiple-choice": HfcmGptDoubleHeadsModel}}


def _head_class(task, config):
    extra = EXTRA_HEADS.get(config.model_type, {})
    if task in extra:
        return extra[task]
    if type(config) in TASK_HEADS[task]._model_mapping:
        return TASK_HEADS[task]
    return None


def supported_tasks(config):
    """The fine-tuning tasks a model's architecture has a head for."""
    return [task for task in TASK_HEADS if _head_class(task, config) is not None]


def head_for_task(task, config, model_dir):
    """The class that loads the task's head onto this config's architecture; ValueError naming the tasks
    the architecture does support."""
    if task not in TASK_HEADS:
        raise ValueError(f"Unknown fine-tuning task {task!r}; choose one of {', '.join(TASK_HEADS)}.")
    head = _head_class(task, config)
    if head is None:
        raise ValueError(f"{model_dir!r} is a {config.model_type} model, which has no {task} head; it supports "
                         f"{', '.join(supported_tasks(config)) or 'no fine-tuning task'}. "
                         "Pick one of those, or a model of another architecture (BERT has all four).")
    return head


def finetune(task, model_dir, train_file, validation_file, args: TrainingArguments, max_length=128, *,
             doc_stride=32, num_proc=None) -> dict:
    """Fine-tune `model_dir` on the task's files; the model, tokenizer, card, metrics and curves go to
    args.out_dir. Returns the loop's summary (steps, seconds, final metrics, model dir)."""
    config = AutoConfig.from_pretrained(model_dir)
    head = head_for_task(task, config, model_dir)
    context = getattr(config, "max_position_embeddings", None)
    if context is not None and max_length > context:
        raise ValueError(f"max_length={max_length} exceeds the model's context of {context} positions "
                         f"(max_position_embeddings); pass max_length <= {context}.")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers have none; the attention mask hides what pads
        tokenizer.pad_token = tokenizer.eos_token
    double_heads = head is HfcmGptDoubleHeadsModel
    data, settings = build_finetuning_data(task, tokenizer, train_file, validation_file, max_length=max_length,
                                           doc_stride=doc_stride, num_proc=num_proc,
                                           labels_key="mc_labels" if double_heads else "labels")
    # new heads start from the model's own initialisation; the pre-trained weights are kept
    model = head.from_pretrained(model_dir, **settings, pad_token_id=tokenizer.pad_token_id)
    card_info = {"task": task, "settings": {"base_model": str(model_dir), "train_file": str(train_file),
                                            "validation_file": str(validation_file), "max_length": max_length}}
    return train(model, data, args, tokenizer=tokenizer, card_info=card_info)

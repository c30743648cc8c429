"""Labelled data for fine-tuning: JSON lines / CSV through `datasets`, tokenised per task, with the task's metrics.

Row fields per task (the derived tasks of `hf_course_models.corpora.tasks` write exactly these; other
columns are ignored):

| task | fields |
|---|---|
| sequence-classification | `text`, optional `text_pair`, `label` (a string or an integer) |
| token-classification | `tokens` (list of words), `tags` (one label per word; BIO tags give entity-level F1) |
| question-answering | `question`, `context`, `answers` = {`text`: [...], `answer_start`: [character offsets]} |
| multiple-choice | `context`, `choices` (list of strings, the same number in every row), `label` (index) |

Metrics are fractions in [0, 1]: accuracy + macro F1; token accuracy + entity-level precision / recall / F1 +
per-label F1; SQuAD's exact match + token F1 (Chinese compared character by character); accuracy.
"""
from __future__ import annotations

import collections
import os
import re
import string
import unicodedata

import torch

from .pretraining import TrainingData

TASK_COLUMNS = {
    "sequence-classification": ("text", "label"),
    "token-classification": ("tokens", "tags"),
    "question-answering": ("question", "context", "answers"),
    "multiple-choice": ("context", "choices", "label"),
}
READERS = {".jsonl": "json", ".json": "json", ".csv": "csv"}
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "char_ids")
IGNORE_INDEX = -100  # label of tokens the loss and the metrics skip (special tokens, later sub-words)


# ---------------------------------------------------------------- reading

def load_task_file(path, task):
    """One split as a `datasets.Dataset`; OSError if missing, ValueError naming the file if it is empty,
    not UTF-8, of an unknown type or lacks the task's columns."""
    import datasets

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OSError(f"Data file {path!r} does not exist (or is not a file); check the path.")
    extension = os.path.splitext(path)[1].lower()
    if extension not in READERS:
        raise ValueError(f"Data file {path!r} has an unknown type {extension!r}; "
                         "give JSON lines (.jsonl / .json) or CSV (.csv).")
    try:
        with open(path, encoding="utf-8") as handle:
            has_text = any(line.strip() for line in handle)
    except UnicodeDecodeError as err:
        raise ValueError(f"Data file {path!r} is not UTF-8 ({err.reason} at byte {err.start} of a block); "
                         "convert it first, e.g. `iconv -f GB18030 -t UTF-8 in.jsonl > out.jsonl`.") from None
    if not has_text:
        raise ValueError(f"Data file {path!r} is empty; it needs one example per line.")
    dataset = datasets.load_dataset(READERS[extension], data_files=path, split="train")
    missing = [column for column in TASK_COLUMNS[task] if column not in dataset.column_names]
    if missing:
        raise ValueError(f"Data file {path!r} lacks the column(s) {missing} that {task} needs; it has "
                         f"{dataset.column_names}. See hf_course_models.data.finetuning for the fields.")
    return dataset


def label_vocabulary(task, train, validation):
    """(names, label2id) of the classification tasks, sorted (numerically when every label is an integer);
    a validation label never seen in training is a ValueError."""
    column = "label" if task == "sequence-classification" else "tags"
    seen = {}
    for split_name, split in (("train", train), ("validation", validation)):
        values = split[column]
        seen[split_name] = set(values if column == "label" else (tag for tags in values for tag in tags))
    unseen = seen["validation"] - seen["train"]
    if unseen:
        raise ValueError(f"The validation file has label(s) {sorted(map(str, unseen))} the training file never "
                         "uses; the model could not learn them. Add training examples or fix the labels.")
    names = sorted(seen["train"], key=lambda label: (0, label, "") if isinstance(label, int) else (1, 0, str(label)))
    return [str(name) for name in names], {str(name): index for index, name in enumerate(names)}


# ---------------------------------------------------------------- tokenising

def _tokenize_classification(rows, tokenizer, max_length, label2id):
    pairs = rows["text_pair"] if "text_pair" in rows else None
    features = tokenizer(rows["text"], pairs, truncation=True, max_length=max_length)
    features["labels"] = [label2id[str(label)] for label in rows["label"]]
    return features


def _tokenize_token_classification(rows, tokenizer, max_length, label2id):
    """Each word's label goes on its first sub-word token; later sub-words and special tokens get -100
    (the choice of the BERT paper, §5.3)."""
    features = tokenizer(rows["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
    features["labels"] = []
    for index, tags in enumerate(rows["tags"]):
        labels, previous = [], None
        for word in features.word_ids(index):
            labels.append(IGNORE_INDEX if word is None or word == previous else label2id[tags[word]])
            previous = word
        features["labels"].append(labels)
    return features


def _tokenize_question_answering(rows, tokenizer, max_length, doc_stride, example_offset):
    """Windows of the context (`doc_stride` tokens shared between neighbours), as transformers' run_qa.py
    makes them: a window without the whole answer points start and end at [CLS] (index 0); every window
    remembers its example and the character offsets of its context tokens (None elsewhere)."""
    features = tokenizer(rows["question"], rows["context"], truncation="only_second", max_length=max_length,
                         stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    starts, ends, example_indices, context_offsets = [], [], [], []
    for index, offsets in enumerate(features.pop("offset_mapping")):
        example = features["overflow_to_sample_mapping"][index]
        sequence_ids = features.sequence_ids(index)
        offsets = [offset if sequence_ids[position] == 1 else None for position, offset in enumerate(offsets)]
        answer_start = rows["answers"][example]["answer_start"][0]
        answer_end = answer_start + len(rows["answers"][example]["text"][0])
        context_positions = [position for position, offset in enumerate(offsets) if offset is not None]
        start = end = 0
        if context_positions and offsets[context_positions[0]][0] <= answer_start \
                and offsets[context_positions[-1]][1] >= answer_end:
            start = next(p for p in context_positions if offsets[p][1] > answer_start)
            end = next(p for p in reversed(context_positions) if offsets[p][0] < answer_end)
        starts.append(start)
        ends.append(end)
        example_indices.append(example_offset + example)
        context_offsets.append(offsets)
    features.pop("overflow_to_sample_mapping")
    features["start_positions"], features["end_positions"] = starts, ends
    features["example_index"], features["context_offsets"] = example_indices, context_offsets
    return features


def _tokenize_multiple_choice(rows, tokenizer, max_length):
    """Every (context, choice) pair encoded; each feature holds [num_choices] sequences."""
    counts = {len(choices) for choices in rows["choices"]}
    if len(counts) != 1:
        raise ValueError(f"Rows have different numbers of choices {sorted(counts)}; multiple choice needs the "
                         "same number in every row.")
    num_choices = counts.pop()
    contexts = [context for context in rows["context"] for _ in range(num_choices)]
    choices = [choice for row_choices in rows["choices"] for choice in row_choices]
    flat = tokenizer(contexts, choices, truncation=True, max_length=max_length)
    features = {name: [values[i:i + num_choices] for i in range(0, len(values), num_choices)]
                for name, values in flat.items()}
    features["labels"] = list(rows["label"])
    return features


def tokenize(task, dataset, tokenizer, *, max_length, doc_stride=32, label2id=None, num_proc=None):
    """The model-ready features of one split (datasets.map, batched, cached)."""
    if task == "sequence-classification":
        function, kwargs = _tokenize_classification, dict(max_length=max_length, label2id=label2id)
    elif task == "token-classification":
        function, kwargs = _tokenize_token_classification, dict(max_length=max_length, label2id=label2id)
    elif task == "question-answering":
        function, kwargs = _tokenize_question_answering, dict(max_length=max_length, doc_stride=doc_stride)
        kwargs["with_indices"] = True
    else:
        function, kwargs = _tokenize_multiple_choice, dict(max_length=max_length)
    with_indices = kwargs.pop("with_indices", False)

    def apply(rows, indices=None):
        if with_indices:
            return function(rows, tokenizer, example_offset=indices[0], **kwargs)
        return function(rows, tokenizer, **kwargs)

    return dataset.map(apply, batched=True, with_indices=with_indices, remove_columns=dataset.column_names,
                       num_proc=num_proc, desc=f"Tokenising for {task}")


# ---------------------------------------------------------------- batching

class FinetuningCollator:
    """Pads a list of features into model kwargs: inputs with the tokenizer's padding, token labels with -100;
    multiple-choice features ([num_choices] sequences each) become (batch, num_choices, length) tensors.
    `labels_key` is the keyword the model takes labels by (GPT's double-heads model: "mc_labels")."""

    def __init__(self, task, tokenizer, labels_key="labels"):
        self.task, self.tokenizer, self.labels_key = task, tokenizer, labels_key

    def __call__(self, features):
        if self.task == "multiple-choice":
            return self._multiple_choice(features)
        inputs = [{name: feature[name] for name in MODEL_INPUTS if name in feature} for feature in features]
        batch = dict(self.tokenizer.pad(inputs, return_tensors="pt"))
        if self.task == "token-classification":
            length = batch["input_ids"].shape[1]
            batch[self.labels_key] = torch.tensor(
                [f["labels"] + [IGNORE_INDEX] * (length - len(f["labels"])) for f in features])
        elif self.task == "question-answering":
            batch["start_positions"] = torch.tensor([f["start_positions"] for f in features])
            batch["end_positions"] = torch.tensor([f["end_positions"] for f in features])
        else:
            batch[self.labels_key] = torch.tensor([f["labels"] for f in features])
        return batch

    def _multiple_choice(self, features):
        num_choices = len(features[0]["input_ids"])
        flat = [{name: feature[name][choice] for name in MODEL_INPUTS if name in feature}
                for feature in features for choice in range(num_choices)]
        batch = {name: tensor.view(len(features), num_choices, *tensor.shape[1:])
                 for name, tensor in self.tokenizer.pad(flat, return_tensors="pt").items()}
        batch[self.labels_key] = torch.tensor([f["labels"] for f in features])
        return batch


def count_tokens(batch):
    return int(batch["attention_mask"].sum())


# ---------------------------------------------------------------- metrics

def classification_metrics(predictions, references):
    """Accuracy and macro F1 (the unweighted mean of per-class F1 over every class seen in either list)."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"Need as many predictions as references, at least one ({len(predictions)} vs "
                         f"{len(references)}).")
    accuracy = sum(p == r for p, r in zip(predictions, references)) / len(references)
    f1s = [_f1(sum(p == c and r == c for p, r in zip(predictions, references)),
               sum(p == c for p in predictions), sum(r == c for r in references))
           for c in sorted(set(predictions) | set(references), key=str)]
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)}


def _f1(true_positives, predicted, actual):
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / actual if actual else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def entity_spans(tags):
    """(type, start, end) spans. BIO tags as conlleval reads them (an I- that does not continue an entity of
    its type starts one); plain tags (no B-/I- prefix) make every token that is not "O" an entity of its own."""
    spans, current = [], None
    for position, tag in enumerate([*tags, "O"]):
        bio = tag[:2] in ("B-", "I-")
        if current is not None and not (bio and tag[:2] == "I-" and tag[2:] == current[0]):
            spans.append((current[0], current[1], position))
            current = None
        if bio and current is None:
            current = (tag[2:], position)
        elif not bio and tag != "O":
            spans.append((tag, position, position + 1))
    return spans


def token_classification_metrics(predicted_tags, reference_tags):
    """Token accuracy, entity-level micro precision / recall / F1 (a predicted entity counts only with the
    exact type and span), and F1 per entity type ("f1_<TYPE>") with their macro mean."""
    total = correct = 0
    counts = collections.defaultdict(lambda: [0, 0, 0])  # type -> [true positives, predicted, actual]
    for predicted, reference in zip(predicted_tags, reference_tags, strict=True):
        if len(predicted) != len(reference):
            raise ValueError(f"A predicted tag sequence has {len(predicted)} tags for {len(reference)} tokens.")
        total += len(reference)
        correct += sum(p == r for p, r in zip(predicted, reference))
        predicted_spans, reference_spans = set(entity_spans(predicted)), set(entity_spans(reference))
        for span in predicted_spans:
            counts[span[0]][1] += 1
            counts[span[0]][0] += span in reference_spans
        for span in reference_spans:
            counts[span[0]][2] += 1
    true_positives, predicted, actual = (sum(c[i] for c in counts.values()) for i in range(3))
    metrics = {"accuracy": correct / total if total else 0.0,
               "precision": true_positives / predicted if predicted else 0.0,
               "recall": true_positives / actual if actual else 0.0,
               "f1": _f1(true_positives, predicted, actual)}
    per_type = {f"f1_{entity}": _f1(*counts[entity]) for entity in sorted(counts)}
    if per_type:
        metrics["macro_f1"] = sum(per_type.values()) / len(per_type)
    return metrics | per_type


def _is_cjk(char):
    return "CJK" in unicodedata.name(char, "") or "\u3400" <= char <= "\u9fff"


def normalize_answer(text):
    """SQuAD v1.1's normalisation (lower case; punctuation, the articles a / an / the and extra whitespace
    removed), with Unicode punctuation (，。《》) removed too."""
    text = "".join(c for c in text.lower() if c not in string.punctuation and not unicodedata.category(c).startswith("P"))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_tokens(text):
    """Tokens of a normalised answer for F1: whitespace words, and every CJK character on its own (so Chinese
    answers are compared character by character, as CMRC 2018's evaluation does)."""
    tokens = []
    for word in normalize_answer(text).split():
        buffer = ""
        for char in word:
            if _is_cjk(char):
                tokens += [buffer, char] if buffer else [char]
                buffer = ""
            else:
                buffer += char
        if buffer:
            tokens.append(buffer)
    return tokens


def squad_metrics(predictions, references):
    """Exact match and token F1, each the best over an example's reference answers, averaged over examples."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"Need as many predictions as reference lists, at least one ({len(predictions)} vs "
                         f"{len(references)}).")
    exact = f1 = 0.0
    for prediction, answers in zip(predictions, references):
        exact += max(normalize_answer(prediction) == normalize_answer(answer) for answer in answers)
        f1 += max(_token_f1(prediction, answer) for answer in answers)
    return {"exact_match": exact / len(references), "f1": f1 / len(references)}


def _token_f1(prediction, answer):
    predicted, actual = answer_tokens(prediction), answer_tokens(answer)
    if not predicted or not actual:
        return float(predicted == actual)
    common = sum((collections.Counter(predicted) & collections.Counter(actual)).values())
    return _f1(common, len(predicted), len(actual))


def best_answers(start_logits, end_logits, features, contexts, *, n_best=20, max_answer_length=30):
    """The highest-scoring span (start logit + end logit, start <= end < start + max_answer_length, inside the
    context) of each example over all its windows, as text of the example's context. `features` are the
    windows' (example_index, context_offsets) in the order of the logits; an example without a valid span gets ""."""
    best = {}
    for starts, ends, (example, offsets) in zip(start_logits, end_logits, features, strict=True):
        starts, ends = starts[:len(offsets)], ends[:len(offsets)]
        top_starts = torch.topk(starts, min(n_best, len(offsets))).indices.tolist()
        top_ends = torch.topk(ends, min(n_best, len(offsets))).indices.tolist()
        for start in top_starts:
            for end in top_ends:
                if offsets[start] is None or offsets[end] is None or not start <= end < start + max_answer_length:
                    continue
                score = float(starts[start] + ends[end])
                if example not in best or score > best[example][0]:
                    best[example] = (score, contexts[example][offsets[start][0]:offsets[end][1]])
    return [best[example][1] if example in best else "" for example in range(len(contexts))]


# ---------------------------------------------------------------- evaluation

def _gathered_predictions(model, dataloader, accelerator, task):
    """(mean loss, list of per-batch (logits, labels) gathered over processes), model put back in its mode."""
    was_training = model.training
    model.eval()
    loss_sum = count = 0.0
    outputs = []
    with torch.no_grad():
        for batch in dataloader:
            output = model(**batch)
            size = batch["input_ids"].shape[0]
            losses = accelerator.gather_for_metrics(output.loss.detach().float().repeat(size))
            loss_sum += float(losses.sum())
            count += losses.numel()
            if task == "question-answering":
                logits = torch.stack([output.start_logits, output.end_logits], dim=1)  # (batch, 2, length)
                logits = accelerator.pad_across_processes(logits, dim=2, pad_index=-1e4)
                outputs.append((accelerator.gather_for_metrics(logits), None))
                continue
            logits = getattr(output, "mc_logits", None)
            logits = output.logits if logits is None else logits
            labels = next(batch[key] for key in ("labels", "mc_labels") if key in batch)
            if task == "token-classification":
                predictions = accelerator.pad_across_processes(logits.argmax(-1), dim=1, pad_index=IGNORE_INDEX)
                labels = accelerator.pad_across_processes(labels, dim=1, pad_index=IGNORE_INDEX)
            else:
                predictions = logits.argmax(-1)
            outputs.append(accelerator.gather_for_metrics((predictions, labels)))
    model.train(was_training)
    return loss_sum / max(count, 1), outputs


def make_evaluate(task, id2label=None, eval_features=None, eval_examples=None):
    """The TrainingData.evaluate callable of a task: eval loss plus the task's metrics."""

    def evaluate(model, dataloader, accelerator):
        loss, outputs = _gathered_predictions(model, dataloader, accelerator, task)
        if task == "question-answering":
            logits = [row for batch, _ in outputs for row in batch]
            predictions = best_answers([row[0] for row in logits], [row[1] for row in logits],
                                       list(zip(eval_features["example_index"], eval_features["context_offsets"])),
                                       eval_examples["context"])
            return {"loss": loss} | squad_metrics(predictions, [a["text"] for a in eval_examples["answers"]])
        predictions = [p for batch, _ in outputs for p in batch.tolist()]
        labels = [r for _, batch in outputs for r in batch.tolist()]
        if task == "token-classification":
            predicted_tags, reference_tags = [], []
            for predicted, reference in zip(predictions, labels):
                kept = [(p, r) for p, r in zip(predicted, reference) if r != IGNORE_INDEX]
                predicted_tags.append([id2label[p] for p, _ in kept])
                reference_tags.append([id2label[r] for _, r in kept])
            return {"loss": loss} | token_classification_metrics(predicted_tags, reference_tags)
        metrics = classification_metrics(predictions, labels)
        return {"loss": loss} | (metrics if task == "sequence-classification" else {"accuracy": metrics["accuracy"]})

    return evaluate


# ---------------------------------------------------------------- all together

def build_finetuning_data(task, tokenizer, train_file, validation_file, *, max_length=128, doc_stride=32,
                          labels_key="labels", num_proc=None):
    """(TrainingData, model settings) for one task. The settings dict holds num_labels, id2label and
    label2id for the classification tasks (empty otherwise). `doc_stride`: tokens shared by neighbouring
    question-answering windows; `labels_key`: the keyword the model takes its labels by."""
    if task not in TASK_COLUMNS:
        raise ValueError(f"Unknown fine-tuning task {task!r}; choose one of {', '.join(TASK_COLUMNS)}.")
    context = getattr(tokenizer, "model_max_length", None)
    if context is not None and context < 10**9 and max_length > context:
        raise ValueError(f"max_length={max_length} exceeds the tokenizer's model_max_length={context}; "
                         f"pass max_length <= {context}.")
    if task == "question-answering" and not 0 <= doc_stride < max_length // 2:
        raise ValueError(f"doc_stride={doc_stride} must be in [0, max_length // 2 = {max_length // 2}).")
    train, validation = load_task_file(train_file, task), load_task_file(validation_file, task)
    settings, label2id, id2label = {}, None, None
    if task in ("sequence-classification", "token-classification"):
        names, label2id = label_vocabulary(task, train, validation)
        id2label = dict(enumerate(names))
        settings = {"num_labels": len(names), "id2label": id2label, "label2id": label2id}
    options = dict(max_length=max_length, doc_stride=doc_stride, label2id=label2id, num_proc=num_proc)
    train_features = tokenize(task, train, tokenizer, **options)
    eval_features = tokenize(task, validation, tokenizer, **options)
    if task == "question-answering":
        train_features = train_features.remove_columns(["example_index", "context_offsets"])
    data = TrainingData(train_dataset=train_features, collator=FinetuningCollator(task, tokenizer, labels_key),
                        eval_dataset=eval_features,
                        evaluate=make_evaluate(task, id2label, eval_features, validation),
                        count_tokens=count_tokens)
    return data, settings

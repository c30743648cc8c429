"""Fine-tuning: metrics against hand computations, QA windows mapped back to answers, and a short
`finetune` per task whose result reloads through the Auto classes and the task's pipeline."""
import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForMultipleChoice, AutoTokenizer, pipeline

import hf_course_models  # noqa: F401  (registers the Auto classes and the QA pipeline)
from hf_course_models.corpora import corpus_files
from hf_course_models.corpora.tasks import build_task
from hf_course_models.data.finetuning import (
    best_answers,
    build_finetuning_data,
    classification_metrics,
    entity_spans,
    load_task_file,
    normalize_answer,
    squad_metrics,
    token_classification_metrics,
    tokenize,
)
from hf_course_models.modeling.bert.configuration_hfcm_bert import HfcmBertConfig
from hf_course_models.modeling.bert.modeling_hfcm_bert import HfcmBertForMaskedLM
from hf_course_models.tokenization.wordpiece import train_wordpiece_tokenizer
from hf_course_models.training.finetune import finetune
from hf_course_models.training.loop import TrainingArguments


def test_classification_metrics_by_hand():
    # class a: tp 1, predicted 2, actual 2 -> F1 0.5; class b: tp 1, predicted 1, actual 2 -> 2/3;
    # class c: tp 0, predicted 1, actual 0 -> 0
    metrics = classification_metrics(["a", "a", "b", "c"], ["a", "b", "b", "a"])
    assert metrics["accuracy"] == 0.5
    assert math.isclose(metrics["macro_f1"], (0.5 + 2 / 3 + 0) / 3)


def test_entity_spans_and_token_metrics_by_hand():
    assert entity_spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER"]) == [
        ("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6), ("PER", 6, 7)]
    assert entity_spans(["O", "COMMA", "COMMA", "O", "PERIOD"]) == [("COMMA", 1, 2), ("COMMA", 2, 3), ("PERIOD", 4, 5)]
    reference = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    predicted = [["B-PER", "O", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]  # PER span cut short: wrong
    metrics = token_classification_metrics(predicted, reference)
    assert metrics["accuracy"] == 6 / 7
    assert metrics["precision"] == 2 / 3 and metrics["recall"] == 2 / 3 and math.isclose(metrics["f1"], 2 / 3)
    assert metrics["f1_LOC"] == 1.0 and metrics["f1_PER"] == 0.0 and metrics["macro_f1"] == 0.5


def test_squad_metrics_normalisation_and_chinese():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("《杜甫》。") == "杜甫"
    metrics = squad_metrics(["the Milton", "John", "杜甫", "李白", "王维"],
                            [["Milton"], ["John Milton", "J. M."], ["杜甫"], ["李商隐"], ["孟浩然"]])
    assert metrics["exact_match"] == 2 / 5
    # "John" vs "john milton": P 1, R 1/2 -> 2/3; 李白 vs 李商隐: 1 common char, P 1/2, R 1/3 -> 0.4
    assert math.isclose(metrics["f1"], (1 + 2 / 3 + 1 + 0.4 + 0) / 5)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(corpus_files(), vocab_size=4000, model_max_length=128)


def _write(rows, path):
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return str(path)


def test_question_answering_windows_map_back_to_the_answers(tokenizer, tmp_path):
    rows = build_task("who-wrote-en")["validation"][:12] + build_task("who-wrote-zh")["validation"][:12]
    examples = load_task_file(_write(rows, tmp_path / "qa.jsonl"), "question-answering")
    features = tokenize("question-answering", examples, tokenizer, max_length=48, doc_stride=12)
    assert len(features) > len(examples)  # long poems need several windows
    assert set(features["example_index"]) == set(range(len(examples)))
    found = set()
    for feature in features:
        example = examples[feature["example_index"]]
        start, end, offsets = feature["start_positions"], feature["end_positions"], feature["context_offsets"]
        if start == 0:
            continue
        span = example["context"][offsets[start][0]:offsets[end][1]]
        assert span == example["answers"]["text"][0]
        found.add(feature["example_index"])
    assert found == set(range(len(examples)))  # every answer lies whole in some window
    # logits pointing at each window's gold span give back every answer exactly
    length = max(len(f["input_ids"]) for f in features)
    starts, ends = torch.zeros(len(features), length), torch.zeros(len(features), length)
    for row, feature in enumerate(features):
        if feature["start_positions"]:
            starts[row, feature["start_positions"]] = ends[row, feature["end_positions"]] = 10.0
    answers = best_answers(starts, ends, list(zip(features["example_index"], features["context_offsets"])),
                           examples["context"])
    assert answers == [row["answers"]["text"][0] for row in rows]


def test_bad_files_are_named(tokenizer, tmp_path):
    with pytest.raises(OSError, match="missing.jsonl"):
        build_finetuning_data("sequence-classification", tokenizer, tmp_path / "missing.jsonl",
                              tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.jsonl.*empty"):
        load_task_file(tmp_path / "empty.jsonl", "sequence-classification")
    (tmp_path / "gbk.csv").write_bytes("text,label\n床前明月光,唐\n".encode("gbk"))
    with pytest.raises(ValueError, match="gbk.csv.*not UTF-8"):
        load_task_file(tmp_path / "gbk.csv", "sequence-classification")
    good = _write([{"text": "a", "label": "x"}], tmp_path / "good.jsonl")
    with pytest.raises(ValueError, match="good.jsonl.*'tokens', 'tags'"):
        load_task_file(good, "token-classification")
    unseen = _write([{"text": "b", "label": "y"}], tmp_path / "unseen.jsonl")
    with pytest.raises(ValueError, match=r"\['y'\].*never"):
        build_finetuning_data("sequence-classification", tokenizer, good, unseen)
    with pytest.raises(ValueError, match="max_length=512.*128"):
        build_finetuning_data("sequence-classification", tokenizer, good, good, max_length=512)


@pytest.fixture(scope="module")
def base_model(tokenizer, tmp_path_factory):
    """A tiny BERT (random weights: pre-training is tested elsewhere) saved as `hfcm pretrain` would."""
    directory = str(tmp_path_factory.mktemp("base"))
    torch.manual_seed(0)
    config = HfcmBertConfig(preset="tiny", vocab_size=len(tokenizer), max_position_embeddings=128,
                            pad_token_id=tokenizer.pad_token_id)
    HfcmBertForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _mean(values):
    return sum(values) / len(values)


# task, derived task, rows (train = validation: a few steps must fit them), chance-level loss
FINETUNES = [
    ("sequence-classification", "attribution-en", 16, math.log(2)),
    ("token-classification", "punctuation-zh", 32, None),
    ("question-answering", "who-wrote-zh", 32, math.log(48)),
    ("multiple-choice", "next-line-zh", 16, math.log(4)),
]


@pytest.mark.parametrize("task, derived, rows, chance", FINETUNES, ids=[f[0] for f in FINETUNES])
def test_short_finetune_learns_and_reloads(task, derived, rows, chance, base_model, tmp_path):
    data = _write(build_task(derived)["train"][:rows], tmp_path / "train.jsonl")
    out = str(tmp_path / "out")
    args = TrainingArguments(out_dir=out, max_steps=24, batch_size=8, learning_rate=3e-3, warmup_steps=2,
                             logging_steps=1, save_steps=1000, seed=0)
    summary = finetune(task, base_model, data, data, args, max_length=48, doc_stride=12)
    losses = [json.loads(line)["loss"] for line in open(f"{out}/metrics.jsonl") if '"loss"' in line]
    assert _mean(losses[-4:]) < _mean(losses[:4]), losses
    metrics = summary["metrics"]
    if chance is not None:
        assert metrics["loss"] < chance, metrics

    text = "兰叶春葳蕤桂华秋皎洁" if task == "token-classification" else "Sing Heav'nly Muse"
    if task == "sequence-classification":
        assert metrics["accuracy"] > 0.5
        prediction = pipeline("text-classification", model=out)(text)[0]
        assert prediction["label"] in ("Milton", "Shakespeare")
    elif task == "token-classification":
        tags = pipeline("token-classification", model=out)(text)
        config = AutoConfig.from_pretrained(out)
        assert set(config.label2id) >= {"O", "COMMA", "PERIOD"}
        assert all(tag["entity"] in config.label2id and tag["entity"] != "O" for tag in tags)
    elif task == "question-answering":
        context = "《静夜思》\n作者：李白\n床前明月光，疑是地上霜。"
        answer = pipeline("question-answering", model=out)(question="这首诗的作者是谁？", context=context)
        assert answer["answer"] == context[answer["start"]:answer["end"]]
    else:
        model, tokenizer = AutoModelForMultipleChoice.from_pretrained(out), AutoTokenizer.from_pretrained(out)
        choices = ["疑是地上霜。", "低头思故乡。", "春眠不觉晓。", "处处闻啼鸟。"]
        encoded = tokenizer(["床前明月光，"] * 4, choices, return_tensors="pt", padding=True)
        logits = model(**{name: tensor.unsqueeze(0) for name, tensor in encoded.items()}).logits
        assert logits.shape == (1, 4)


def test_an_architecture_without_the_head_is_refused_with_its_tasks(tmp_path):
    from hf_course_models import HfcmElmoConfig, HfcmGptConfig

    args = TrainingArguments(out_dir=str(tmp_path / "out"))
    HfcmGptConfig(preset="tiny").save_pretrained(tmp_path / "gpt")
    with pytest.raises(ValueError, match="hfcm_gpt model, which has no question-answering head; it supports "
                                         "sequence-classification, multiple-choice"):
        finetune("question-answering", str(tmp_path / "gpt"), "t.jsonl", "v.jsonl", args)
    HfcmElmoConfig(preset="tiny").save_pretrained(tmp_path / "elmo")
    with pytest.raises(ValueError, match="no multiple-choice head; it supports sequence-classification, "
                                         "token-classification"):
        finetune("multiple-choice", str(tmp_path / "elmo"), "t.jsonl", "v.jsonl", args)
    with pytest.raises(ValueError, match="'summarization'.*multiple-choice"):
        finetune("summarization", str(tmp_path / "gpt"), "t.jsonl", "v.jsonl", args)

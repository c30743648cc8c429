"""The embedded corpus (size, provenance, existing callers) and the fine-tuning tasks derived from it."""
import json
import os
from importlib import resources

import pytest

from hf_course_models.corpora import TEXTS, corpus_files, corpus_path
from hf_course_models.corpora.tasks import TASKS, build_task, make_task, punctuation_tokens
from hf_course_models.data.corpus import read_documents

CORPUS_DIR = resources.files("hf_course_models") / "corpora"


def test_corpus_is_at_most_3_mb_and_provenance_names_every_file():
    texts = sorted(entry.name for entry in CORPUS_DIR.iterdir() if entry.name.endswith(".txt"))
    assert texts == sorted(text.file for text in TEXTS)
    size = sum(os.path.getsize(CORPUS_DIR / name) for name in texts)
    assert size <= 3 * 1024 * 1024, f"{size} bytes"
    provenance = (CORPUS_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    for name in texts:
        assert f"`{name}`" in provenance, name


def test_corpus_files_keeps_the_compact_pair_and_offers_languages():
    sonnets, tang = corpus_files()  # existing callers unpack exactly these two
    assert sonnets.endswith("sonnets.txt") and tang.endswith("tang300.txt")
    assert [os.path.basename(p) for p in corpus_files("zh")] == ["tang300.txt", "song100.txt"]
    assert len(corpus_files("en")) == 4 and len(corpus_files("all")) == 6
    with pytest.raises(ValueError, match="'fr'.*en, zh, all"):
        corpus_files("fr")
    with pytest.raises(ValueError, match="'hamlet'.*paradise_lost"):
        corpus_path("hamlet")


def test_new_texts_hold_only_poems():
    song = read_documents([corpus_path("song100")])
    assert len(song) == 100 and song[0] == ["《塞上》", "作者：柳开", "鸣骹直上一千尺，天静无风声更干。",
                                            "碧眼胡儿三百骑，尽提金勒向云看。"]
    assert ["《春居杂兴・其二》", "作者：王禹偁"] == song[4][:2]  # a two-poem entry split in two
    milton = read_documents([corpus_path("paradise_lost")])
    assert milton[0][0] == "Of Mans First Disobedience, and the Fruit"
    assert milton[-1][-1] == "Through EDEN took thir solitarie way."
    assert not any("BOOK" in line or "VV" in line for document in milton for line in document)
    for text in TEXTS:  # no control characters (a Gutenberg file ends with a DOS end-of-file mark)
        assert not any(ord(c) < 32 and c != "\n" for c in open(corpus_path(text.name), encoding="utf-8").read())
    lucrece = read_documents([corpus_path("lucrece")])
    assert len(lucrece) == 265 and all(len(stanza) == 7 for stanza in lucrece)


def test_punctuation_tags_on_hand_checked_lines():
    assert punctuation_tokens("Th' infernal Serpent; he it was, whose guile", "en") == (
        ["Th'", "infernal", "Serpent", "he", "it", "was", "whose", "guile"],
        ["O", "O", "SEMICOLON", "O", "O", "COMMA", "O", "O"])
    assert punctuation_tokens("O! what excuse will my poor beast then find,", "en")[1][:2] == ["EXCLAMATION", "O"]
    assert punctuation_tokens("兰叶春葳蕤，桂华秋皎洁。", "zh") == (
        list("兰叶春葳蕤桂华秋皎洁"), ["O"] * 4 + ["COMMA"] + ["O"] * 4 + ["PERIOD"])
    assert punctuation_tokens("草木有本心，何求美人折？", "zh")[1][-1] == "QUESTION"


@pytest.fixture(scope="module")
def tasks():
    return {name: build_task(name, seed=0) for name in TASKS}


def test_tasks_are_deterministic_and_seeded(tasks):
    assert build_task("next-line-zh", seed=0) == tasks["next-line-zh"]
    assert build_task("next-line-zh", seed=1) != tasks["next-line-zh"]


def test_no_document_is_in_both_splits(tasks):
    for name, splits in tasks.items():
        train = {row["document"] for row in splits["train"]}
        validation = {row["document"] for row in splits["validation"]}
        assert train and validation and not train & validation, name
        # every corpus text of the language reaches validation
        assert len({d.split(":")[0] for d in validation}) == len({d.split(":")[0] for d in train}), name


def test_labels_are_right(tasks):
    documents = {f"{text.file}:{i}": lines for text in TEXTS
                 for i, lines in enumerate(read_documents([corpus_path(text.name)]))}
    authors = {"sonnets.txt": "Shakespeare", "lucrece.txt": "Shakespeare", "lovers_complaint.txt": "Shakespeare",
               "paradise_lost.txt": "Milton", "tang300.txt": "Tang", "song100.txt": "Song"}
    for split in ("train", "validation"):
        rows = tasks["attribution-en"][split]
        assert sum(r["label"] == "Milton" for r in rows) == sum(r["label"] == "Shakespeare" for r in rows)
        for row in rows[:200] + tasks["attribution-zh"][split]:
            assert row["label"] == authors[row["document"].split(":")[0]]
            lines = documents[row["document"]]
            assert row["text"] in lines or row["text"] == "".join(lines[2:])
        for row in tasks["who-wrote-zh"][split] + tasks["who-wrote-en"][split]:
            answer, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
            assert row["context"][start:start + len(answer)] == answer
            lines = documents[row["document"]]
            if row["document"].startswith(("tang300", "song100")):
                assert answer == lines[1].removeprefix("作者：")
            else:
                assert answer in ("William Shakespeare", "John Milton")
        for row in tasks["next-line-zh"][split] + tasks["next-line-en"][split][:300]:
            lines = documents[row["document"]]
            true_line = row["choices"][row["label"]]
            assert lines[lines.index(row["context"]) + 1] == true_line
            assert len(set(row["choices"])) == 4
            if row["document"].startswith(("tang300", "song100")):
                assert {len(choice) for choice in row["choices"]} == {len(true_line)} or len(true_line) not in (12, 16)
    # a hand-checked Tang row: 杜甫's 《梦李白・其二》 is tang300 document 1
    row = next(r for s in tasks["who-wrote-zh"].values() for r in s if r["document"] == "tang300.txt:1")
    assert row["answers"]["text"] == ["杜甫"] and "浮云终日行，游子久不至。" in row["context"]


def test_make_task_writes_json_lines(tmp_path):
    written = make_task("attribution-zh", tmp_path, seed=3)
    assert written["task"] == "sequence-classification"
    rows = [json.loads(line) for line in open(written["validation"], encoding="utf-8")]
    assert len(rows) == written["validation_rows"] and set(rows[0]) == {"text", "label", "document"}
    with pytest.raises(ValueError, match="'sentiment'.*attribution-en"):
        make_task("sentiment", tmp_path)
    with pytest.raises(ValueError, match="validation_fraction=1.5"):
        build_task("attribution-zh", validation_fraction=1.5)

"""Fine-tuning tasks with real labels, derived from the embedded corpus (no labelled data set ships here).

Every task is split by *document* (a sonnet, a stanza, a verse paragraph, a poem), separately within each
corpus text, so no document gives rows to both splits; everything random is drawn from `random.Random(seed)`.
Rows are JSON lines, the form `hfcm finetune` reads; every row also names its `document` ("file:index").

| task | finetune task | row fields |
|---|---|---|
| attribution-en | sequence-classification | `text` (one verse line), `label` ("Shakespeare" / "Milton"; classes balanced per split) |
| attribution-zh | sequence-classification | `text` (a poem's verses, no title or author), `label` ("Tang" / "Song") |
| punctuation-en, punctuation-zh | token-classification | `tokens` (words; Chinese: characters), `tags` (the punctuation that follows each token: O, COMMA, PERIOD, QUESTION, EXCLAMATION, SEMICOLON, COLON; Chinese also ENUMERATION_COMMA for 、) |
| who-wrote-en, who-wrote-zh | question-answering | `id`, `question`, `context` (title, author and verses in one of three layouts), `answers` = {`text`: [author], `answer_start`: [character offset]} (SQuAD's form) |
| next-line-en, next-line-zh | multiple-choice | `context` (a verse line), `choices` (four lines: the true next line and three from other documents of the same split; Chinese distractors have the true line's length), `label` (index of the true line) |
"""
import json
import math
import os
import random
import re
from dataclasses import dataclass

from ..data.corpus import read_documents
from . import CorpusText, corpus_path, corpus_texts

FULL_NAMES = {"Shakespeare": "William Shakespeare", "Milton": "John Milton"}
ENGLISH_TITLES = {"sonnets": "Sonnet {}", "lucrece": "The Rape of Lucrece, stanza {}",
                  "lovers_complaint": "A Lover's Complaint, stanza {}",
                  "paradise_lost": "Paradise Lost, verse paragraph {}"}
PUNCTUATION_TAGS = {",": "COMMA", ".": "PERIOD", "?": "QUESTION", "!": "EXCLAMATION", ";": "SEMICOLON",
                    ":": "COLON", "，": "COMMA", "。": "PERIOD", "？": "QUESTION", "！": "EXCLAMATION",
                    "；": "SEMICOLON", "：": "COLON", "、": "ENUMERATION_COMMA"}
# words keep inner and edge apostrophes (th', 'tis, o're); punctuation marks are separate tokens
ENGLISH_TOKEN = re.compile(r"['’]?\w+(?:['’-]\w+)*['’]?|[,.;:!?]")
LINES_PER_PUNCTUATION_ROW = 4
WHO_WROTE_QUESTIONS = {"en": "Who wrote this poem?", "zh": "这首诗的作者是谁？"}
MAX_QA_VERSES = 20


@dataclass
class Document:
    id: str  # "file:index", unique in the corpus
    text: CorpusText
    title: str
    author: str
    verses: list


def load_documents(language):
    """The corpus documents of one language with their title and author (the Chinese files carry both)."""
    documents = []
    for text in corpus_texts(language):
        for index, lines in enumerate(read_documents([corpus_path(text.name)])):
            if language == "zh":
                title, author, verses = lines[0], lines[1].removeprefix("作者："), lines[2:]
            else:
                title, author, verses = ENGLISH_TITLES[text.name].format(index + 1), FULL_NAMES[text.source], lines
            documents.append(Document(f"{text.file}:{index}", text, title, author, verses))
    return documents


def split_documents(documents, seed, validation_fraction):
    """(train, validation) documents: within each corpus text a seeded shuffle, the first
    ceil(fraction * n) documents to validation, so every text is in both splits."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction} must lie strictly between 0 and 1.")
    rng = random.Random(seed)
    train, validation = [], []
    for name in dict.fromkeys(document.text.name for document in documents):
        group = [document for document in documents if document.text.name == name]
        rng.shuffle(group)
        cut = math.ceil(validation_fraction * len(group))
        validation += group[:cut]
        train += group[cut:]
    return train, validation


def attribution_lines(documents, rng):
    """One row per verse line, labelled with its author; the larger class is subsampled to the smaller's size."""
    by_author = {}
    for document in documents:
        for line in document.verses:
            by_author.setdefault(document.text.source, []).append(
                {"text": line, "label": document.text.source, "document": document.id})
    smallest = min(len(rows) for rows in by_author.values())
    rows = [row for author in sorted(by_author) for row in rng.sample(by_author[author], smallest)]
    rng.shuffle(rows)
    return rows


def attribution_poems(documents, rng):
    """One row per poem (verses only: the title and author would give the answer away), labelled with its dynasty."""
    rows = [{"text": "".join(document.verses), "label": document.text.source, "document": document.id}
            for document in documents]
    rng.shuffle(rows)
    return rows


def punctuation_tokens(line, language):
    """(tokens, tags): each word (English) or character (Chinese) with the punctuation mark right after it."""
    if language == "zh":
        pieces = [char for char in line if not char.isspace()]
        is_token = str.isalnum
    else:
        pieces = ENGLISH_TOKEN.findall(line)
        is_token = lambda piece: piece not in PUNCTUATION_TAGS  # noqa: E731
    tokens, tags = [], []
    for piece in pieces:
        if is_token(piece):
            tokens.append(piece)
            tags.append("O")
        elif piece in PUNCTUATION_TAGS and tokens and tags[-1] == "O":  # the first of "?!" counts
            tags[-1] = PUNCTUATION_TAGS[piece]
    return tokens, tags


def punctuation_rows(documents, rng, language):
    """Rows of up to four consecutive verses of one document, punctuation removed and kept as tags."""
    rows = []
    for document in documents:
        for start in range(0, len(document.verses), LINES_PER_PUNCTUATION_ROW):
            tokens, tags = [], []
            for line in document.verses[start:start + LINES_PER_PUNCTUATION_ROW]:
                line_tokens, line_tags = punctuation_tokens(line, language)
                tokens += line_tokens
                tags += line_tags
            if tokens:
                rows.append({"tokens": tokens, "tags": tags, "document": document.id})
    rng.shuffle(rows)
    return rows


def _who_wrote_layouts(document, language):
    """Three layouts of title, author and poem, each as pieces with the author marked by None."""
    poem = "\n".join(document.verses[:MAX_QA_VERSES])
    if language == "zh":
        bare_title = document.title.strip("《》")
        return [[document.title + "\n作者：", None, "\n" + poem],
                [poem + "\n——", None, f"《{bare_title}》"],
                ["", None, f"的{document.title}：\n{poem}"]]
    return [[document.title + "\nby ", None, "\n" + poem],
            [poem + "\n— ", None, ", " + document.title],
            [f"From {document.title}, which ", None, " wrote:\n" + poem]]


def who_wrote_rows(documents, rng, language):
    """SQuAD-style rows: which span of the context names the poem's author."""
    rows = []
    for document in documents:
        pieces = rng.choice(_who_wrote_layouts(document, language))
        before, _, after = pieces
        rows.append({"id": document.id, "question": WHO_WROTE_QUESTIONS[language],
                     "context": before + document.author + after,
                     "answers": {"text": [document.author], "answer_start": [len(before)]},
                     "document": document.id})
    rng.shuffle(rows)
    return rows


def next_line_rows(documents, rng, language):
    """From every other verse of a document: which of four lines follows it. Distractors come from other
    documents of the same split; for Chinese they have the true line's length, so length gives nothing away."""
    lines = [(line, document.id) for document in documents for line in document.verses]
    by_length = {}
    for line, document_id in lines:
        by_length.setdefault(len(line) if language == "zh" else 0, []).append((line, document_id))
    rows = []
    for document in documents:
        for index in range(0, len(document.verses) - 1, 2):
            context, answer = document.verses[index], document.verses[index + 1]
            pool = by_length[len(answer) if language == "zh" else 0]
            if len(pool) < 50:  # a rare line length: draw distractors from every line instead
                pool = lines
            distractors = []
            while len(distractors) < 3:
                line, document_id = rng.choice(pool)
                if document_id != document.id and line not in distractors and line != answer:
                    distractors.append(line)
            label = rng.randrange(4)
            choices = distractors[:label] + [answer] + distractors[label:]
            rows.append({"context": context, "choices": choices, "label": label, "document": document.id})
    rng.shuffle(rows)
    return rows


# name -> (finetune task, language, row builder(documents, rng, language))
TASKS = {
    "attribution-en": ("sequence-classification", "en", lambda docs, rng, _: attribution_lines(docs, rng)),
    "attribution-zh": ("sequence-classification", "zh", lambda docs, rng, _: attribution_poems(docs, rng)),
    "punctuation-en": ("token-classification", "en", punctuation_rows),
    "punctuation-zh": ("token-classification", "zh", punctuation_rows),
    "who-wrote-en": ("question-answering", "en", who_wrote_rows),
    "who-wrote-zh": ("question-answering", "zh", who_wrote_rows),
    "next-line-en": ("multiple-choice", "en", next_line_rows),
    "next-line-zh": ("multiple-choice", "zh", next_line_rows),
}


def build_task(name, seed=0, validation_fraction=0.1):
    """{"train": rows, "validation": rows} of one derived task."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; the derived tasks are {', '.join(TASKS)}.")
    _, language, build_rows = TASKS[name]
    train, validation = split_documents(load_documents(language), seed, validation_fraction)
    rng = random.Random(seed)
    return {"train": build_rows(train, rng, language), "validation": build_rows(validation, rng, language)}


def make_task(name, out_dir, seed=0, validation_fraction=0.1):
    """Write out_dir/train.jsonl and out_dir/validation.jsonl; returns the finetune task name, the paths
    and the row counts."""
    splits = build_task(name, seed, validation_fraction)
    os.makedirs(out_dir, exist_ok=True)
    written = {"task": TASKS[name][0]}
    for split, rows in splits.items():
        path = os.path.join(out_dir, f"{split}.jsonl")
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        written[split] = path
        written[f"{split}_rows"] = len(rows)
    return written

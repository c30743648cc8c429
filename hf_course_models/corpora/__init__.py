"""The embedded default corpus: public-domain English and Chinese poetry (provenance in PROVENANCE.md).

Every file holds one verse per line and a blank line between documents (a sonnet, a stanza, a verse
paragraph, a poem). `corpus_files()` gives the compact pair (the sonnets and 唐诗三百首, 180 KB);
`corpus_files("en")`, `corpus_files("zh")` or `corpus_files("all")` give more.
"""
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class CorpusText:
    name: str
    file: str
    language: str  # "en" | "zh"
    source: str  # author (English) or dynasty (Chinese): the label of the attribution tasks
    title: str


TEXTS = (
    CorpusText("sonnets", "sonnets.txt", "en", "Shakespeare", "Shakespeare's Sonnets"),
    CorpusText("lucrece", "lucrece.txt", "en", "Shakespeare", "The Rape of Lucrece"),
    CorpusText("lovers_complaint", "lovers_complaint.txt", "en", "Shakespeare", "A Lover's Complaint"),
    CorpusText("paradise_lost", "paradise_lost.txt", "en", "Milton", "Paradise Lost"),
    CorpusText("tang300", "tang300.txt", "zh", "Tang", "唐诗三百首"),
    CorpusText("song100", "song100.txt", "zh", "Song", "宋诗一百首"),
)
COMPACT = ("sonnets", "tang300")
LANGUAGES = ("en", "zh", "all")


def corpus_path(name):
    """Path of one text by its name in TEXTS, e.g. corpus_path("paradise_lost")."""
    return str(resources.files(__name__) / _text(name).file)


def corpus_texts(language="all"):
    """The CorpusText entries of one language ("en", "zh") or of all."""
    if language not in LANGUAGES:
        raise ValueError(f"Unknown corpus language {language!r}; choose one of {', '.join(LANGUAGES)}.")
    return [text for text in TEXTS if language in ("all", text.language)]


def corpus_files(language=None):
    """Paths of the embedded corpus files: with no argument the compact English + Chinese pair (sonnets,
    tang300); "en" or "zh" for every file in that language, "all" for every file."""
    names = COMPACT if language is None else [text.name for text in corpus_texts(language)]
    return [corpus_path(name) for name in names]


def _text(name):
    for text in TEXTS:
        if text.name == name:
            return text
    raise ValueError(f"No corpus text named {name!r}; the embedded texts are {', '.join(t.name for t in TEXTS)}.")

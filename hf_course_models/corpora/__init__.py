"""The embedded default corpus: public-domain English and Chinese text (provenance in PROVENANCE.md)."""
from importlib import resources

FILES = ("sonnets.txt", "tang300.txt")


def corpus_files():
    """Paths of the embedded corpus files: one sentence or verse per line, blank lines between documents."""
    return [str(resources.files(__name__) / name) for name in FILES]

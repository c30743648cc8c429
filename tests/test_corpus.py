"""Corpus reading: documents, and errors that name the file."""
import pytest

from hf_course_models.data.corpus import iter_lines, read_documents


def test_documents_are_separated_by_blank_lines_and_files(tmp_path):
    first = tmp_path / "a.txt"
    first.write_text("One sentence.\nTwo sentence.\n\n\n第三句。\n", encoding="utf-8")
    second = tmp_path / "b.txt"
    second.write_text("  Last document.  \n", encoding="utf-8")
    assert read_documents([first, second]) == [["One sentence.", "Two sentence."], ["第三句。"], ["Last document."]]
    assert list(iter_lines(str(first))) == ["One sentence.", "Two sentence.", "第三句。"]


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "gbk.txt"
    bad.write_bytes("床前明月光".encode("gbk"))
    with pytest.raises(ValueError, match=r"gbk\.txt.*not UTF-8.*iconv"):
        read_documents([bad])
    with pytest.raises(ValueError, match=r"gbk\.txt"):
        list(iter_lines([bad]))


def test_empty_corpus_and_missing_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty.*empty\.txt"):
        read_documents([empty])
    with pytest.raises(ValueError, match="empty"):
        list(iter_lines([empty]))
    with pytest.raises(ValueError, match="No corpus files"):
        read_documents([])
    with pytest.raises(OSError, match=r"missing\.txt.*does not exist"):
        read_documents([tmp_path / "missing.txt"])

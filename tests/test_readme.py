"""The README's Python snippets run as they stand, in order, in one namespace."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_snippets_run(tmp_path, monkeypatch, capsys):
    snippets = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(snippets) >= 4
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for snippet in snippets:
        exec(compile(snippet, str(README), "exec"), namespace)
    assert "'床', '前', '明', '月', '光'" in capsys.readouterr().out
    assert namespace["output"].loss.item() > 0 and (tmp_path / "my-bert" / "tokenizer.json").is_file()
    assert namespace["generator"].model.config.model_type == "hfcm_gpt" and (tmp_path / "my-gpt").is_dir()
    tokens = namespace["batch"]["input_ids"].shape[1]
    assert namespace["features"].last_hidden_state.shape == (2, tokens, 2 * namespace["config"].hidden_size)

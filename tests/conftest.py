"""Shared fixtures.

Local Hub (issue 6): `hub_server` runs tests/hub_server on 127.0.0.1 for the whole session;
`hub_env` points huggingface_hub and transformers at it for one test.

How the client is redirected. huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE and
HF_HUB_DISABLE_XET once, at import, into `huggingface_hub.constants`; setting the environment
variables inside a running process therefore changes nothing for it. Patching was checked against
huggingface_hub 2.4 / transformers 5.24 (tests/test_hub_server.py drives all of it in-process):
- `constants.ENDPOINT` and `constants.HUGGINGFACE_CO_URL_TEMPLATE` are read at call time by
  hf_hub_download, snapshot_download, lfs, the commit API and by every `HfApi()` created afterwards;
- but `huggingface_hub.hf_api.api` (behind the module-level `create_repo`, `upload_file`, ...) and
  transformers' shared `transformers.utils.hub._hf_api` (behind `push_to_hub`) captured the endpoint
  when they were created: the first is patched, the second reset so it is rebuilt on first use;
- `constants.HF_HUB_DISABLE_XET = True`: with hf_xet installed the client would upload through Xet,
  which this server does not speak; it must use the LFS batch API instead;
- cache and token paths (`HF_HOME`, `HF_HUB_CACHE`, token files) and transformers' remote-code module
  cache point into the test's tmp dir, so nothing is read from or written to ~/.cache/huggingface.
Subprocesses started by a test inherit the environment variables set here, so they need nothing else.
"""

import pytest
from hub_server import HubServer  # tests/ is on sys.path: pytest puts a rootdir conftest's folder there

from hf_course_models.corpora import corpus_files
from hf_course_models.tokenization.bpe import train_bpe_tokenizer


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """A running local Hub: `.endpoint`, `.token` (user "tester"), `.other_token` ("intruder"), `.storage`."""
    server = HubServer(tmp_path_factory.mktemp("local_hub")).start()
    yield server
    server.stop()


@pytest.fixture
def hub_env(hub_server, tmp_path, monkeypatch):
    """Point huggingface_hub and transformers (this process and its children) at `hub_server`."""
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api
    import transformers.dynamic_module_utils
    import transformers.utils.hub

    home = tmp_path / "hf_home"
    cache = home / "hub"
    modules = home / "modules"
    environment = {
        "HF_ENDPOINT": hub_server.endpoint,
        "HF_TOKEN": hub_server.token,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_MODULES_CACHE": str(modules),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
                 "TRANSFORMERS_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)

    monkeypatch.setattr(constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", hub_server.endpoint)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    monkeypatch.setattr(transformers.utils.hub, "HF_MODULES_CACHE", str(modules))
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(modules))
    return hub_server


@pytest.fixture(scope="session")
def verse_corpus(tmp_path_factory):
    """About 20 kB of English verse (the embedded corpus's first file), documents kept whole: short training runs."""
    text = open(corpus_files()[0], encoding="utf-8").read()
    path = tmp_path_factory.mktemp("verse") / "verse.txt"
    path.write_text(text[: text.index("\n\n", 20_000)] + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def verse_bpe_dir(verse_corpus, tmp_path_factory):
    """A 400-token byte-level BPE tokenizer trained on `verse_corpus`, saved in a directory."""
    path = tmp_path_factory.mktemp("verse_bpe")
    train_bpe_tokenizer([verse_corpus], vocab_size=400).save_pretrained(path)
    return str(path)

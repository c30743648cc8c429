"""Sharing on the Hub: remote code, model cards, `hfcm push`, pulls by revision, checkpoint pushes.

Everything talks to the local Hub server of tests/hub_server through the unmodified huggingface_hub client
(fixtures `hub_server` and `hub_env` in conftest.py). "Without the package" runs in a subprocess in which a
meta-path finder refuses to import hf_course_models; the subprocess checks that the block holds.
"""
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download, list_repo_files
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoTokenizer,
    pipeline,
)

import hf_course_models as hfcm
from hf_course_models.cli import main as hfcm_main
from hf_course_models.hub import CheckpointPusher, push_folder, write_model_card
from hf_course_models.registry import ARCHITECTURES

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
    "A language model predicts the next word from the words before it.",
    "The bank raised its rates, and the river bank flooded in the spring.",
    "Rough winds do shake the darling buds of May.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "我们在北京学习中文，也学习语言模型。",
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
] * 3
SAMPLES = ["The quick brown fox jumps over the dog.", "我们学习语言模型。"]

# family -> (Auto class that loads the saved head, pipeline task)
FAMILIES = {
    "bert": (AutoModelForMaskedLM, "fill-mask"),
    "gpt": (AutoModelForCausalLM, "text-generation"),
    "elmo": (AutoModelForPreTraining, "feature-extraction"),
}


def _tiny(family):
    torch.manual_seed({"bert": 0, "gpt": 1, "elmo": 2}[family])
    if family == "bert":
        tokenizer = hfcm.train_wordpiece_tokenizer(iterator=TEXTS, vocab_size=200, min_frequency=1)
        model = hfcm.HfcmBertForMaskedLM(hfcm.HfcmBertConfig(preset="tiny", vocab_size=len(tokenizer)))
    elif family == "gpt":
        tokenizer = hfcm.train_bpe_tokenizer(iterator=TEXTS, vocab_size=300, min_frequency=1)
        tokenizer.pad_token = tokenizer.eos_token
        model = hfcm.HfcmGptForCausalLM(hfcm.HfcmGptConfig(
            preset="tiny", vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id))
    else:
        tokenizer = hfcm.train_elmo_tokenizer(iterator=TEXTS, vocab_size=200, min_frequency=1)
        model = hfcm.HfcmElmoForBidirectionalLM(hfcm.HfcmElmoConfig(preset="tiny", vocab_size=len(tokenizer)))
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def tiny_models():
    return {family: _tiny(family) for family in FAMILIES}


def _outputs(model, tokenizer):
    """The tensors a model computes on SAMPLES, by name (logits, or ELMo's layer stack and both softmaxes)."""
    batch = tokenizer(SAMPLES, padding=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**batch)
    names = ("logits", "forward_logits", "backward_logits", "all_layer_activations")
    return {name: outputs[name] for name in names if outputs.get(name) is not None} | {
        f"input.{name}": tensor for name, tensor in batch.items()}


def _assert_identical(actual, expected, what):
    assert actual.keys() == expected.keys(), what
    for name in expected:
        delta = (actual[name].double() - expected[name].double()).abs().max().item()
        assert torch.equal(actual[name], expected[name]), f"{what}: {name} differs, max |Δ| = {delta}"


def _push(model, tokenizer, repo_id, **kwargs):
    """transformers' own push_to_hub, model then tokenizer; returns the model commit's sha."""
    commit = model.push_to_hub(repo_id, **kwargs)
    tokenizer.push_to_hub(repo_id, **kwargs)
    return commit.oid


def _files_containing(text, *roots):
    found = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and text.encode() in path.read_bytes():
                found.append(str(path))
    return found


# ---------------------------------------------------------------- remote code, offline


@pytest.mark.parametrize("config_class, models, _", ARCHITECTURES, ids=["bert", "gpt", "elmo"])
def test_every_head_saves_its_code_and_an_auto_map_for_every_head(config_class, models, _, tmp_path):
    extra = {"bos_token_id": 1, "eos_token_id": 1} if config_class is hfcm.HfcmGptConfig else {}
    config = config_class(preset="tiny", vocab_size=64, **extra)
    heads = dict(models) | ({"double heads": hfcm.HfcmGptDoubleHeadsModel} if config_class is hfcm.HfcmGptConfig
                            else {})
    expected = {"AutoConfig": f"{config_class.__module__.rsplit('.', 1)[1]}.{config_class.__name__}"} | {
        auto.__name__: f"{model.__module__.rsplit('.', 1)[1]}.{model.__name__}" for auto, model in models.items()}
    code_files = {f"{reference.split('.')[0]}.py" for reference in expected.values()}
    for auto_class, model_class in heads.items():
        directory = tmp_path / model_class.__name__
        model_class(config).save_pretrained(directory)
        saved = json.loads((directory / "config.json").read_text())
        assert saved["auto_map"] == expected, model_class.__name__
        assert code_files <= {path.name for path in directory.glob("*.py")}, model_class.__name__
        if auto_class != "double heads":
            assert type(auto_class.from_pretrained(directory)) is model_class


# ---------------------------------------------------------------- model cards, offline


def test_model_card_metadata_and_body_come_from_config_and_training(tiny_models, tmp_path):
    model, tokenizer = tiny_models["bert"]
    model.save_pretrained(tmp_path)
    training = {"datasets": ["wikitext"], "language": ["en", "zh"], "task": None,
                "settings": {"max_steps": 20, "learning_rate": 5e-4, "hub_token": "hf_secret_value"},
                "metrics": {"eval_loss": 2.5, "perplexity": 12.25, "diverged": float("nan")}}
    write_model_card(str(tmp_path), training=training)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "fill-mask"
    assert card.data.tags == ["hf_course_models", "hfcm_bert", "bert", "custom_code"]
    assert card.data.language == ["en", "zh"] and card.data.datasets == ["wikitext"]
    assert card.data.license == "apache-2.0"
    assert {(result.metric_type, result.metric_value) for result in card.data.eval_results} == {
        ("eval_loss", 2.5), ("perplexity", 12.25)}
    parameters = sum(tensor.numel() for tensor in load_file(tmp_path / "model.safetensors").values())
    assert f"| Parameters | {parameters / 1e6:.1f}M |" in card.text
    assert "| hidden_size | `64` |" in card.text and "| max_steps | 20 |" in card.text
    assert 'AutoModelForMaskedLM.from_pretrained("' + str(tmp_path) + '", trust_remote_code=True)' in card.text
    assert "hf_secret_value" not in (tmp_path / "README.md").read_text() and "hub_token" not in card.text


@pytest.mark.parametrize("model_class, config_class, task, tag, auto_class", [
    (hfcm.HfcmGptForCausalLM, hfcm.HfcmGptConfig, "pretraining", "text-generation", "AutoModelForCausalLM"),
    (hfcm.HfcmGptDoubleHeadsModel, hfcm.HfcmGptConfig, None, "text-generation", "AutoModelForCausalLM"),
    (hfcm.HfcmElmoModel, hfcm.HfcmElmoConfig, None, "feature-extraction", "AutoModel"),
    (hfcm.HfcmElmoForTokenClassification, hfcm.HfcmElmoConfig, "token-classification", "token-classification",
     "AutoModelForTokenClassification"),
    (hfcm.HfcmBertForSequenceClassification, hfcm.HfcmBertConfig, "sequence-classification", "text-classification",
     "AutoModelForSequenceClassification"),
    (hfcm.HfcmBertForQuestionAnswering, hfcm.HfcmBertConfig, None, "question-answering",
     "AutoModelForQuestionAnswering"),
])
def test_model_card_pipeline_tag_and_loading_follow_the_saved_head(model_class, config_class, task, tag,
                                                                   auto_class, tmp_path):
    extra = {"bos_token_id": 1, "eos_token_id": 1} if config_class is hfcm.HfcmGptConfig else {}
    model_class(config_class(preset="tiny", vocab_size=64, **extra)).save_pretrained(tmp_path)
    card = write_model_card(str(tmp_path), training={"task": task}, repo_id="tester/card")
    assert ModelCard.load(tmp_path / "README.md").data.pipeline_tag == tag
    assert f'{auto_class}.from_pretrained("tester/card", trust_remote_code=True)' in card.text
    assert "Data: not recorded" in card.text


def test_model_card_errors_name_the_problem(tmp_path):
    with pytest.raises(OSError, match="no config.json.*save_pretrained"):
        write_model_card(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        write_model_card(str(tmp_path))


# ---------------------------------------------------------------- push and pull


@pytest.mark.parametrize("family", FAMILIES)
def test_push_then_pull_into_a_fresh_cache_gives_identical_outputs(family, tiny_models, hub_env, hub_server,
                                                                   tmp_path):
    model, tokenizer = tiny_models[family]
    auto_class, task = FAMILIES[family]
    repo_id = f"tester/tiny-{family}"
    _push(model, tokenizer, repo_id)
    files = set(list_repo_files(repo_id))
    assert {"config.json", "model.safetensors", "tokenizer_config.json", f"modeling_hfcm_{family}.py",
            f"configuration_hfcm_{family}.py"} <= files
    assert ("elmo.py" in files) == (family == "elmo")  # BERT and GPT use transformers' own tokenizers

    pulled, pulled_tokenizer = auto_class.from_pretrained(repo_id), AutoTokenizer.from_pretrained(repo_id)
    assert type(pulled) is type(model) and type(pulled_tokenizer) is type(tokenizer)
    _assert_identical(_outputs(pulled.eval(), pulled_tokenizer), _outputs(model, tokenizer), f"{family} pulled")
    cache = Path(os.environ["HF_HUB_CACHE"])
    assert (cache / f"models--tester--tiny-{family}").is_dir(), "the pull must land in HF_HUB_CACHE"

    local = tmp_path / "local"
    model.save_pretrained(local)
    tokenizer.save_pretrained(local)
    kwargs = {"max_new_tokens": 5, "do_sample": False} if task == "text-generation" else {}
    assert pipeline(task, model=repo_id)(SAMPLES[0] if task != "fill-mask" else "the quick [MASK] fox", **kwargs) \
        == pipeline(task, model=str(local))(SAMPLES[0] if task != "fill-mask" else "the quick [MASK] fox", **kwargs)
    assert not _files_containing(hub_server.token, cache, local)


PULL_WITHOUT_THE_PACKAGE = textwrap.dedent("""
    import importlib.abc, json, sys

    class RefuseOurPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "hf_course_models":
                raise ImportError("hf_course_models is blocked in this process")

    sys.meta_path.insert(0, RefuseOurPackage())
    try:
        import hf_course_models
        sys.exit("the block failed: hf_course_models was imported")
    except ImportError:
        pass

    import transformers
    from safetensors.torch import save_file
    import torch

    samples, out, requests = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    report = {}
    for repo_id, auto_class in requests:
        model = getattr(transformers, auto_class).from_pretrained(repo_id, trust_remote_code=True).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(repo_id, trust_remote_code=True)
        batch = tokenizer(samples, padding=True, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**batch)
        names = ("logits", "forward_logits", "backward_logits", "all_layer_activations")
        tensors = {name: outputs[name] for name in names if outputs.get(name) is not None}
        tensors |= {f"input.{name}": tensor for name, tensor in batch.items()}
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()},
                  f"{out}/{repo_id.replace('/', '--')}.safetensors")
        report[repo_id] = [type(model).__module__, type(tokenizer).__module__]
    print(json.dumps({"report": report, "imported": "hf_course_models" in sys.modules}))
""")


def test_pull_with_trust_remote_code_where_the_package_cannot_be_imported(tiny_models, hub_env, tmp_path):
    requests = []
    for family, (model, tokenizer) in tiny_models.items():
        repo_id = f"tester/remote-{family}"
        _push(model, tokenizer, repo_id)
        requests.append((repo_id, FAMILIES[family][0].__name__))
    result = subprocess.run(
        [sys.executable, "-c", PULL_WITHOUT_THE_PACKAGE, json.dumps(SAMPLES), str(tmp_path), json.dumps(requests)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["imported"] is False
    for (family, (model, tokenizer)), (repo_id, _) in zip(tiny_models.items(), requests):
        model_module, tokenizer_module = summary["report"][repo_id]
        assert model_module.startswith("transformers_modules."), model_module  # the repo's own code ran
        expected_tokenizer = "transformers_modules." if family == "elmo" else "transformers.models."
        assert tokenizer_module.startswith(expected_tokenizer), tokenizer_module
        remote = load_file(tmp_path / f"{repo_id.replace('/', '--')}.safetensors")
        _assert_identical(remote, _outputs(model, tokenizer), f"{family} through remote code")


def test_pull_by_commit_sha_branch_and_tag(tiny_models, hub_env, tmp_path):
    model, tokenizer = tiny_models["gpt"]
    repo_id = "tester/versions"
    first = _push(model, tokenizer, repo_id)
    retrained = hfcm.HfcmGptForCausalLM(model.config).eval()
    second = _push(retrained, tokenizer, repo_id, commit_message="second")
    assert first != second
    HfApi().create_tag(repo_id, tag="v1", revision=first)

    experiment = tmp_path / "experiment"
    branch_model = hfcm.HfcmGptForCausalLM(model.config).eval()
    branch_model.save_pretrained(experiment)
    tokenizer.save_pretrained(experiment)
    push_folder(str(experiment), repo_id, revision="experiment", commit_message="an experiment")

    expected = {"main": retrained, first: model, "v1": model, "experiment": branch_model}
    for revision, source in expected.items():
        pulled = AutoModelForCausalLM.from_pretrained(repo_id, revision=revision).eval()
        _assert_identical(_outputs(pulled, tokenizer), _outputs(source, tokenizer), f"revision {revision}")
    branch_card = ModelCard.load(hf_hub_download(repo_id, "README.md", revision="experiment"))
    assert "hfcm_gpt" in branch_card.data.tags and (experiment / "README.md").is_file()


def test_private_repo_needs_the_owners_token(tiny_models, hub_env, hub_server, tmp_path):
    model, tokenizer = tiny_models["bert"]
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    push_folder(str(tmp_path), "tester/private", private=True)
    assert HfApi().model_info("tester/private").private

    for token in (False, hub_server.other_token):
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("tester/private", "config.json", token=token)
        with pytest.raises(OSError):
            AutoModelForMaskedLM.from_pretrained("tester/private", token=token)
    pulled = AutoModelForMaskedLM.from_pretrained("tester/private").eval()  # HF_TOKEN: the owner's
    _assert_identical(_outputs(pulled, tokenizer), _outputs(model, tokenizer), "private pull")


def test_hfcm_push_writes_a_card_and_keeps_a_card_of_your_own(tiny_models, hub_env, hub_server, tmp_path, capsys,
                                                              caplog):
    model, tokenizer = tiny_models["elmo"]
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    write_model_card(str(tmp_path), training={"datasets": ["tang300"], "metrics": {"eval_loss": 4.5}})
    assert hfcm_main(["push", str(tmp_path), "tester/cli", "--commit-message", "from the cli"]) == 0
    assert "Pushed" in capsys.readouterr().out
    card = ModelCard.load(hf_hub_download("tester/cli", "README.md"))
    assert card.data.tags == ["hf_course_models", "hfcm_elmo", "elmo", "custom_code"]
    assert card.data.eval_results[0].metric_value == 4.5 and card.data.datasets == ["tang300"]  # record kept
    assert 'AutoModelForPreTraining.from_pretrained("tester/cli", trust_remote_code=True)' in card.text
    assert HfApi().list_repo_commits("tester/cli")[0].title == "from the cli"

    (tmp_path / "README.md").write_text("# My own notes\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="hf_course_models.hub"):
        assert hfcm_main(["push", str(tmp_path), "tester/cli"]) == 0
    assert "Keeping your own" in caplog.text
    assert Path(hf_hub_download("tester/cli", "README.md")).read_text(encoding="utf-8") == "# My own notes\n"
    assert hfcm_main(["push", str(tmp_path / "missing"), "tester/cli"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not _files_containing(hub_server.token, tmp_path, os.environ["HF_HOME"])
    assert hub_server.token not in caplog.text


# ---------------------------------------------------------------- checkpoint pushes


class DroppingProxy:
    """A TCP proxy to the Hub server that drops (accepts, then closes) its first `drops` connections."""

    def __init__(self, target_port, drops):
        self.drops = drops
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.drops > 0:
                self.drops -= 1
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture
def checkpoint(tiny_models, tmp_path):
    model, tokenizer = tiny_models["gpt"]
    directory = tmp_path / "checkpoint-10"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _through(proxy, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", proxy.endpoint)


def test_checkpoint_pusher_retries_dropped_connections_then_pushes(checkpoint, hub_env, hub_server, monkeypatch,
                                                                   caplog):
    proxy = DroppingProxy(int(hub_server.endpoint.rsplit(":", 1)[1]), drops=2)
    _through(proxy, monkeypatch)
    before = {path.name: path.read_bytes() for path in checkpoint.iterdir()}
    with caplog.at_level(logging.INFO, logger="hf_course_models.hub"):
        pusher = CheckpointPusher("tester/checkpoints", token=hub_server.token, max_retries=3, retry_delay=0.05)
        pusher.push(str(checkpoint), "step 10")
        failures = pusher.close(timeout=60)
    proxy.close()
    assert failures == []
    assert caplog.text.count("retrying") == 2, caplog.text
    assert HfApi(endpoint=hub_server.endpoint).list_repo_commits("tester/checkpoints")[0].title == "step 10"
    assert {path.name: path.read_bytes() for path in checkpoint.iterdir()} == before  # the local checkpoint, as is
    card = Path(hf_hub_download("tester/checkpoints", "README.md", endpoint=hub_server.endpoint)).read_text()
    assert 'from_pretrained("tester/checkpoints"' in card and not (checkpoint / "README.md").exists()
    assert hub_server.token not in caplog.text


def test_checkpoint_pusher_reports_a_server_that_keeps_dropping_and_training_goes_on(checkpoint, hub_env,
                                                                                     hub_server, monkeypatch,
                                                                                     caplog):
    proxy = DroppingProxy(int(hub_server.endpoint.rsplit(":", 1)[1]), drops=10**6)
    _through(proxy, monkeypatch)
    pusher = CheckpointPusher("tester/unreachable", token=hub_server.token, max_retries=2, retry_delay=0.05)
    pusher.push(str(checkpoint), "step 10")  # returns at once: the loop deletes its checkpoint right away
    for path in checkpoint.iterdir():
        path.unlink()
    checkpoint.rmdir()
    failures = pusher.close(timeout=60)
    proxy.close()
    assert len(failures) == 1 and "after 3 attempt(s)" in failures[0], failures
    assert caplog.text.count("retrying") == 2 and failures[0] in caplog.text


def test_checkpoint_pusher_reports_a_rejected_token_without_retrying_or_leaking_it(checkpoint, hub_env,
                                                                                   hub_server, caplog):
    bad_token = "hf_" + "x" * 34
    pusher = CheckpointPusher("tester/bad-token", token=bad_token, max_retries=3, retry_delay=0.05)
    pusher.push(str(checkpoint), "step 10")
    pusher.push(str(checkpoint / "missing"), "step 20")
    failures = sorted(pusher.close(timeout=60))  # the missing directory fails in `push`, the token in the thread
    pusher.push(str(checkpoint), "step 30")
    assert "came after close()" in pusher.close()[-1]
    assert len(failures) == 2, failures
    assert "missing" in failures[0] and "401" in failures[1] and "after 1 attempt(s)" in failures[1], failures
    assert "retrying" not in caplog.text
    assert checkpoint.is_dir() and (checkpoint / "model.safetensors").is_file()
    assert bad_token not in caplog.text and hub_server.token not in caplog.text

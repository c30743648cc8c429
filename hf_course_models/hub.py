"""Sharing on the Hugging Face Hub: model cards, `hfcm push`, and checkpoint pushes during training.

Pushing and pulling themselves are transformers' and huggingface_hub's own (`push_to_hub`, `from_pretrained`,
`HfApi.upload_folder`): every save of our models already writes their code and `auto_map` (see
`registry.save_remote_code`), so a repo loads with `trust_remote_code=True` where this package is not installed.
This module adds what those do not do: a model card from the config and the training record, and uploads that
run beside the training loop without ever stopping it.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import re
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "model_cards"
# model_type -> card template (one per architecture, in the package so an installed copy finds them)
CARD_TEMPLATES = {"hfcm_bert": "bert.md", "hfcm_gpt": "gpt.md", "hfcm_elmo": "elmo.md"}
# The end of a saved class's name -> the Hub's pipeline tag (None: no pipeline serves that head).
HEAD_PIPELINE_TAGS = {
    "ForMaskedLM": "fill-mask",
    "BertForPreTraining": "fill-mask",
    "ForCausalLM": "text-generation",
    "DoubleHeadsModel": "text-generation",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMultipleChoice": "multiple-choice",
    "ForNextSentencePrediction": None,
    "ForBidirectionalLM": "feature-extraction",
    "Model": "feature-extraction",
}
# `hfcm finetune` task names that are not pipeline tags themselves.
TASK_PIPELINE_TAGS = {"sequence-classification": "text-classification"}
# Marks a card as generated here and keeps the training record, so a push can rewrite the card with the repo
# id without losing it; a README.md without it is the user's own and is never replaced.
CARD_MARKER = "hf_course_models:model-card"
_CARD_RECORD = re.compile(rf"<!-- {CARD_MARKER} (.*?) -->", re.DOTALL)
_SECRET_SETTING = re.compile(r"token|secret|password", re.IGNORECASE)
CHECKPOINT_PATTERNS = ["checkpoint-*", ".*"]  # never uploaded with a model directory


def write_model_card(directory: str, training: dict | None = None, *, repo_id: str | None = None) -> ModelCard:
    """Write `directory/README.md`: a model card from the saved config, the weights and the training record.

    `training` may hold "datasets" (list of names), "language" (list of codes), "settings" (dict), "metrics"
    (dict of floats, written as eval results), "task" (a pipeline tag or an `hfcm finetune` task) and "license"
    (default: apache-2.0, the package's). Settings whose name mentions a token, secret or password are left out.
    `repo_id` is the name the loading examples use (default: the directory as given).
    """
    config = _read_config(directory)
    template = CARD_TEMPLATES[config["model_type"]]
    training = _public_record(training or {})
    architecture_class = (config.get("architectures") or ["Model"])[0]
    pipeline_tag = _pipeline_tag(architecture_class, training.get("task"))
    model_id = repo_id or str(directory)
    datasets, language = _as_list(training.get("datasets")), _as_list(training.get("language"))
    metrics = {name: float(value) for name, value in (training.get("metrics") or {}).items()
               if isinstance(value, (int, float)) and math.isfinite(value)}
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["hf_course_models", config["model_type"], template.removesuffix(".md"), "custom_code"],
        language=language or None,
        license=training.get("license", "apache-2.0"),
        datasets=datasets or None,
        model_name=model_id,
        eval_results=[
            EvalResult(task_type=pipeline_tag or "feature-extraction", dataset_type=(datasets or ["custom"])[0],
                       dataset_name=(datasets or ["custom"])[0], metric_type=name, metric_value=value)
            for name, value in metrics.items()
        ] or None,
    )
    training_section = _render(TEMPLATES / "training.md", datasets=datasets, language=language,
                               settings=sorted(training.get("settings", {}).items()), metrics=metrics.items())
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / template),
        model_id=model_id,
        architecture_class=architecture_class,
        auto_class=_auto_class_name(architecture_class),
        architecture=_architecture_rows(config, directory),
        training_section=training_section,
        max_positions=config.get("max_position_embeddings"),
        vocab_size=config.get("vocab_size"),
        generation="GPT-1-style (post-LayerNorm)" if config.get("layer_norm_position") == "post"
        else "GPT-2-style (pre-LayerNorm)",
        layer_norm="LayerNorm after each sub-layer" if config.get("layer_norm_position") == "post"
        else "LayerNorm before each sub-layer and after the last block",
    )
    # Keeps ">" out of the comment so no value can close it early.
    record = json.dumps({"training": training}, ensure_ascii=False, default=str).replace(">", "\\u003e")
    card.text = f"{card.text.rstrip()}\n\n<!-- {CARD_MARKER} {record} -->\n"
    card.save(Path(directory) / "README.md")
    return card


def push_folder(directory: str, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None, token: str | None = None) -> str:
    """Upload a saved model directory to `repo_id` (created if missing) and return the commit's URL.

    A model card is written first when README.md is missing, and a card written here is refreshed so that its
    examples name `repo_id`; a README.md of your own is uploaded unchanged (the log says so). `revision` names a
    branch, created from main if missing. Sub-directories named `checkpoint-*` and hidden files stay local.
    """
    config = _read_config(directory)
    if "auto_map" not in config:
        logger.warning("%s has no auto_map: it will load only where hf_course_models is installed. Re-save it "
                       "with save_pretrained from this package to include the modeling code.", directory)
    refresh_model_card(directory, repo_id)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        folder_path=directory, repo_id=repo_id, revision=revision, ignore_patterns=CHECKPOINT_PATTERNS,
        commit_message=commit_message or f"Upload {config['model_type']} model with hf_course_models",
    )
    return commit.commit_url


def refresh_model_card(directory: str, repo_id: str) -> str:
    """Make `directory/README.md` name `repo_id`: "written", "refreshed", or "kept" (the user's own card)."""
    path = Path(directory) / "README.md"
    if not path.exists():
        write_model_card(directory, repo_id=repo_id)
        logger.info("Wrote a model card to %s", path)
        return "written"
    record = _CARD_RECORD.search(path.read_text(encoding="utf-8"))
    if record is None:
        logger.warning("Keeping your own %s: it was not written by hf_course_models, so it is uploaded as it is.",
                       path)
        return "kept"
    write_model_card(directory, json.loads(record.group(1))["training"], repo_id=repo_id)
    return "refreshed"


class CheckpointPusher:
    """Uploads checkpoints to one Hub repo in a background thread, so the training loop never waits or fails.

    `push` copies the checkpoint into a private staging directory and returns: the loop may then rotate or delete
    its own files. (A copy, not hard links: a later save into the same directory rewrites files in place, which
    would change a hard-linked snapshot mid-upload; the copy costs what the save just did.) Uploads run one at a
    time in order; a connection error, timeout, 5xx or 429 is retried up to `max_retries` times with doubling
    delays from `retry_delay` seconds; other errors (a bad token, no write access) cannot succeed on retry and
    are reported at once. Every failure is logged with `logger.warning` and returned by `close`. Nothing here
    raises into the caller, and the caller's files are never touched.
    """

    def __init__(self, repo_id: str, *, private: bool = False, token: str | None = None, max_retries: int = 3,
                 retry_delay: float = 2.0):
        self.repo_id = repo_id
        self.private = private
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self._api = HfApi(token=token)
        self._repo_ready = False
        self._failures: list[str] = []
        self._pending: queue.Queue = queue.Queue()
        self._staging = Path(tempfile.mkdtemp(prefix="hfcm-push-"))
        self._count = 0
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=f"hfcm-push {repo_id}", daemon=True)
        self._worker.start()

    def push(self, directory: str, commit_message: str) -> None:
        """Snapshot `directory` and queue its upload; returns at once."""
        if self._closed:
            self._fail(f"Push of {commit_message!r} to {self.repo_id!r} came after close(); not pushed.")
            return
        self._count += 1
        snapshot = self._staging / f"{self._count:06d}"
        try:
            shutil.copytree(directory, snapshot, ignore=shutil.ignore_patterns(*CHECKPOINT_PATTERNS))
        except Exception as err:  # a push must never stop training
            self._fail(f"Could not snapshot {directory} for {self.repo_id!r} ({commit_message!r}): {err}")
            shutil.rmtree(snapshot, ignore_errors=True)
            return
        if (snapshot / "config.json").is_file():  # a model directory (not, e.g., optimizer state alone)
            try:
                refresh_model_card(snapshot, self.repo_id)
            except Exception as err:  # the upload matters more than its card
                logger.warning("No model card for %r: %s", commit_message, err)
        self._pending.put((snapshot, commit_message))

    def close(self, timeout: float | None = None) -> list[str]:
        """Wait for the queued pushes (at most `timeout` seconds) and return the failure messages."""
        if not self._closed:
            self._closed = True
            self._pending.put(None)
        self._worker.join(timeout)
        if self._worker.is_alive():
            self._fail(f"Pushes to {self.repo_id!r} still running after {timeout} s; left to finish in the "
                       "background.")
        else:
            shutil.rmtree(self._staging, ignore_errors=True)
        return list(self._failures)

    def _run(self):
        while (item := self._pending.get()) is not None:
            snapshot, commit_message = item
            try:
                self._upload_with_retries(snapshot, commit_message)
            finally:
                shutil.rmtree(snapshot, ignore_errors=True)

    def _upload_with_retries(self, snapshot: Path, commit_message: str):
        for attempt in range(self.max_retries + 1):
            try:
                if not self._repo_ready:
                    self._api.create_repo(self.repo_id, private=self.private, exist_ok=True)
                    self._repo_ready = True
                commit = self._api.upload_folder(folder_path=snapshot, repo_id=self.repo_id,
                                                 commit_message=commit_message)
                logger.info("Pushed %r to %s", commit_message, commit.commit_url)
                return
            except Exception as err:  # the thread must survive anything the client raises
                if not _is_transient(err) or attempt == self.max_retries:
                    tries = f"after {attempt + 1} attempt(s)"
                    self._fail(f"Push of {commit_message!r} to {self.repo_id!r} failed {tries}: {_describe(err)}")
                    return
                delay = self.retry_delay * 2 ** attempt
                logger.warning("Push of %r to %r failed (%s); retrying in %.1f s.", commit_message, self.repo_id,
                               _describe(err), delay)
                time.sleep(delay)

    def _fail(self, message: str):
        self._failures.append(message)
        logger.warning(message)


def _is_transient(err: Exception) -> bool:
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        return status >= 500 or status in (408, 429)
    # httpx's (or, from huggingface_hub 2, httpx2's) TransportError: refused or dropped connections, timeouts
    return isinstance(err, (ConnectionError, TimeoutError)) or any(
        cls.__name__ == "TransportError" for cls in type(err).__mro__)


def _describe(err: Exception) -> str:
    if isinstance(err, HfHubHTTPError) and err.response is not None and err.response.status_code == 401:
        return (f"{type(err).__name__}: the token was rejected (401); log in again with `hf auth login` or set "
                "HF_TOKEN to a token with write access")
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first_line}"


def _read_config(directory) -> dict:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise OSError(f"{directory} has no config.json: save a model there with save_pretrained (or `hfcm pretrain`) "
                      "first.")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("model_type") not in CARD_TEMPLATES:
        raise ValueError(f"{path} has model_type {config.get('model_type')!r}; hf_course_models writes cards for "
                         f"{', '.join(CARD_TEMPLATES)} only.")
    return config


def _public_record(training: dict) -> dict:
    """The training record without settings that could hold credentials."""
    settings = {name: value for name, value in (training.get("settings") or {}).items()
                if not _SECRET_SETTING.search(name)}
    return {**training, "settings": settings}


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _pipeline_tag(architecture_class: str, task: str | None) -> str | None:
    """The pipeline tag of a fine-tuning `task`, else of the saved head."""
    task = TASK_PIPELINE_TAGS.get(task, task)
    if task is not None and task in HEAD_PIPELINE_TAGS.values():
        return task
    for ending, tag in HEAD_PIPELINE_TAGS.items():
        if architecture_class.endswith(ending):
            return tag
    return None


def _auto_class_name(architecture_class: str) -> str:
    """The Auto class that loads this head (GPT's double heads load as the causal LM they contain)."""
    from .registry import ARCHITECTURES

    for _, models, _ in ARCHITECTURES:
        for auto_class, model_class in models.items():
            if model_class.__name__ == architecture_class:
                return auto_class.__name__
    return "AutoModelForCausalLM" if architecture_class.endswith("DoubleHeadsModel") else "AutoModel"


def _architecture_rows(config: dict, directory) -> list[tuple[str, str]]:
    rows = [("Parameters", _parameter_count(directory))]
    rows += [(name, f"`{config[name]}`") for name in (
        "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings",
        "vocab_size", "hidden_act", "layer_norm_position", "char_filters", "num_highway_layers",
        "num_output_representations", "cell_clip", "proj_clip", "hidden_dropout_prob",
        "attention_probs_dropout_prob") if name in config]
    return rows


def _parameter_count(directory) -> str:
    """Parameters stored in the safetensors files, read from their headers (tied weights count once)."""
    total = 0
    for path in sorted(Path(directory).glob("*.safetensors")):
        with open(path, "rb") as file:
            (header_size,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(header_size))
        total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    if total == 0:
        return "unknown (no safetensors weights)"
    return f"{total / 1e6:.1f}M" if total >= 1e5 else f"{total:,}"


def _render(path: Path, **variables) -> str:
    return jinja2.Template(path.read_text(encoding="utf-8"), keep_trailing_newline=True).render(**variables)

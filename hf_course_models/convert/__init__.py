"""`hfcm convert`: other libraries' checkpoints to ours and back, chosen by the source's `model_type`."""
import json
from pathlib import Path

from . import bert, elmo, gpt

# (the source's config.json `model_type`, `to`) -> converter(src_dir, out_dir) returning out_dir.
CONVERTERS = {
    ("bert", "hfcm"): bert.convert_transformers_bert,
    ("hfcm_bert", "transformers"): bert.export_to_transformers,
    ("gpt2", "hfcm"): gpt.convert_transformers_gpt,
    ("openai-gpt", "hfcm"): gpt.convert_transformers_gpt,
    ("hfcm_gpt", "transformers"): gpt.export_to_transformers,  # pre-LN -> GPT-2, post-LN (GPT-1) -> OpenAI-GPT
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def convert_checkpoint(src, out, *, to="hfcm"):
    """Convert the checkpoint directory `src` into `out` (`to="hfcm"`: ours; `"transformers"`: theirs).

    `src` may also be an AllenNLP / bilm-tf ELMo pair (options.json, weights.hdf5), converted to ours.
    """
    if isinstance(src, (list, tuple)):
        return _convert_elmo_pair(src, out, to)
    src = Path(src)
    if not src.is_dir():
        raise OSError(f"Checkpoint directory {src} does not exist.")
    if not (src / "config.json").is_file():
        raise OSError(f"{src} holds no config.json: pass a directory written by save_pretrained.")
    if not any((src / name).is_file() for name in WEIGHT_FILES):
        raise OSError(f"{src} holds no {' or '.join(WEIGHT_FILES)}: only safetensors weights are read (nothing "
                      "is unpickled); re-save the model with save_pretrained, which writes safetensors.")
    model_type = json.loads((src / "config.json").read_text(encoding="utf-8")).get("model_type")
    converter = CONVERTERS.get((model_type, to))
    if converter is None:
        supported = ", ".join(f"{source!r} to {target!r}" for source, target in CONVERTERS)
        raise ValueError(f"Cannot convert model_type {model_type!r} (in {src / 'config.json'}) to {to!r}; "
                         f"supported: {supported}.")
    return converter(src, out)


def _convert_elmo_pair(paths, out, to):
    if len(paths) != 2 or Path(paths[0]).suffix != ".json":
        raise ValueError(f"Expected an ELMo options.json followed by its weights.hdf5, got {[str(p) for p in paths]}.")
    if to != "hfcm":
        raise ValueError(f"AllenNLP ELMo weights convert only to ours (to='hfcm'), not to {to!r}.")
    return elmo.convert_allennlp_elmo(*paths, out)

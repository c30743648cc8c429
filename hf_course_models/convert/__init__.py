"""`hfcm convert`: other libraries' checkpoints to ours and back, chosen by the source's `model_type`."""
import json
from pathlib import Path

from . import bert

# (the source's config.json `model_type`, `to`) -> converter(src_dir, out_dir) returning out_dir.
CONVERTERS = {
    ("bert", "hfcm"): bert.convert_transformers_bert,
    ("hfcm_bert", "transformers"): bert.export_to_transformers,
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def convert_checkpoint(src, out, *, to="hfcm"):
    """Convert the checkpoint directory `src` into `out` (`to="hfcm"`: ours; `"transformers"`: theirs)."""
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

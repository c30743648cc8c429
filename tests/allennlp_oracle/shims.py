"""Make `from allennlp.modules.elmo import _ElmoBiLm` work in this process, against the global torch.

Two import-time obstacles, neither on the ELMo code path:
- `allennlp.common` imports `allennlp.common.push_to_hf`, which imports `HfFolder` and `Repository`, names
  huggingface_hub 1.x removed. A stand-in module takes its place (huggingface_hub itself is left untouched,
  since our own code in the same process uses it).
- torchvision, which allennlp's vision modules import: the PyPI build does not match the CPU torch, and an
  unpinned install pulls torch with CUDA. A stand-in module is registered so it is never imported for real.
"""
import sys
import types
from pathlib import Path

GLOBAL_LIBRARIES = ("torch", "numpy", "transformers", "huggingface_hub", "h5py")


class _StandIn(types.ModuleType):
    """A module that fails loudly, naming itself, when anything in it is used."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{self.__name__}.{name}: this module is a stand-in installed by "
                             "tests/allennlp_oracle/shims.py, and the AllenNLP oracle never uses it.")


def _push_to_hf_stand_in():
    module = _StandIn("allennlp.common.push_to_hf")

    def push_to_hf(*args, **kwargs):
        raise NotImplementedError("allennlp.common.push_to_hf is stubbed out by the oracle's import shims.")

    module.push_to_hf = push_to_hf
    return module


def activate(environment):
    """Append the oracle environment to sys.path (after site-packages, so the global torch, numpy and
    transformers win over anything there) and register the stand-ins. Call before importing allennlp."""
    path = str(environment)
    if path not in sys.path:
        sys.path.append(path)
    # With Pillow installed, transformers asks importlib whether torchvision exists, which raises for a stand-in
    # without a module spec: let it find out (and cache) that torchvision is absent before the stand-in appears.
    from transformers.utils.import_utils import is_torchvision_available
    is_torchvision_available()
    sys.modules.setdefault("torchvision", _StandIn("torchvision"))
    sys.modules.setdefault("allennlp.common.push_to_hf", _push_to_hf_stand_in())


def library_origins(environment):
    """{library: (version, file)} of the libraries that must come from the global environment; raises
    ImportError if any was imported from the oracle's directory instead."""
    origins = {}
    for name in GLOBAL_LIBRARIES:
        module = __import__(name)
        origins[name] = (module.__version__, module.__file__)
        if Path(module.__file__).resolve().is_relative_to(Path(environment).resolve()):
            raise ImportError(f"{name} was imported from the oracle environment ({module.__file__}); the global "
                              "one must win: the environment belongs at the end of sys.path.")
    return origins

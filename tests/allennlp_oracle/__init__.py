"""AllenNLP's `_ElmoBiLm` as an independent oracle for our ELMo.

- `environment`: AllenNLP 2.10.1 installed with `--no-deps` into a private, cached directory.
- `shims`: the import stand-ins it needs on Python 3.11 / torch 2.13 / huggingface_hub 1.x.
- `runner`: runs `_ElmoBiLm` in a subprocess (`run_elmo_bilm` here), so the tests' process never imports it.
- `weights`: random weights in bilm-tf's hdf5 layout for any options dict.
`import_allennlp_elmo` imports it into the calling process instead, for the benchmark.
"""
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .environment import OracleUnavailable, ensure_environment, environment_dir, installation_record
from .shims import activate, library_origins
from .weights import CLIPS_BIND, LstmInit, random_weights, write_elmo_files, write_options

TESTS_DIR = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 600
STDERR_TAIL_CHARS = 4000


@dataclass
class OracleJob:
    """AllenNLP's `_ElmoBiLm(options_file, weight_file)` on `batches` (lists of token lists); `state`: "fresh"
    (a new module per batch) or "carried" (one module for all batches, its LSTM state carried over)."""
    options_file: str
    weight_file: str
    batches: list
    state: str = "fresh"

    def __post_init__(self):
        if self.state not in ("fresh", "carried"):
            raise ValueError(f"state={self.state!r}: use 'fresh' (a new module per batch) or 'carried'.")


@dataclass
class OracleBatch:
    char_ids: np.ndarray  # [B, T + 2, 50], BOS/EOS rows included
    mask: np.ndarray  # [B, T + 2] bool
    activations: list  # per layer [B, T + 2, 2 * projection_dim]


def run_elmo_bilm(jobs):
    """Run each OracleJob in one subprocess of the oracle environment, eval mode, no gradients.

    Returns ([[OracleBatch per batch] per job], {library: [version, file]} as the subprocess imported them).
    Raises OracleUnavailable if the environment cannot be installed, RuntimeError if AllenNLP fails."""
    environment = ensure_environment()
    with tempfile.TemporaryDirectory(prefix="allennlp-oracle-") as scratch:
        request_path, result_path = Path(scratch) / "request.json", Path(scratch) / "result.npz"
        request = {"environment": str(environment), "jobs": [
            {"options_file": str(Path(job.options_file).resolve()), "weight_file": str(Path(job.weight_file).resolve()),
             "batches": job.batches, "state": job.state}
            for job in jobs
        ]}
        request_path.write_text(json.dumps(request), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "allennlp_oracle.runner", str(request_path), str(result_path)],
            cwd=TESTS_DIR, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise RuntimeError(f"AllenNLP's _ElmoBiLm failed in the oracle environment {environment} (exit "
                               f"{result.returncode}); stderr tail:\n{result.stderr[-STDERR_TAIL_CHARS:]}")
        with np.load(result_path) as saved:
            outputs = [[_batch(saved, f"j{j}_b{b}_") for b in range(len(job.batches))] for j, job in enumerate(jobs)]
            libraries = json.loads(str(saved["libraries"]))
    return outputs, libraries


def _batch(saved, prefix):
    layers = sum(name.startswith(f"{prefix}layer") for name in saved.files)
    return OracleBatch(saved[f"{prefix}char_ids"], saved[f"{prefix}mask"],
                       [saved[f"{prefix}layer{k}"] for k in range(layers)])


def import_allennlp_elmo():
    """`(_ElmoBiLm, batch_to_ids)` imported into this process (oracle environment at the end of sys.path).

    Raises OracleUnavailable if the environment cannot be installed."""
    environment = ensure_environment()
    activate(environment)
    from allennlp.modules.elmo import _ElmoBiLm, batch_to_ids

    library_origins(environment)
    return _ElmoBiLm, batch_to_ids


__all__ = [
    "CLIPS_BIND", "LstmInit", "OracleBatch", "OracleJob", "OracleUnavailable", "ensure_environment", "environment_dir", "import_allennlp_elmo",
    "installation_record", "random_weights", "run_elmo_bilm", "write_elmo_files", "write_options",
]

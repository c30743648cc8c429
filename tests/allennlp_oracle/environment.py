"""The oracle's private environment: AllenNLP 2.10.1 and what its ELMo code imports, in a target directory.

AllenNLP is unmaintained and pins torch < 1.13, transformers < 4.21 and friends, so it is installed with
`--no-deps` into its own directory (never into the global environment) together with a pinned list of the
packages `from allennlp.modules.elmo import _ElmoBiLm` imports that the global environment lacks. torch,
numpy, transformers, huggingface_hub, h5py, dill, requests, tqdm, pydantic, typer and boto3 are not in the
list: the global ones are used (the directory goes at the *end* of sys.path, see `shims.activate`).

The directory is `~/.cache/hf_course_models/allennlp-oracle-<hash of the list and the Python version>/`. It is
built in a staging directory beside it and renamed into place only when pip succeeded, under a file lock: a
concurrent run waits and reuses it, and an interrupted install leaves no half-built environment behind.
"""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

PINNED = (
    "allennlp==2.10.1",
    "fairscale==0.4.13",  # allennlp.nn imports it
    # `import allennlp` imports spaCy; 3.8 has Python 3.11 wheels built against numpy 2.
    "spacy==3.8.18",
    "thinc==8.3.14",
    "blis==1.3.4",
    "cymem==2.0.16",
    "preshed==3.0.15",
    "murmurhash==1.0.16",
    "srsly==2.5.6",
    "catalogue==2.0.10",
    "confection==1.3.4",
    "wasabi==1.1.3",
    "weasel==1.0.1",
    "httpx==0.28.1",
    # allennlp.common.file_utils imports cached_path, whose gs:// scheme imports google-cloud-storage.
    "cached-path==1.8.10",
    "google-cloud-storage==3.17.1",
    "google-cloud-core==2.8.0",
    "google-resumable-media==2.11.0",
    "google-crc32c==1.9.0",
    "google-api-core==2.44.0",
    "google-auth==2.63.0",
    "googleapis-common-protos==1.76.0",
    "protobuf==7.36.2",
    "lmdb==3.0.0",
    "base58==2.1.1",
    "more-itertools==11.2.1",
)
# fairscale's sdist installs its own top-level `benchmarks` package, which could shadow ours.
STRAY_TOP_LEVEL = ("benchmarks", "bin")
MARKER = "oracle-environment.json"
PIP_TIMEOUT_S = 900
REASON_TAIL_CHARS = 1500


class OracleUnavailable(RuntimeError):
    """The oracle environment could not be installed (no network, pip failure): tests skip with this reason."""


def environment_dir():
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    digest = hashlib.sha256("\n".join((python, *PINNED)).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "hf_course_models" / f"allennlp-oracle-{digest}"


def installation_record(directory):
    """What the marker file says: the pinned list, the install's duration and date."""
    return json.loads((Path(directory) / MARKER).read_text(encoding="utf-8"))


@contextmanager
def _exclusive_lock(path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _pip_install(staging):
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(staging), "--no-input",
               "--disable-pip-version-check", "--no-warn-script-location", "--prefer-binary", *PINNED]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        tail = (error.stderr or b"")[-REASON_TAIL_CHARS:]
        raise OracleUnavailable(f"pip install of the AllenNLP oracle ran over {PIP_TIMEOUT_S} s; stderr tail: "
                                f"{tail.decode(errors='replace') if isinstance(tail, bytes) else tail}") from None
    if result.returncode != 0:
        raise OracleUnavailable(f"pip install of the AllenNLP oracle failed (exit {result.returncode}); "
                                f"stderr tail: {result.stderr[-REASON_TAIL_CHARS:].strip()}")


def ensure_environment():
    """The environment's directory, installed first if needed; raises OracleUnavailable if pip fails."""
    target = environment_dir()
    if (target / MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f"{target.name}.lock"):
        if (target / MARKER).exists():  # another process installed it while we waited for the lock
            return target
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.staging-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp's 0o700 would hide the environment from other users of the cache
        try:
            start = time.perf_counter()
            _pip_install(staging)
            for name in STRAY_TOP_LEVEL:
                shutil.rmtree(staging / name, ignore_errors=True)
            record = {"pinned": list(PINNED), "python": sys.version.split()[0],
                      "install_seconds": round(time.perf_counter() - start, 1),
                      "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (staging / MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")
            if target.exists():  # left by something else without a marker: not a usable environment
                shutil.rmtree(target)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target

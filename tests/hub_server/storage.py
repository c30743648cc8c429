"""On-disk storage of the local Hub: content-addressed blobs, immutable commits, movable refs.

Layout under the storage root::

    tokens.json                              token -> user name (created once, kept across restarts)
    objects/<sha256[:2]>/<sha256>            file contents, shared by every repo (like the Hub's LFS/CDN store)
    repos/<type>s/<namespace>/<name>/
        repo.json                            {"private", "owner", "createdAt"}
        refs.json                            {"heads": {branch: sha}, "tags": {tag: sha}}
        commits/<sha>.json                   {"tree", "parents", "title", "message", "author", "date"}

Every file is written to a temporary name and renamed into place, and a commit's ref moves only
after the commit file is stored, so a reader never sees a half-written object or a partial commit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# The .gitattributes the Hub writes into the initial commit of a new model repo (abridged): it decides,
# together with the 10 MiB size limit, which files go through LFS.
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.hdf5 filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
REPO_TYPES = ("model", "dataset")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as `oid`/`blobId` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write_json(path: Path, value) -> None:
    _write_atomically(path, json.dumps(value, indent=1, sort_keys=True).encode())


def valid_name(name: str | None) -> bool:
    return bool(name) and _NAME.match(name) is not None and not name.endswith((".git", "."))


@dataclass(frozen=True)
class Entry:
    """One file of a commit's tree."""

    path: str
    sha256: str
    size: int
    lfs: bool
    oid: str  # git blob sha1 of the content (regular file) or of the LFS pointer (LFS file)

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "size": self.size, "lfs": self.lfs, "oid": self.oid}


@dataclass(frozen=True)
class Commit:
    sha: str
    tree: dict[str, Entry]
    parents: list[str]
    title: str
    message: str
    author: str
    date: str


class ConflictError(Exception):
    """The branch moved since the client read it (parentCommit mismatch)."""


class Storage:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.repos = self.root / "repos"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.repos.mkdir(parents=True, exist_ok=True)
        # One writer at a time for refs and repo creation/deletion; readers need no lock.
        self.lock = threading.RLock()

    # -- tokens ---------------------------------------------------------------------------------
    def tokens(self, users: tuple[str, ...]) -> dict[str, str]:
        """user -> token, created on first use and kept in tokens.json so restarts keep them."""
        path = self.root / "tokens.json"
        with self.lock:
            by_user = json.loads(path.read_text()) if path.exists() else {}
            missing = [user for user in users if user not in by_user]
            for user in missing:
                by_user[user] = "hf_" + uuid.uuid4().hex
            if missing:
                _write_json(path, by_user)
        return by_user

    # -- blobs ----------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha256):
            _write_atomically(self.blob_path(sha256), data)
        return sha256

    def put_blob_from_stream(self, chunks, expected_sha256: str, expected_size: int) -> None:
        """Store streamed bytes only if they hash to `expected_sha256`; a cut stream stores nothing."""
        target = self.blob_path(expected_sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
            if digest.hexdigest() != expected_sha256 or size != expected_size:
                raise ValueError(
                    f"uploaded content has sha256 {digest.hexdigest()} and size {size}, "
                    f"expected {expected_sha256} and {expected_size}"
                )
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    # -- repos ----------------------------------------------------------------------------------
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.repos / f"{repo_type}s" / repo_id

    def repo_meta(self, repo_type: str, repo_id: str) -> dict | None:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def create_repo(self, repo_type: str, repo_id: str, owner: str, private: bool) -> bool:
        """Create the repo with the Hub's initial commit (.gitattributes); False if it already exists."""
        with self.lock:
            directory = self.repo_dir(repo_type, repo_id)
            if (directory / "repo.json").exists():
                return False
            staging = directory.parent / f".creating-{directory.name}-{uuid.uuid4().hex}"
            gitattributes = DEFAULT_GITATTRIBUTES.encode()
            entry = Entry(".gitattributes", self.put_blob(gitattributes), len(gitattributes), False,
                          git_blob_sha1(gitattributes))
            sha = self._store_commit(staging, {".gitattributes": entry}, [], "initial commit", "", owner)
            _write_json(staging / "refs.json", {"heads": {"main": sha}, "tags": {}})
            _write_json(staging / "repo.json", {"private": private, "owner": owner, "createdAt": _now()})
            if directory.exists():  # leftovers of an interrupted delete
                shutil.rmtree(directory)
            os.replace(staging, directory)
            return True

    def delete_repo(self, repo_type: str, repo_id: str) -> bool:
        with self.lock:
            directory = self.repo_dir(repo_type, repo_id)
            if not (directory / "repo.json").exists():
                return False
            trash = directory.parent / f".deleting-{directory.name}-{uuid.uuid4().hex}"
            os.replace(directory, trash)
        shutil.rmtree(trash)
        return True

    def list_repos(self, repo_type: str) -> list[str]:
        base = self.repos / f"{repo_type}s"
        return sorted(
            f"{ns.name}/{repo.name}"
            for ns in (base.iterdir() if base.exists() else [])
            for repo in ns.iterdir()
            if (repo / "repo.json").exists()
        )

    # -- refs and commits -------------------------------------------------------------------------
    def refs(self, repo_type: str, repo_id: str) -> dict[str, dict[str, str]]:
        return json.loads((self.repo_dir(repo_type, repo_id) / "refs.json").read_text())

    def _set_refs(self, repo_type: str, repo_id: str, refs: dict) -> None:
        _write_json(self.repo_dir(repo_type, repo_id) / "refs.json", refs)

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        """Branch, tag, refs/heads/x, refs/tags/x or full commit sha -> commit sha (None if unknown)."""
        refs = self.refs(repo_type, repo_id)
        if revision.startswith("refs/heads/"):
            return refs["heads"].get(revision[len("refs/heads/"):])
        if revision.startswith("refs/tags/"):
            return refs["tags"].get(revision[len("refs/tags/"):])
        if revision in refs["heads"]:
            return refs["heads"][revision]
        if revision in refs["tags"]:
            return refs["tags"][revision]
        if _FULL_SHA.match(revision) and self._commit_path(repo_type, repo_id, revision).exists():
            return revision
        return None

    def _commit_path(self, repo_type: str, repo_id: str, sha: str) -> Path:
        return self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json"

    def commit(self, repo_type: str, repo_id: str, sha: str) -> Commit:
        data = json.loads(self._commit_path(repo_type, repo_id, sha).read_text())
        tree = {path: Entry(path, **fields) for path, fields in data["tree"].items()}
        return Commit(sha, tree, data["parents"], data["title"], data["message"], data["author"], data["date"])

    def history(self, repo_type: str, repo_id: str, sha: str) -> list[Commit]:
        """First-parent history, newest first."""
        commits = []
        while sha:
            commit = self.commit(repo_type, repo_id, sha)
            commits.append(commit)
            sha = commit.parents[0] if commit.parents else None
        return commits

    def _store_commit(self, repo_dir: Path, tree: dict[str, Entry], parents: list[str], title: str,
                      message: str, author: str) -> str:
        body = {
            "tree": {path: entry.to_json() for path, entry in sorted(tree.items())},
            "parents": parents, "title": title, "message": message, "author": author, "date": _now(),
        }
        # Like git, the id hashes the whole content (tree, parents, message, author, time).
        sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode() + uuid.uuid4().bytes).hexdigest()
        _write_json(repo_dir / "commits" / f"{sha}.json", body)
        return sha

    def add_commit(self, repo_type: str, repo_id: str, branch: str, tree: dict[str, Entry], title: str,
                   message: str, author: str, parent_commit: str | None) -> str:
        """Store a commit on top of `branch`, then move the branch; ConflictError if it moved meanwhile."""
        with self.lock:
            refs = self.refs(repo_type, repo_id)
            head = refs["heads"][branch]
            if parent_commit is not None and parent_commit != head:
                raise ConflictError(f"branch {branch!r} is at {head}, not at parentCommit {parent_commit}")
            sha = self._store_commit(self.repo_dir(repo_type, repo_id), tree, [head], title, message, author)
            refs["heads"][branch] = sha
            self._set_refs(repo_type, repo_id, refs)
            return sha

    def set_ref(self, repo_type: str, repo_id: str, kind: str, name: str, sha: str | None) -> None:
        """kind: "heads" or "tags"; sha None deletes the ref."""
        with self.lock:
            refs = self.refs(repo_type, repo_id)
            if sha is None:
                refs[kind].pop(name, None)
            else:
                refs[kind][name] = sha
            self._set_refs(repo_type, repo_id, refs)

    def is_lfs_path(self, tree: dict[str, Entry], path: str, size: int, sample: bytes) -> bool:
        """The Hub's rule: large files, files matched by an lfs pattern in .gitattributes, binary files."""
        if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return True
        attributes = tree.get(".gitattributes")
        if attributes is None:
            return False
        for line in self.read_blob(attributes.sha256).decode("utf-8", "replace").splitlines():
            pattern, *attrs = line.split() or [""]
            if "filter=lfs" not in attrs:
                continue
            target = path if "/" in pattern else path.rsplit("/", 1)[-1]
            if fnmatch.fnmatchcase(target, pattern):
                return True
        return False

"""HTTP front of the local Hub: the routes, status codes and headers huggingface_hub 2.4 relies on.

Each route mirrors what `huggingface_hub` (hf_api.py, _commit_api.py, lfs.py, file_download.py) sends
and how `hf_raise_for_status` turns answers into exceptions: 404 + `X-Error-Code: RepoNotFound /
RevisionNotFound / EntryNotFound`, 401 + `X-Error-Message: Invalid credentials in Authorization header`
for a bad token, 403 for writing into someone else's namespace, 409 for an existing repo/branch/tag.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .storage import (
    LFS_SIZE_THRESHOLD,
    REPO_TYPES,
    ConflictError,
    Entry,
    Storage,
    git_blob_sha1,
    lfs_pointer,
    valid_name,
)

logger = logging.getLogger("hub_server")

INVALID_TOKEN = "Invalid credentials in Authorization header"
TREE_PAGE_SIZE = 1000
_READ_CHUNK = 1 << 20


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _DropConnection(Exception):
    """Raised by fault injection: the handler closes the socket without answering."""


class Faults:
    """Failures a test asks for, and what happened to LFS uploads; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = {"drop": 0, "reject": 0}
        self.lfs_uploads_dropped = 0
        self.lfs_uploads_rejected = 0
        self.lfs_uploads_stored = 0

    def set(self, *, drop_lfs_uploads: int | None = None, reject_lfs_uploads: int | None = None) -> None:
        with self._lock:
            if drop_lfs_uploads is not None:
                self._pending["drop"] = drop_lfs_uploads
            if reject_lfs_uploads is not None:
                self._pending["reject"] = reject_lfs_uploads

    def take(self) -> str | None:
        """"drop", "reject" or None for the LFS upload that just arrived."""
        with self._lock:
            for kind in ("drop", "reject"):
                if self._pending[kind] > 0:
                    self._pending[kind] -= 1
                    if kind == "drop":
                        self.lfs_uploads_dropped += 1
                    else:
                        self.lfs_uploads_rejected += 1
                    return kind
            return None

    def count_stored(self) -> None:
        with self._lock:
            self.lfs_uploads_stored += 1


class Hub:
    """State shared by all request handlers."""

    def __init__(self, storage: Storage, tokens: dict[str, str]):
        self.storage = storage
        self.user_by_token = {token: user for user, token in tokens.items()}
        self.faults = Faults()
        self.requests = collections.deque(maxlen=10_000)  # (method, path, Range header) for tests to inspect
        self._upload_secret = hashlib.sha256(b"upload-url:" + json.dumps(tokens, sort_keys=True).encode()).digest()

    def upload_signature(self, oid: str, size: int) -> str:
        return hmac.new(self._upload_secret, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    hub: Hub  # set on the subclass made by make_server

    # -- plumbing ---------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format, *args):  # request line only: headers (and so tokens) are never logged
        logger.info("%s " + format, self.address_string(), *args)

    def _dispatch(self):
        url = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        self._body_state = "unread"
        self.hub.requests.append((self.command, url.path, self.headers.get("Range")))
        segments = [unquote(part) for part in url.path.strip("/").split("/")] if url.path.strip("/") else []
        try:
            self._route(segments)
        except _DropConnection:
            # RST instead of FIN: the client sees a reset connection in the middle of its upload.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        except HubError as error:
            self._skip_body()
            headers = dict(error.headers)
            if error.code:
                headers["X-Error-Code"] = error.code
            # Header values must be one latin-1 line; the JSON body keeps the full message.
            headers["X-Error-Message"] = " ".join(error.message.split()).encode("ascii", "replace").decode()
            self._send_json(error.status, {"error": error.message}, headers)
        except Exception as error:  # a server bug must surface as a 500, never as a hung client
            logger.exception("internal error on %s %s", self.command, url.path)
            self._skip_body()
            self._send_json(500, {"error": f"internal error: {error!r}"})

    def _iter_body(self):
        """The request body in chunks (Content-Length or chunked transfer encoding)."""
        self._body_state = "reading"
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                yield self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _READ_CHUNK))
                if not chunk:
                    raise HubError(400, "request body ended early")
                remaining -= len(chunk)
                yield chunk
        self._body_state = "done"

    def _body(self) -> bytes:
        return b"".join(self._iter_body())

    def _json_body(self):
        try:
            return json.loads(self._body() or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"request body is not valid JSON: {error}") from None

    def _skip_body(self):
        """Read what is left of the body so the connection can serve the next request."""
        if self._body_state == "unread":
            for _ in self._iter_body():
                pass
        elif self._body_state == "reading":  # abandoned halfway: the stream position is lost
            self.close_connection = True

    def _send(self, status: int, body: bytes, headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, value, headers: dict | None = None):
        self._send(status, json.dumps(value).encode(), headers)

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host')}"

    # -- auth ------------------------------------------------------------------------------------
    def _user(self) -> str | None:
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        user = self.hub.user_by_token.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, INVALID_TOKEN)
        return user

    def _readable_repo(self, repo_type: str, repo_id: str) -> dict:
        """Repo metadata if the caller may read it; a private repo is invisible to others (404)."""
        user = self._user()
        meta = self.hub.storage.repo_meta(repo_type, repo_id)
        if meta is None or (meta["private"] and meta["owner"] != user):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return meta

    def _writable_repo(self, repo_type: str, repo_id: str) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repository")
        meta = self._readable_repo(repo_type, repo_id)
        if meta["owner"] != user:
            raise HubError(403, f"You don't have the rights to write to {repo_type} {repo_id}")
        return user

    def _resolve(self, repo_type: str, repo_id: str, revision: str) -> str:
        sha = self.hub.storage.resolve(repo_type, repo_id, revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _branch(self, repo_type: str, repo_id: str, revision: str) -> str:
        if revision.startswith("refs/heads/"):
            revision = revision[len("refs/heads/"):]
        if revision not in self.hub.storage.refs(repo_type, repo_id)["heads"]:
            self._resolve(repo_type, repo_id, revision)  # 404 if unknown altogether
            raise HubError(400, f"Cannot commit to {revision!r}: it is not a branch")
        return revision

    # -- routing ---------------------------------------------------------------------------------
    def _route(self, seg: list[str]):
        method = self.command
        if seg[:1] == ["api"]:
            return self._route_api(seg[1:], method)
        if seg[:1] == ["_lfs-upload"] and len(seg) == 2 and method == "PUT":
            return self._lfs_upload(seg[1])
        if seg[:1] == ["_admin"] and seg[1:] == ["faults"] and method == "POST":
            return self._set_faults()
        repo_type = "model"
        if seg[:1] == ["datasets"]:
            repo_type, seg = "dataset", seg[1:]
        if len(seg) >= 2 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{seg[0]}/{seg[1][:-len('.git')]}"
            if seg[5:] == ["batch"] and method == "POST":
                return self._lfs_batch(repo_type, repo_id)
            if seg[5:] == ["verify"] and method == "POST":
                return self._lfs_verify(repo_type, repo_id)
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve_file(repo_type, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        if len(seg) >= 4 and seg[1] == "resolve":  # a repo id without namespace: none exist here
            raise HubError(404, "Repository not found", "RepoNotFound")
        raise HubError(404, f"no route for {method} /{'/'.join(seg)}")

    def _route_api(self, seg: list[str], method: str):
        if seg == ["whoami-v2"] and method == "GET":
            return self._whoami()
        if seg == ["repos", "create"] and method == "POST":
            return self._create_repo()
        if seg == ["repos", "delete"] and method == "DELETE":
            return self._delete_repo()
        if seg == ["validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if len(seg) < 3 or seg[0] not in ("models", "datasets"):
            raise HubError(404, f"no route for {method} /api/{'/'.join(seg)}")
        repo_type, repo_id, action, args = seg[0][:-1], f"{seg[1]}/{seg[2]}", seg[3:4], seg[4:]
        route = (method, action[0] if action else None, len(args))
        if route == ("GET", None, 0):
            return self._repo_info(repo_type, repo_id, "main")
        if route == ("GET", "revision", 1):
            return self._repo_info(repo_type, repo_id, args[0])
        if method == "GET" and action == ["tree"] and args:
            return self._tree(repo_type, repo_id, args[0], "/".join(args[1:]))
        if route == ("POST", "paths-info", 1):
            return self._paths_info(repo_type, repo_id, args[0])
        if route == ("GET", "refs", 0):
            return self._refs(repo_type, repo_id)
        if route == ("GET", "commits", 1):
            return self._commits(repo_type, repo_id, args[0])
        if route == ("POST", "preupload", 1):
            return self._preupload(repo_type, repo_id, args[0])
        if route == ("POST", "commit", 1):
            return self._commit(repo_type, repo_id, args[0])
        if action == ["branch"] and len(args) == 1 and method in ("POST", "DELETE"):
            return self._branch_ref(repo_type, repo_id, args[0])
        if action == ["tag"] and len(args) == 1 and method in ("POST", "DELETE"):
            return self._tag_ref(repo_type, repo_id, args[0])
        if route == ("GET", "auth-check", 0):
            self._readable_repo(repo_type, repo_id)
            return self._send_json(200, {"accessType": "read"})
        if method == "GET" and action == ["xet-write-token"]:
            raise HubError(501, "This local Hub stores files through LFS only: set HF_HUB_DISABLE_XET=1 "
                                "before huggingface_hub is imported.")
        raise HubError(404, f"no route for {method} /api/{'/'.join(seg)}")

    # -- users and repos ---------------------------------------------------------------------------
    def _whoami(self):
        user = self._user()
        if user is None:
            raise HubError(401, INVALID_TOKEN)
        self._send_json(200, {
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user,
            "email": None, "emailVerified": False, "isPro": False, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local-hub", "role": "write"}},
        })

    def _repo_from_body(self, body: dict) -> tuple[str, str, str]:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to manage repositories")
        repo_type = body.get("type") or "model"
        namespace, name = body.get("organization") or user, body.get("name")
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"repo type {repo_type!r} is not served by this local Hub (only {REPO_TYPES})")
        if not (valid_name(name) and valid_name(namespace)):
            raise HubError(400, f"invalid repo id {namespace}/{name}: use letters, digits, '-', '_', '.'")
        if namespace != user:
            raise HubError(403, f"You don't have the rights to manage repos under the namespace {namespace}")
        return user, repo_type, f"{namespace}/{name}"

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.base_url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def _create_repo(self):
        body = self._json_body()
        user, repo_type, repo_id = self._repo_from_body(body)
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        url = self._repo_url(repo_type, repo_id)
        if not self.hub.storage.create_repo(repo_type, repo_id, user, private):
            # The client reads `url` from this 409 when exist_ok=True.
            return self._send_json(409, {"error": "You already created this model repo", "url": url},
                                   {"X-Error-Message": "You already created this model repo"})
        self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self):
        _, repo_type, repo_id = self._repo_from_body(self._json_body())
        self._writable_repo(repo_type, repo_id)
        self.hub.storage.delete_repo(repo_type, repo_id)
        self._send_json(200, {})

    def _validate_yaml(self):
        content = self._json_body().get("content", "")
        metadata, error = _front_matter(content)
        if error:
            return self._send(400, error.encode(), content_type="text/plain")
        if metadata is not None and not isinstance(metadata, dict):
            return self._send(400, b"the YAML metadata block of README.md must be a mapping", content_type="text/plain")
        self._send_json(200, {"errors": [], "warnings": []})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str):
        meta = self._readable_repo(repo_type, repo_id)
        storage = self.hub.storage
        commit = storage.commit(repo_type, repo_id, self._resolve(repo_type, repo_id, revision))
        with_blobs = self.query.get("blobs", "").lower() == "true"
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size,
                                      "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        card = {}
        if "README.md" in commit.tree:
            card, _ = _front_matter(storage.read_blob(commit.tree["README.md"].sha256).decode("utf-8", "replace"))
        card = card if isinstance(card, dict) else {}
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
            "sha": commit.sha, "lastModified": commit.date, "createdAt": meta["createdAt"],
            "private": meta["private"], "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": list(card.get("tags") or []), "siblings": siblings,
            "usedStorage": sum(entry.size for entry in commit.tree.values()),
        }
        if card:
            info["cardData"] = card
        if repo_type == "model":
            info["modelId"] = repo_id
            info.update({key: card[key] for key in ("pipeline_tag", "library_name") if key in card})
            config = _json_file(storage, commit.tree.get("config.json"))
            if isinstance(config, dict):
                keys = ("architectures", "model_type", "auto_map")
                info["config"] = {key: config[key] for key in keys if key in config}
        self._send_json(200, info)

    # -- reading files -------------------------------------------------------------------------
    def _file_json(self, entry: Entry) -> dict:
        item = {"type": "file", "oid": entry.oid, "size": entry.size, "path": entry.path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size,
                           "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        return item

    @staticmethod
    def _folder_json(tree: dict[str, Entry], folder: str) -> dict:
        inside = sorted((p, e.oid) for p, e in tree.items() if p.startswith(folder + "/"))
        return {"type": "directory", "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(), "size": 0,
                "path": folder}

    def _tree(self, repo_type: str, repo_id: str, revision: str, folder: str):
        self._readable_repo(repo_type, repo_id)
        commit = self.hub.storage.commit(repo_type, repo_id, self._resolve(repo_type, repo_id, revision))
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        under = [path for path in commit.tree if path.startswith(prefix)]
        if prefix and not under:
            raise HubError(404, f"{folder} does not exist at {revision}", "EntryNotFound",
                           {"X-Repo-Commit": commit.sha})
        recursive = self.query.get("recursive", "").lower() == "true"
        files, folders = [], set()
        for path in under:
            parts = path[len(prefix):].split("/")
            if recursive or len(parts) == 1:
                files.append(path)
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
        items = sorted([(path, "f") for path in files] + [(path, "d") for path in folders])
        start = int(self.query.get("cursor", 0))
        page = items[start:start + TREE_PAGE_SIZE]
        headers = {}
        if start + TREE_PAGE_SIZE < len(items):
            query = {**self.query, "cursor": str(start + TREE_PAGE_SIZE)}
            next_query = "&".join(f"{key}={quote(value)}" for key, value in query.items())
            next_url = f"{self.base_url}{urlsplit(self.path).path}?{next_query}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json(200, [
            self._file_json(commit.tree[path]) if kind == "f" else self._folder_json(commit.tree, path)
            for path, kind in page
        ], headers)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str):
        self._readable_repo(repo_type, repo_id)
        commit = self.hub.storage.commit(repo_type, repo_id, self._resolve(repo_type, repo_id, revision))
        body = self._body().decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body or "{}").get("paths", [])
        else:
            paths = parse_qs(body).get("paths", [])
        result = []
        for path in paths:
            path = path.strip("/")
            if path in commit.tree:
                result.append(self._file_json(commit.tree[path]))
            elif any(p.startswith(path + "/") for p in commit.tree):
                result.append(self._folder_json(commit.tree, path))
        self._send_json(200, result)

    def _refs(self, repo_type: str, repo_id: str):
        self._readable_repo(repo_type, repo_id)
        refs = self.hub.storage.refs(repo_type, repo_id)
        def listing(kind: str) -> list[dict]:
            return [{"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}
                    for name, sha in sorted(refs[kind].items())]

        self._send_json(200, {"branches": listing("heads"), "tags": listing("tags"), "converts": [],
                              "pullRequests": []})

    def _commits(self, repo_type: str, repo_id: str, revision: str):
        self._readable_repo(repo_type, repo_id)
        history = self.hub.storage.history(repo_type, repo_id, self._resolve(repo_type, repo_id, revision))
        self._send_json(200, [
            {"id": c.sha, "title": c.title, "message": c.message, "date": c.date,
             "authors": [{"user": c.author, "avatar": None}], "parents": c.parents}
            for c in history
        ])

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str):
        self._readable_repo(repo_type, repo_id)
        sha = self._resolve(repo_type, repo_id, revision)
        entry = self.hub.storage.commit(repo_type, repo_id, sha).tree.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry.sha256 if entry.lfs else entry.oid}"',
                   "Accept-Ranges": "bytes", "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        start, end, status = 0, entry.size - 1, 200
        requested = self.headers.get("Range")
        if requested:
            parsed = _parse_range(requested, entry.size)
            if parsed is None:
                raise HubError(416, f"Range {requested} not satisfiable for {entry.size} bytes",
                               headers={"Content-Range": f"bytes */{entry.size}", "X-Repo-Commit": sha})
            (start, end), status = parsed, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(self.hub.storage.blob_path(entry.sha256), "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(remaining, _READ_CHUNK))
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # -- writing ---------------------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str):
        self._writable_repo(repo_type, repo_id)
        storage = self.hub.storage
        commit = storage.commit(repo_type, repo_id, self._resolve(repo_type, repo_id, revision))
        answer = []
        for file in self._json_body().get("files", []):
            path, size = file["path"], int(file["size"])
            lfs = storage.is_lfs_path(commit.tree, path, size, base64.b64decode(file.get("sample", "")))
            existing = commit.tree.get(path)
            oid = None
            if existing is not None and existing.lfs == lfs:  # what the client compares with its local oid
                oid = existing.sha256 if lfs else existing.oid
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json(200, {"files": answer, "commitOid": commit.sha})

    def _commit(self, repo_type: str, repo_id: str, revision: str):
        user = self._writable_repo(repo_type, repo_id)
        if self.query.get("create_pr") in ("1", "true"):
            raise HubError(400, "pull requests are not supported by this local Hub: commit to a branch")
        storage = self.hub.storage
        branch = self._branch(repo_type, repo_id, revision)
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line of a commit must be the header")
        header = lines[0]["value"]
        tree = dict(storage.commit(repo_type, repo_id, storage.refs(repo_type, repo_id)["heads"][branch]).tree)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = _check_path(value.get("path", ""))
            if key == "file":
                content = value["content"]
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                if len(data) >= LFS_SIZE_THRESHOLD:
                    raise HubError(400, f"{path} is {len(data)} bytes: files of 10 MiB or more must go through LFS")
                tree[path] = Entry(path, storage.put_blob(data), len(data), False, git_blob_sha1(data))
            elif key == "lfsFile":
                oid = value["oid"]
                if not storage.has_blob(oid):
                    raise HubError(422, f"LFS object {oid} of {path} was never uploaded")
                size = storage.blob_path(oid).stat().st_size
                if value.get("size") not in (None, size):
                    raise HubError(422, f"LFS object {oid} of {path} has {size} bytes, not {value['size']}")
                tree[path] = Entry(path, oid, size, True, git_blob_sha1(lfs_pointer(oid, size)))
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise HubError(404, f"cannot delete {path}: no such file", "EntryNotFound")
            elif key == "deletedFolder":
                doomed = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
                if not doomed:
                    raise HubError(404, f"cannot delete folder {path}: no such folder", "EntryNotFound")
                for p in doomed:
                    del tree[p]
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        try:
            sha = storage.add_commit(repo_type, repo_id, branch, tree, header.get("summary") or "Update",
                                     header.get("description") or "", user, header.get("parentCommit"))
        except ConflictError as error:
            raise HubError(412, f"A commit has happened since. Please refresh and try again ({error})") from None
        self._send_json(200, {"success": True, "commitOid": sha, "hookOutput": "",
                              "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{sha}"})

    def _branch_ref(self, repo_type: str, repo_id: str, branch: str):
        self._writable_repo(repo_type, repo_id)
        heads = self.hub.storage.refs(repo_type, repo_id)["heads"]
        if self.command == "DELETE":
            if branch not in heads:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise HubError(403, "the main branch cannot be deleted")
            self.hub.storage.set_ref(repo_type, repo_id, "heads", branch, None)
            return self._send_json(200, {})
        start = self._json_body().get("startingPoint") or "main"
        if branch in heads:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        if not valid_name(branch.replace("/", "-")):
            raise HubError(400, f"invalid branch name {branch!r}")
        self.hub.storage.set_ref(repo_type, repo_id, "heads", branch, self._resolve(repo_type, repo_id, start))
        self._send_json(200, {})

    def _tag_ref(self, repo_type: str, repo_id: str, name: str):
        self._writable_repo(repo_type, repo_id)
        tags = self.hub.storage.refs(repo_type, repo_id)["tags"]
        if self.command == "DELETE":
            if name not in tags:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            self.hub.storage.set_ref(repo_type, repo_id, "tags", name, None)
            return self._send_json(200, {})
        sha = self._resolve(repo_type, repo_id, name)  # here `name` is the revision being tagged
        tag = self._json_body().get("tag", "")
        if not valid_name(tag.replace("/", "-")):
            raise HubError(400, f"invalid tag name {tag!r}")
        if tag in tags:
            raise HubError(409, f"Reference refs/tags/{tag} already exists")
        self.hub.storage.set_ref(repo_type, repo_id, "tags", tag, sha)
        self._send_json(200, {})

    # -- LFS -------------------------------------------------------------------------------------
    def _lfs_batch(self, repo_type: str, repo_id: str):
        self._writable_repo(repo_type, repo_id)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(422, "this local Hub only serves the LFS upload operation")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            answer = {"oid": oid, "size": size, "authenticated": True}
            if not self.hub.storage.has_blob(oid, size):
                signature = self.hub.upload_signature(oid, size)
                answer["actions"] = {
                    "upload": {"href": f"{self.base_url}/_lfs-upload/{oid}?size={size}&sig={signature}"},
                    "verify": {"href": f"{self._repo_url(repo_type, repo_id)}.git/info/lfs/objects/verify"},
                }
            objects.append(answer)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, oid: str):
        """The pre-signed PUT the client sends without Authorization (like an S3 URL on the real Hub)."""
        size = int(self.query.get("size", -1))
        if not hmac.compare_digest(self.query.get("sig", ""), self.hub.upload_signature(oid, size)):
            raise HubError(403, "upload URL signature does not match")
        body = self._iter_body()
        fault = self.hub.faults.take()
        if fault == "reject":  # what S3 answers to an expired pre-signed URL; the client does not retry a 403
            raise HubError(403, "Request has expired")
        if fault == "drop":
            received = 0
            for chunk in body:  # take about half of the file, then cut the connection
                received += len(chunk)
                if received >= size // 2:
                    break
            raise _DropConnection()
        try:
            self.hub.storage.put_blob_from_stream(body, oid, size)
        except ValueError as error:
            raise HubError(400, str(error)) from None
        self.hub.faults.count_stored()
        self._send(200, b"", content_type="text/plain")

    def _lfs_verify(self, repo_type: str, repo_id: str):
        self._writable_repo(repo_type, repo_id)
        body = self._json_body()
        if not self.hub.storage.has_blob(body.get("oid", ""), body.get("size")):
            raise HubError(404, f"LFS object {body.get('oid')} of size {body.get('size')} is not stored")
        self._send_json(200, {"success": True})

    def _set_faults(self):
        """POST /_admin/faults {"drop_lfs_uploads": n, "reject_lfs_uploads": m}, e.g. from another process."""
        if self.client_address[0] not in ("127.0.0.1", "::1"):
            raise HubError(403, "faults can only be set from this machine")
        body = self._json_body()
        unknown = set(body) - {"drop_lfs_uploads", "reject_lfs_uploads"}
        if unknown:
            raise HubError(400, f"unknown faults {sorted(unknown)}: use drop_lfs_uploads, reject_lfs_uploads")
        self.hub.faults.set(**{key: int(value) for key, value in body.items()})
        self._send_json(200, {})


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; None when unsatisfiable."""
    unit, _, spec = header.partition("=")
    first, _, last = spec.strip().partition("-")
    try:
        if unit.strip() != "bytes" or "," in spec:
            return None
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    return (start, end) if start <= end and start < size else None


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HubError(400, f"invalid path in repo: {path!r}")
    return path


def _front_matter(text: str):
    """(metadata, error) of a README's leading YAML block; (None, None) without one."""
    import yaml  # a dependency of huggingface_hub itself

    if not text.startswith("---"):
        return None, None
    closing = text.find("\n---", 3)
    if closing < 0:
        return None, "the YAML metadata block of README.md is not closed by '---'"
    try:
        return yaml.safe_load(text[3:closing]) or {}, None
    except yaml.YAMLError as error:
        return None, f"invalid YAML metadata in README.md: {error}"


def _json_file(storage: Storage, entry: Entry | None):
    if entry is None:
        return None
    try:
        return json.loads(storage.read_blob(entry.sha256))
    except ValueError:
        return None


def make_server(storage: Storage, tokens: dict[str, str], host: str, port: int) -> tuple[ThreadingHTTPServer, Hub]:
    hub = Hub(storage, tokens)
    handler = type("BoundHubRequestHandler", (HubRequestHandler,), {"hub": hub})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    return httpd, hub

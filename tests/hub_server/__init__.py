"""A local, spec-faithful Hugging Face Hub for the tests (issue 6): push and pull with the unmodified client.

    server = HubServer("/tmp/hub").start()      # or: python -m tests.hub_server --port 8765 --storage /tmp/hub
    HF_ENDPOINT=server.endpoint HF_TOKEN=server.token HF_HUB_DISABLE_XET=1  -> huggingface_hub / transformers

Users "tester" (`.token`) and "intruder" (`.other_token`) exist; their tokens are kept in the storage
directory. `drop_next_lfs_uploads(n)` cuts the connection in the middle of the next n LFS uploads,
`reject_next_lfs_uploads(n)` refuses them with a 403; from another process:
POST {endpoint}/_admin/faults {"drop_lfs_uploads": n, "reject_lfs_uploads": m}.
The client must run with HF_HUB_DISABLE_XET=1: the server stores files through LFS only and answers
the Xet token request with 501.
"""

from __future__ import annotations

import os
import threading

from .app import make_server
from .storage import Storage

__all__ = ["HubServer"]

USERS = ("tester", "intruder")


class HubServer:
    def __init__(self, storage: str | os.PathLike, host: str = "127.0.0.1", port: int = 0):
        self.storage = os.fspath(storage)
        tokens = Storage(self.storage).tokens(USERS)
        self.token, self.other_token = tokens["tester"], tokens["intruder"]
        self._httpd, self._hub = make_server(Storage(self.storage), tokens, host, port)
        self.endpoint = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    @property
    def faults(self):
        """Counters: `lfs_uploads_dropped`, `lfs_uploads_rejected`, `lfs_uploads_stored`."""
        return self._hub.faults

    @property
    def requests(self):
        """(method, path, Range header) of the latest requests, oldest first."""
        return list(self._hub.requests)

    def drop_next_lfs_uploads(self, count: int = 1) -> None:
        """Cut the connection halfway through each of the next `count` LFS uploads (the client retries 5 times)."""
        self._hub.faults.set(drop_lfs_uploads=count)

    def reject_next_lfs_uploads(self, count: int = 1) -> None:
        """Answer the next `count` LFS uploads with 403 "Request has expired": the client fails at once."""
        self._hub.faults.set(reject_lfs_uploads=count)

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

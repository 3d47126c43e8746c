"""A local stand-in for the Hugging Face Hub's file endpoint, enough for `huggingface_hub.hf_hub_download`.

`HEAD|GET {endpoint}/datasets/{repo}/resolve/{revision}/{filename}` answers with the headers the client
needs (read from huggingface_hub's file_download.py): `X-Repo-Commit` (the commit the revision resolves
to), `ETag` (the file's sha256, as for an LFS file, or its git blob sha1) and `Content-Length`. Unknown
revisions and files get the Hub's 404 with `X-Error-Code`; a server made with a token answers 401 to any
request without `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from dataclasses import dataclass, field

ROUTE = re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    """One dataset repository: files per commit, and branch -> commit."""

    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (commit, filename) -> content
    refs: dict[str, str] = field(default_factory=dict)
    etag_override: str | None = None  # an ETag that does not match the content (a corrupted mirror)
    lfs: bool = True  # ETag = sha256 (LFS) or git blob sha1

    def resolve(self, revision: str) -> str | None:
        commit = self.refs.get(revision, revision)
        return commit if any(c == commit for c, _ in self.files) else None

    def etag(self, data: bytes) -> str:
        return self.etag_override or (hashlib.sha256(data).hexdigest() if self.lfs else git_blob_sha1(data))


class FakeHub:
    def __init__(self, repos: dict[str, HubRepo], token: str | None = None) -> None:
        self.repos, self.token = repos, token
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, method: str, path: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((method, path, authorization))
        if self.token and authorization != f"Bearer {self.token}":
            return 401, {"X-Error-Message": "Invalid credentials in Authorization header"}, b""
        match = ROUTE.match(path.split("?")[0])
        repo = self.repos.get(match["repo"]) if match else None
        if repo is None:
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        commit = repo.resolve(match["revision"])
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        data = repo.files.get((commit, match["filename"]))
        if data is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b""
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{repo.etag(data)}"', "Content-Type": "text/csv"}, data

    def _handler(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self._reply(send_body=False)

            def do_GET(self) -> None:
                self._reply(send_body=True)

            def _reply(self, send_body: bool) -> None:
                status, headers, body = hub.answer(self.command, self.path, self.headers.get("Authorization"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler

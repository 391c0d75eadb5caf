"""A small in-memory Hugging Face Hub for tests: the routes `huggingface_hub` 2.4 calls.

Started on 127.0.0.1 (random port) by a fixture; `HF_ENDPOINT` points the real client at it.
Fault modes let tests make downloads misbehave: `endless` (a file streams garbage with no
length, forever) and `drop` (the connection closes halfway through a file).

Attack modes play a malicious Hub (the security review's findings): a tag request answered
409 while the tag is pointed at a crafted string that serves the real bytes, refs of the
wrong shape, upper-case commit ids, a commit answer that is not a commit id, a download that
drips one byte at a time, and redirects (to another server, to other schemes, in a loop).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    message: str


@dataclass
class Repo:
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Faults:
    endless: set[str] = field(default_factory=set)  # file names that stream forever
    drop: dict[str, int] = field(default_factory=dict)  # file name -> how many GETs to cut off halfway
    tamper: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes served instead


@dataclass
class Attacks:
    tag_conflict: dict[str, str] = field(default_factory=dict)  # tag -> crafted target: answer 409, point the tag there
    aliases: dict[str, str] = field(default_factory=dict)  # crafted revision -> real commit it serves
    refs_body: Any = None  # served instead of the refs JSON when set
    upper_ids: bool = False  # every commit id the hub announces is upper case
    commit_oid: str | None = None  # announced instead of the real oid after a commit
    drip: dict[str, float] = field(default_factory=dict)  # file name -> seconds per byte
    redirect: dict[str, str] = field(default_factory=dict)  # file name -> Location to answer 302 with


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.faults = Faults()
        self.attacks = Attacks()
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.endless_bytes_sent = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- state helpers (tests use these to play the attacker) ----------------------------------
    def new_commit(self, repo_id: str, files: dict[str, bytes], message: str, parent: str | None) -> str:
        repo = self.repos[repo_id]
        oid = hashlib.sha1(json.dumps([parent, message, len(repo.commits),
                                       sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())]).encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, dict(files), message)
        return oid

    def force_main(self, repo_id: str, files: dict[str, bytes], delete: tuple[str, ...] = ()) -> str:
        """Move main to a new commit with these files replaced (an attacker with write access)."""
        with self.lock:
            repo = self.repos[repo_id]
            head = repo.branches["main"]
            tree = dict(repo.commits[head].files)
            for f in delete:
                tree.pop(f, None)
            tree.update(files)
            oid = self.new_commit(repo_id, tree, "forced", head)
            repo.branches["main"] = oid
            return oid

    def files_at(self, repo_id: str, rev: str) -> dict[str, bytes]:
        repo = self.repos[repo_id]
        oid = repo.branches.get(rev) or repo.tags.get(rev) or rev
        return dict(repo.commits[oid].files)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return None

        # -- responses ---------------------------------------------------------------------
        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _repo(self, repo_id: str) -> Repo | None:
            return hub.repos.get(repo_id)

        def _rev(self, repo: Repo, rev: str) -> str | None:
            rev = unquote(rev)
            if rev in hub.attacks.aliases:
                return hub.attacks.aliases[rev]
            if rev in repo.branches:
                rev = repo.branches[rev]
            elif rev in repo.tags:
                rev = repo.tags[rev]
            if rev in hub.attacks.aliases:
                return hub.attacks.aliases[rev]
            if rev.lower() in repo.commits:
                return rev.lower()
            return None

        def _oid(self, oid: str) -> str:
            return oid.upper() if hub.attacks.upper_ids else oid

        # -- routing -----------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def do_POST(self) -> None:
            self._route()

        def _route(self) -> None:
            path = urlparse(self.path).path
            hub.requests.append((self.command, path))
            hub.authorizations.append(self.headers.get("Authorization"))
            try:
                if path == "/api/repos/create" and self.command == "POST":
                    return self._create()
                if path == "/api/validate-yaml" and self.command == "POST":
                    self._body()
                    return self._json(200, {"errors": [], "warnings": []})
                m = re.match(r"^/api/models/([^/]+/[^/]+)(/.*)?$", path)
                if m:
                    return self._api(m.group(1), m.group(2) or "")
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if m and self.command in ("GET", "HEAD"):
                    return self._resolve(m.group(1), m.group(2), unquote(m.group(3)))
                self._error(404, "NotFound", f"no route {self.command} {path}")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _create(self) -> None:
            body = json.loads(self._body() or b"{}")
            repo_id = f"{body.get('organization')}/{body['name']}" if body.get("organization") else str(body["name"])
            url = f"{hub.url}/{repo_id}"
            with hub.lock:
                if repo_id in hub.repos:
                    return self._json(409, {"error": "You already created this model repo", "url": url})
                hub.repos[repo_id] = Repo()
                oid = hub.new_commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                                     "initial commit", None)
                hub.repos[repo_id].branches["main"] = oid
            self._json(200, {"url": url, "name": repo_id})

        def _api(self, repo_id: str, rest: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                if self.command == "POST":
                    self._body()
                return self._error(404, "RepoNotFound", f"Repository Not Found for {repo_id}")
            if rest == "/refs" and self.command == "GET":
                if hub.attacks.refs_body is not None:
                    return self._json(200, hub.attacks.refs_body)
                with hub.lock:
                    def ref(kind: str, name: str, oid: str) -> dict[str, str]:
                        return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": self._oid(oid)}

                    return self._json(200, {
                        "branches": [ref("heads", n, o) for n, o in repo.branches.items()],
                        "tags": [ref("tags", n, o) for n, o in repo.tags.items()],
                        "converts": [], "pullRequests": [],
                    })
            if (m := re.match(r"^/preupload/([^/]+)$", rest)) and self.command == "POST":
                body = json.loads(self._body())
                return self._json(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in body["files"]
                ]})
            if (m := re.match(r"^/commit/([^/]+)$", rest)) and self.command == "POST":
                return self._commit(repo_id, repo, unquote(m.group(1)))
            if (m := re.match(r"^/tag/([^/]+)$", rest)) and self.command == "POST":
                body = json.loads(self._body())
                with hub.lock:
                    oid = self._rev(repo, m.group(1))
                    if oid is None:
                        return self._error(404, "RevisionNotFound", "Invalid rev id")
                    if body["tag"] in repo.tags:
                        return self._json(409, {"error": f"Tag {body['tag']} already exists"})
                    crafted = hub.attacks.tag_conflict.pop(body["tag"], None)
                    if crafted is not None:  # claim a conflict, and point the tag at a crafted string
                        repo.tags[body["tag"]] = crafted
                        hub.attacks.aliases[crafted] = oid
                        return self._json(409, {"error": f"Tag {body['tag']} already exists"})
                    repo.tags[body["tag"]] = oid
                return self._json(200, {})
            if (m := re.match(r"^/tree/([^/]+)(/.*)?$", rest)) and self.command == "GET":
                with hub.lock:
                    oid = self._rev(repo, m.group(1))
                    if oid is None:
                        return self._error(404, "RevisionNotFound", "Invalid rev id")
                    files = repo.commits[oid].files
                return self._json(200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                        for p, b in sorted(files.items())])
            m = re.match(r"^(?:/revision/([^/]+))?$", rest)
            if m is not None and self.command == "GET":
                with hub.lock:
                    oid = self._rev(repo, m.group(1) or "main")
                    if oid is None:
                        return self._error(404, "RevisionNotFound", "Invalid rev id")
                    files = repo.commits[oid].files
                return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": oid, "private": False,
                                        "siblings": [{"rfilename": p} for p in sorted(files)]})
            return self._error(404, "NotFound", f"no route {self.command} {rest}")

        def _commit(self, repo_id: str, repo: Repo, branch: str) -> None:
            lines = [json.loads(x) for x in self._body().splitlines() if x.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            with hub.lock:
                head = repo.branches.get(branch)
                if head is None:
                    return self._error(404, "RevisionNotFound", "Invalid rev id")
                parent = header.get("parentCommit")
                if parent is not None and parent != head:
                    return self._json(412, {"error": "A commit has happened since. Please refresh and try again."})
                tree = dict(repo.commits[head].files)
                for item in lines:
                    if item["key"] == "file":
                        tree[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        tree.pop(item["value"]["path"], None)
                    elif item["key"] == "lfsFile":
                        return self._json(400, {"error": "LFS is not supported by this fake hub"})
                oid = hub.new_commit(repo_id, tree, header["summary"], head)
                repo.branches[branch] = oid
            shown = hub.attacks.commit_oid if hub.attacks.commit_oid is not None else self._oid(oid)
            self._json(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": shown,
                             "pullRequestUrl": None, "success": True})

        def _resolve(self, repo_id: str, rev: str, fname: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository Not Found")
            with hub.lock:
                oid = self._rev(repo, rev)
                if oid is None:
                    return self._error(404, "RevisionNotFound", "Invalid rev id")
                data = repo.commits[oid].files.get(fname)
                if data is not None and fname in hub.faults.tamper:
                    data = hub.faults.tamper[fname]
            if data is None:
                return self._error(404, "EntryNotFound", "Entry not found")
            if fname in hub.attacks.redirect and self.command == "GET":
                self.send_response(302)
                self.send_header("Location", hub.attacks.redirect[fname])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            common = {"X-Repo-Commit": self._oid(oid), "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
            if self.command == "GET" and fname in hub.attacks.drip:
                return self._drip(data, hub.attacks.drip[fname], common)
            if self.command == "GET" and fname in hub.faults.endless:
                return self._endless(common)
            drop = self.command == "GET" and hub.faults.drop.get(fname, 0) > 0
            if drop:
                hub.faults.drop[fname] -= 1
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            for k, v in common.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if drop:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

        def _drip(self, data: bytes, seconds: float, headers: dict[str, str]) -> None:
            """A correct Content-Length, then one byte at a time: only a whole-download deadline stops it."""
            import time

            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for i in range(min(len(data), 600)):  # bounded, so a broken client cannot hold the test forever
                try:
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                time.sleep(seconds)

        def _endless(self, headers: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = b"\0" * 65536
            for _ in range(16 * 1024):  # at most 1 GiB, so a broken client cannot hang the test forever
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                hub.endless_bytes_sent += len(chunk)

    return Handler

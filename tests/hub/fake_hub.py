"""A small Hugging Face Hub on 127.0.0.1 for tests: the endpoints ``medkit push``/``pull`` reach
through the real ``huggingface_hub`` client (whoami, repo creation, README validation, preupload,
LFS batch + basic transfer, NDJSON commit, branches, revision info, tree listing, resolve).

Xet is not offered: tests set ``huggingface_hub.constants.HF_HUB_DISABLE_XET`` so uploads use LFS.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
LFS_PATTERNS = ("*.safetensors", "*.png", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.npy", "*.zip")


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    lfs: set[str]
    message: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        sha = self.branches.get(rev, rev)
        return self.commits.get(sha)


class FakeHub:
    """Start with ``with FakeHub(token) as hub: ... hub.endpoint``; inspect ``hub.repos``/``requests``."""

    def __init__(self, token: str, user: str = "alice") -> None:
        self.token, self.user = token, user
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, authenticated)
        self.validated: list[str] = []
        self.lock = threading.RLock()
        self._counter = 0
        self.server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- state -------------------------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.repos[repo_id].resolve(revision)
        assert commit is not None, f"no revision {revision}"
        return dict(commit.files)

    def new_commit(self, repo: Repo, branch: str, files: dict[str, bytes], lfs: set[str], message: str) -> Commit:
        self._counter += 1
        parent = repo.branches.get(branch)
        digest = hashlib.sha1(f"{repo.repo_id}|{branch}|{parent}|{message}|{self._counter}".encode())
        for path in sorted(files):
            digest.update(path.encode() + hashlib.sha256(files[path]).digest())
        commit = Commit(sha=digest.hexdigest(), files=files, lfs=lfs, message=message, parent=parent)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    @staticmethod
    def is_lfs(path: str, size: int, sample: bytes) -> bool:
        return any(fnmatch.fnmatch(path, p) for p in LFS_PATTERNS) or size > 10_000_000 or b"\0" in sample


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    # -- plumbing ----------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _authed(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _repo(self, repo_id: str, *, write: bool = False) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authed()):
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if write and not self._authed():
            self._error(401, None, "Invalid credentials in Authorization header")
            return None
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit | None:
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    # -- verbs ---------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        raw = url.path.strip("/").split("/")
        parts = [unquote(p) for p in raw]
        query = parse_qs(url.query)
        hub = self.hub
        with hub.lock:
            hub.requests.append((self.command, url.path, self._authed()))
        body = self._body() if self.command in ("POST", "PUT") else b""
        with hub.lock:
            try:
                self._route(parts, query, body)
            except Exception as exc:  # noqa: BLE001 - a test server reports, never dies
                self._error(500, None, f"fake hub error: {type(exc).__name__}: {exc}")

    def _route(self, p: list[str], query: dict[str, list[str]], body: bytes) -> None:
        m = self.command
        if p[:2] == ["api", "whoami-v2"] and m == "GET":
            if not self._authed():
                return self._error(401, None, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": self.hub.user, "fullname": "Alice",
                                    "auth": {"type": "access_token",
                                             "accessToken": {"displayName": "tests", "role": "write"}}})
        if p[:2] == ["api", "agent-harnesses"] and m == "GET":  # huggingface_hub's user-agent registry
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if p[:3] == ["api", "repos", "create"] and m == "POST":
            return self._create(json.loads(body))
        if p[:2] == ["api", "validate-yaml"] and m == "POST":
            return self._validate(json.loads(body))
        if p[:1] == ["_lfs"]:
            return self._lfs_object(p[1], verify=len(p) > 2, body=body)
        if len(p) >= 4 and p[:2] == ["api", "models"]:
            repo_id, action, rest = f"{p[2]}/{p[3]}", (p[4] if len(p) > 4 else None), p[5:]
            if action is None and m == "GET":
                return self._info(repo_id, "main")
            if action == "revision" and m == "GET":
                return self._info(repo_id, "/".join(rest))
            if action == "preupload" and m == "POST":
                return self._preupload(repo_id, "/".join(rest), json.loads(body))
            if action == "commit" and m == "POST":
                return self._commit_ndjson(repo_id, "/".join(rest), body)
            if action == "branch" and m == "POST":
                return self._branch(repo_id, "/".join(rest), json.loads(body or b"{}"))
            if action == "tree" and m == "GET":
                recursive = query.get("recursive", ["False"])[0].lower() == "true"
                return self._tree(repo_id, rest[0], "/".join(rest[1:]), recursive)
        if len(p) >= 6 and p[1].endswith(".git") and p[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(f"{p[0]}/{p[1][:-4]}", json.loads(body))
        if len(p) >= 5 and p[2] == "resolve" and m in ("GET", "HEAD"):
            return self._resolve(f"{p[0]}/{p[1]}", p[3], "/".join(p[4:]))
        return self._error(404, None, f"no route for {m} {'/'.join(p)}")

    # -- endpoints -----------------------------------------------------------------------------------
    def _create(self, payload: dict[str, Any]) -> None:
        if not self._authed():
            return self._error(401, None, "Invalid credentials in Authorization header")
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        if repo_id in self.hub.repos:  # the Hub answers 409 with the existing repository's url
            return self._json(409, {"error": "You already created this model repo",
                                    "url": f"{self.hub.endpoint}/{repo_id}"})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(repo_id=repo_id, private=private)
        self.hub.repos[repo_id] = repo
        self.hub.new_commit(repo, "main", {".gitattributes": GITATTRIBUTES}, set(), "initial commit")
        self._json(200, {"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate(self, payload: dict[str, Any]) -> None:
        """The Hub's checks that need no database: front matter is YAML mapping with typed fields."""
        content: str = payload.get("content", "")
        self.hub.validated.append(content)
        errors = []
        if not content.startswith("---\n"):
            return self._json(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            meta = yaml.safe_load(content.split("---\n", 2)[1])
        except (yaml.YAMLError, IndexError) as exc:
            return self._json(400, {"errors": [{"message": f"invalid yaml: {exc}"}]})
        if not isinstance(meta, dict):
            errors.append("metadata must be a mapping")
        else:
            if "tags" in meta and not (isinstance(meta["tags"], list) and all(isinstance(t, str) for t in meta["tags"])):
                errors.append('"tags" must be an array of strings')
            for key in ("library_name", "license", "pipeline_tag"):
                if key in meta and not isinstance(meta[key], str):
                    errors.append(f'"{key}" must be a string')
        if errors:
            return self._json(400, {"errors": [{"message": e} for e in errors]})
        return self._json(200, {"errors": [], "warnings": []})

    def _info(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id)
        commit = repo and self._commit(repo, rev)
        if repo is None or commit is None:
            return None
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": commit.sha, "private": repo.private,
                         "siblings": [{"rfilename": f} for f in sorted(commit.files)], "tags": []})

    def _preupload(self, repo_id: str, rev: str, payload: dict[str, Any]) -> None:
        repo = self._repo(repo_id, write=True)
        commit = repo and self._commit(repo, rev)
        if repo is None or commit is None:
            return None
        out = []
        for f in payload["files"]:
            lfs = FakeHub.is_lfs(f["path"], int(f["size"]), base64.b64decode(f["sample"]))
            old = commit.files.get(f["path"])
            oid = None
            if old is not None:
                oid = hashlib.sha256(old).hexdigest() if f["path"] in commit.lfs else git_blob_oid(old)
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        self._json(200, {"files": out, "commitOid": commit.sha})

    def _lfs_batch(self, repo_id: str, payload: dict[str, Any]) -> None:
        if self._repo(repo_id, write=True) is None:
            return None
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": int(obj["size"])}
            if obj["oid"] not in self.hub.blobs:
                entry["authenticated"] = True
                entry["actions"] = {"upload": {"href": f"{self.hub.endpoint}/_lfs/{obj['oid']}"},
                                    "verify": {"href": f"{self.hub.endpoint}/_lfs/{obj['oid']}/verify"}}
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_object(self, oid: str, *, verify: bool, body: bytes) -> None:
        if verify:
            info = json.loads(body)
            ok = oid in self.hub.blobs and len(self.hub.blobs[oid]) == int(info["size"])
            return self._json(200 if ok else 422, {"ok": ok})
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, None, "sha256 mismatch")
        self.hub.blobs[oid] = body
        return self._send(200)

    def _commit_ndjson(self, repo_id: str, rev: str, body: bytes) -> None:
        repo = self._repo(repo_id, write=True)
        commit = repo and self._commit(repo, rev)
        if repo is None or commit is None:
            return None
        files, lfs, summary = dict(commit.files), set(commit.lfs), ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in self.hub.blobs:
                    return self._error(422, None, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = self.hub.blobs[value["oid"]]
                lfs.add(value["path"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(404, "EntryNotFound", "A file with this name doesn't exist")
                files.pop(value["path"])
                lfs.discard(value["path"])
            elif key == "deletedFolder":
                for path in [f for f in files if f.startswith(value["path"].rstrip("/") + "/")]:
                    files.pop(path)
                    lfs.discard(path)
            else:
                return self._error(400, None, f"unknown commit key {key}")
        new = self.hub.new_commit(repo, rev, files, lfs, summary)
        self._json(200, {"success": True, "commitOid": new.sha, "commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{new.sha}",
                         "pullRequestUrl": None})

    def _branch(self, repo_id: str, branch: str, payload: dict[str, Any]) -> None:
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return None
        if branch in repo.branches:
            return self._error(409, None, f"Reference already exists: refs/heads/{branch}")
        start = repo.resolve(payload.get("startingPoint") or "main")
        if start is None:
            return self._error(404, "RevisionNotFound", "Invalid starting point")
        repo.branches[branch] = start.sha
        self._json(200, {})

    def _entry(self, commit: Commit, path: str) -> dict[str, Any]:
        data = commit.files[path]
        if path in commit.lfs:
            sha = hashlib.sha256(data).hexdigest()
            pointer = lfs_pointer(sha, len(data))
            return {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(pointer),
                    "lfs": {"oid": sha, "size": len(data), "pointerSize": len(pointer)}}
        return {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}

    def _tree(self, repo_id: str, rev: str, prefix: str, recursive: bool) -> None:
        repo = self._repo(repo_id)
        commit = repo and self._commit(repo, rev)
        if repo is None or commit is None:
            return None
        base = prefix.rstrip("/") + "/" if prefix else ""
        out, folders = [], set()
        for path in sorted(commit.files):
            if not path.startswith(base):
                continue
            rel = path[len(base):]
            if "/" in rel and not recursive:
                folders.add(base + rel.split("/")[0])
                continue
            for i in range(1, rel.count("/") + 1):
                folders.add(base + "/".join(rel.split("/")[:i]))
            out.append(self._entry(commit, path))
        out += [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0}
                for f in sorted(folders)]
        self._json(200, out)

    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id)
        commit = repo and self._commit(repo, rev)
        if repo is None or commit is None:
            return None
        if path not in commit.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}",)
        data = commit.files[path]
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if path in commit.lfs:
            sha = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_oid(data)}"'
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and self.command == "GET":
            start = int(rng[6:].split("-")[0] or 0)
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            data, status = data[start:], 206
        self._send(status, data, headers, content_type="application/octet-stream")

"""A real HTTP server on 127.0.0.1 speaking the part of the Hugging Face hub's API that huggingface_hub's
`create_repo` and `upload_folder` use for small files (tests only): create a repository, validate a model
card's metadata, answer the pre-upload check with "regular" (the files then come inline, base64, in the
commit), and take the commit. What it received is kept per repository."""

from __future__ import annotations

import base64
import threading
from urllib.parse import urlparse

from tests.local_http_server import LocalJSONServer


class FakeHub(LocalJSONServer):
    def __init__(self):
        super().__init__()
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "commits": [{"revision", "summary", "files"}]}
        self.unanswered: list[str] = []  # requests this server does not know
        self._lock = threading.Lock()

    def route(self, method: str, path: str, body) -> tuple[int, dict, dict[str, str]]:
        parts = urlparse(path).path.strip("/").split("/")
        with self._lock:
            if method == "POST" and parts == ["api", "repos", "create"]:
                repo_id = f"{body['organization']}/{body['name']}"
                if repo_id in self.repos:
                    return 409, {"error": "You already created this model repo"}, {}
                # huggingface_hub 2 sends `visibility`; 1.x sends `private`. The hub takes either.
                private = body.get("visibility") == "private" or body.get("private") is True
                self.repos[repo_id] = {"private": private, "commits": []}
                return 200, {"url": f"{self.url}/{repo_id}"}, {}
            if method == "POST" and parts == ["api", "validate-yaml"]:
                return 200, {"errors": [], "warnings": []}, {}
            if method == "POST" and len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
                files = [{"path": item["path"], "uploadMode": "regular", "shouldIgnore": False} for item in body["files"]]
                return 200, {"files": files}, {}
            if method == "POST" and len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
                repo_id, revision = f"{parts[2]}/{parts[3]}", "/".join(parts[5:])
                header = next(item["value"] for item in body if item["key"] == "header")
                files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                         for item in body if item["key"] == "file"}
                self.repos[repo_id]["commits"].append({"revision": revision, "summary": header["summary"],
                                                       "files": files})
                oid = f"{len(self.repos[repo_id]['commits']):040x}"
                return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                             "pullRequestUrl": None}, {}
            self.unanswered.append(f"{method} {path}")
            return 404, {"error": f"not served here: {method} {path}"}, {}

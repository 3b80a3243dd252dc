"""The HTTP plumbing shared by the tests' real servers on 127.0.0.1: a threading server on an ephemeral
port in a daemon thread, JSON request bodies in (newline-delimited JSON as a list), JSON replies out.
A subclass answers `route`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _BurstHTTPServer(ThreadingHTTPServer):
    # Clients open many connections at once (one request per prompt); the default backlog is 5.
    request_queue_size = 128


class LocalJSONServer:
    def __init__(self):
        self._http = _BurstHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    def route(self, method: str, path: str, body: dict | list | None) -> tuple[int, dict, dict[str, str]]:
        """The reply to one request: (status, JSON payload, extra headers)."""
        raise NotImplementedError

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                if "ndjson" in (self.headers.get("Content-Type") or ""):
                    body = [json.loads(line) for line in data.splitlines() if line.strip()]
                else:
                    body = json.loads(data) if data else None
                status, payload, headers = server.route(method, self.path, body)
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                self._serve("POST")

        return Handler

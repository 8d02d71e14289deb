"""A container registry on loopback that speaks the OCI distribution API as ghcr.io does.

Every manifest request without a valid bearer token gets ``401`` with a
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` challenge; the
realm (``/token`` of this server) hands out an anonymous pull token for the
scope ``repository:<name>:pull`` of a public repository, and refuses one for
a private repository. Manifests are served only for media types named in the
request's ``Accept`` header, with ``Docker-Content-Digest`` (the sha256 of the
body), as real registries do. Every request is logged for the tests to check.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class Registry:
    """Repositories (name -> tag -> (media type, manifest bytes)) behind a token service."""

    repositories: dict = field(default_factory=dict)
    private: set = field(default_factory=set)
    digest_on_head: bool = True
    requests: list = field(default_factory=list)
    tokens: dict = field(default_factory=dict)  # token -> scope it grants

    def push(self, name: str, tag: str, media_type: str = OCI_INDEX) -> str:
        """Store a manifest for ``name:tag`` (new content each time); return its digest."""
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [],
                           "nonce": secrets.token_hex(8)}).encode()
        self.repositories.setdefault(name, {})[tag] = (media_type, body)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def start(self) -> Registry:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_HEAD(self):
                registry._handle(self, head=True)

            def do_GET(self):
                registry._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # stop() waits for serve_forever to notice, which it checks once per poll interval (0.5 s by default)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    # -- the protocol -----------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        url = urllib.parse.urlsplit(handler.path)
        self.requests.append((handler.command, url.path, dict(handler.headers)))
        if url.path == "/token":
            return self._token(handler, urllib.parse.parse_qs(url.query))
        parts = url.path.split("/manifests/")
        if not url.path.startswith("/v2/") or len(parts) != 2:
            return self._send(handler, 404, head, {"errors": [{"code": "NAME_UNKNOWN"}]})
        name, tag = parts[0][len("/v2/"):], urllib.parse.unquote(parts[1])
        scope = f"repository:{name}:pull"
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or self.tokens.get(auth[len("Bearer "):]) != scope:
            challenge = (f'Bearer realm="http://{self.host}/token",service="{self.host}",'
                         f'scope="{scope}"')
            return self._send(handler, 401, head, {"errors": [{"code": "UNAUTHORIZED"}]},
                              {"WWW-Authenticate": challenge})
        stored = self.repositories.get(name, {}).get(tag)
        if stored is None:
            return self._send(handler, 404, head, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        media_type, body = stored
        accepted = [part.split(";")[0].strip() for part in handler.headers.get("Accept", "").split(",")]
        if media_type not in accepted:
            return self._send(handler, 404, head, {"errors": [{"code": "MANIFEST_UNKNOWN",
                                                             "message": "no manifest of an accepted type"}]})
        headers = {"Content-Type": media_type}
        if self.digest_on_head or not head:
            headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
        self._send_bytes(handler, 200, head, body, headers)

    def _token(self, handler, query: dict) -> None:
        scope = (query.get("scope") or [""])[0]
        service = (query.get("service") or [""])[0]
        name = scope.split(":")[1] if scope.count(":") == 2 else ""
        if service != self.host or not scope.endswith(":pull") or name in self.private:
            return self._send(handler, 403, False, {"errors": [{"code": "DENIED"}]})
        token = secrets.token_hex(16)
        self.tokens[token] = scope
        self._send(handler, 200, False, {"token": token})

    def _send(self, handler, status: int, head: bool, payload: dict, headers: dict | None = None) -> None:
        self._send_bytes(handler, status, head, json.dumps(payload).encode(),
                         {"Content-Type": "application/json", **(headers or {})})

    @staticmethod
    def _send_bytes(handler, status: int, head: bool, body: bytes, headers: dict) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

"""A tiny synchronous POS client for the agent's local API over its Unix socket.

The demo and tests use it from plain threads, the way a till application would: submit a
document, get `{seq, txn_id}` back only once it is durable.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("lane", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class PosClient:
    """Keeps one HTTP/1.1 connection to the agent and reconnects when it breaks."""

    def __init__(self, socket_path: str, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._conn: UnixHTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = UnixHTTPConnection(self.socket_path, self.timeout)
            try:
                self._conn.request(
                    method, path, body=data, headers={"Content-Type": "application/json"}
                )
                resp = self._conn.getresponse()
                payload = resp.read()
                return resp.status, json.loads(payload) if payload else None
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def submit(self, doc: dict[str, Any]) -> dict[str, Any]:
        """POST a document; returns the confirmation or raises with the API's problem."""
        status, out = self.request("POST", "/v1/documents", doc)
        if status not in (200, 201):
            raise RuntimeError(f"agent refused the document ({status}): {out}")
        assert isinstance(out, dict)
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

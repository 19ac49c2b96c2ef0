"""A static file server with HTTP Range support and injected faults, for streamed-ingest tests.

Run as ``python -m tests.asset_server ROOT PORT_FILE [--faults JSON]``; it writes its port
to PORT_FILE once listening and logs one JSON line per request to ``ROOT/../requests.log``.
Requests may name the file by path (``/landsat/...``) or by absolute URL, as an HTTP proxy
receives them: tests point ``HTTP_PROXY`` here to serve ``*.blob.core.windows.net`` hosts,
whose URLs the Planetary Computer SDK signs with tokens from this server's ``/sas/``.

Faults (JSON object):
- ``busy``: the first N file requests get 429 / 503 in turn;
- ``drop``: the next N ranged file requests of more than 64 KiB send half their body and
  close the connection;
- ``expire_first_token``: the first SAS token this server issues is refused (403,
  "token expired") wherever it is used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _State:
    def __init__(self, root: Path, faults: dict) -> None:
        self.root, self.faults, self.lock = root, dict(faults), threading.Lock()
        self.tokens_issued = 0
        self.log = (root.parent / "requests.log").open("a", buffering=1)

    def take(self, key: str) -> int:
        """Use one of fault ``key``'s remaining count; returns the count before (0: none)."""
        with self.lock:
            left = int(self.faults.get(key, 0))
            if left:
                self.faults[key] = left - 1
            return left


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, *args) -> None:  # noqa: ANN002 - quiet: requests.log has them
        pass

    def _record(self, path: str, status: int, sent: int) -> None:
        self.state.log.write(json.dumps({"path": path, "status": status, "bytes": sent,
                                         "range": self.headers.get("Range", "")}) + "\n")

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path.startswith("/sas/"):
            return self._token()
        query = parse_qs(url.query)
        target = (self.state.root / url.path.lstrip("/")).resolve()
        if not target.is_file() or self.state.root not in target.parents:
            self._record(url.path, 404, 0)
            return self._reply(404, b"not found")
        if query.get("sig") == ["token-1"] and self.state.faults.get("expire_first_token"):
            self._record(url.path, 403, 0)
            return self._reply(403, b"AuthenticationFailed: Signed expiry time has passed")
        busy = self.state.take("busy")
        if busy:
            status = 429 if busy % 2 else 503
            self._record(url.path, status, 0)
            return self._reply(status, b"busy", {"Retry-After": "0"})
        self._send_file(target, url.path)

    def _send_file(self, target: Path, path: str) -> None:
        size = target.stat().st_size
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        if not match:
            body = target.read_bytes()
            self._record(path, 200, len(body))
            return self._reply(200, body)
        start = int(match.group(1))
        stop = min(size, int(match.group(2)) + 1 if match.group(2) else size)
        if start >= size:
            self._record(path, 416, 0)
            return self._reply(416, b"", {"Content-Range": f"bytes */{size}"})
        with target.open("rb") as f:
            f.seek(start)
            body = f.read(stop - start)
        if len(body) > 64 * 1024 and self.state.take("drop"):
            self.send_response(206)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self._record(path, -206, len(body) // 2)
            self.close_connection = True
            return
        self._record(path, 206, len(body))
        self._reply(206, body, {"Content-Range": f"bytes {start}-{stop - 1}/{size}"})

    def _token(self) -> None:
        with self.state.lock:
            self.state.tokens_issued += 1
            n = self.state.tokens_issued
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = json.dumps({"msft:expiry": expiry,
                           "token": f"st=2026-01-01&se=2099-01-01&sp=rl&sig=token-{n}"}).encode()
        self._record(self.path, 200, len(body))
        self._reply(200, body, {"Content-Type": "application/json"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("port_file", type=Path)
    parser.add_argument("--faults", default="{}")
    args = parser.parse_args()
    Handler.state = _State(args.root.resolve(), json.loads(args.faults))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()

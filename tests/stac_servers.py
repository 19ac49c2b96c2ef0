"""A real STAC API (``rustac serve``, in-memory backend) and an asset server with Range
support and injected faults (``tests/asset_server.py``), each a subprocess on a free
port of 127.0.0.1, stopped by its process id."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.prefect_server import free_port, session_process, tail

RUSTAC = str(Path(sys.executable).with_name("rustac"))


@contextmanager
def asset_server(root: Path, faults: dict | None = None, timeout: float = 30
                 ) -> Iterator[dict]:
    """Serve ``root``; yields ``{"url", "log", "requests"}`` (``requests()`` reads the
    request log: one dict per request, with its path, status, bytes sent and range)."""
    port_file = root.parent / f".asset-port-{time.monotonic_ns()}"
    log = root.parent / "asset-server.log"
    requests_log = root.parent / "requests.log"
    args = [sys.executable, "-m", "tests.asset_server", str(root), str(port_file),
            "--faults", json.dumps(faults or {})]
    with session_process(args, log, None) as proc:
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            assert proc.poll() is None, tail(log)
            assert time.monotonic() < deadline, f"asset server did not start:\n{tail(log)}"
            time.sleep(0.05)

        def requests() -> list[dict]:
            if not requests_log.exists():
                return []
            return [json.loads(line) for line in requests_log.read_text().splitlines()]

        yield {"url": f"http://127.0.0.1:{port_file.read_text()}", "log": log,
               "requests": requests}


@contextmanager
def stac_api(items: Path, timeout: float = 60) -> Iterator[str]:
    """``rustac serve`` over an item collection file; yields the API's root URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = items.parent / "rustac.log"
    args = [RUSTAC, "serve", "--addr", f"127.0.0.1:{port}", "--create-collections", str(items)]
    with session_process(args, log, None):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"rustac serve did not start:\n{tail(log)}"
            time.sleep(0.1)
        yield url

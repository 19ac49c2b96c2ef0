"""Ranged reads over HTTP against a real server that fails on purpose."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from pipeline.ingest.remote_files import COUNTER, RemoteFile, RemoteReadError, RetryPolicy, fetch
from tests.stac_servers import asset_server

QUICK = RetryPolicy(attempts=3, backoff_s=0.0)


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    path = root / "blob.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 255, 300_000, np.uint8).tobytes())
    return path


def test_a_file_read_through_dropped_connections_equals_the_original(blob: Path) -> None:
    with asset_server(blob.parent, {"drop": 1, "busy": 1}) as server:
        url = f"{server['url']}/blob.bin"
        remote = RemoteFile(url, QUICK)
        remote.seek(1000)
        assert remote.read(200_000) == blob.read_bytes()[1000:201_000]
        assert remote.seek(0, io.SEEK_END) == blob.stat().st_size
        statuses = [r["status"] for r in server["requests"]()]
    assert -206 in statuses and 429 in statuses  # the faults happened and were survived
    assert COUNTER.totals([url]) == (200_000, blob.stat().st_size)


def test_a_server_that_stays_busy_is_an_error_naming_the_url(blob: Path) -> None:
    with asset_server(blob.parent, {"busy": 10}) as server:
        url = f"{server['url']}/blob.bin"
        with pytest.raises(RemoteReadError, match=r"no answer after 3 attempts \(HTTP (429|503)\)"
                           ) as info:
            fetch(url, 0, 100, QUICK)
    assert url in str(info.value)


def test_a_missing_file_is_not_retried(blob: Path) -> None:
    with asset_server(blob.parent) as server:
        url = f"{server['url']}/missing.bin"
        with pytest.raises(RemoteReadError, match="HTTP 404"):
            fetch(url, 0, 100, QUICK)
        assert len(server["requests"]()) == 1

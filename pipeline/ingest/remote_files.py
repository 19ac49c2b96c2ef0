"""Band files and MTLs read in place over HTTP(S): ranged reads that retry, re-sign and count.

GDAL reads a remote GeoTIFF through ``rasterio.open(url, opener=...)``: each of its reads
becomes a ranged GET issued here. So one place retries what real networks do (429 and
5xx answers, timeouts, connections dropped mid-body) with backoff, re-signs a Planetary
Computer URL whose token expired (403), and counts the bytes each file costs, which is
how an ingest reports what it read against the products' full sizes.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlparse, urlsplit, urlunsplit

import httpx
import numpy as np

from pipeline.core.errors import ForestNetError
from pipeline.core.lru_cache import ByteBoundedLRU

log = logging.getLogger("pipeline.ingest.scene_ingest")  # the ingest stage's one logger

#: Answers worth another try: rate limits and server-side trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Azure Blob Storage hosts, whose Planetary Computer SAS tokens expire mid-job.
SAS_HOST_SUFFIX = ".blob.core.windows.net"
#: Smallest request: GDAL parses a GeoTIFF header in many small reads. Larger reads (tiles)
#: are fetched as asked: rounding them up read neighbouring tiles the part does not need
#: (64 KiB read 64% of the products for a quarter of their pixels; 16 KiB, see the test).
MIN_REQUEST = 16 * 1024


class RemoteReadError(ForestNetError, OSError):
    """A remote file that could not be read; the message names the URL and the reason."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``attempts`` requests per read, exponential backoff with jitter."""

    attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    timeout_s: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_backoff_s)
        return min(self.backoff_s * 2**attempt, self.max_backoff_s) * (0.5 + random.random())


DEFAULT_RETRY = RetryPolicy()


class ReadCounter:
    """Bytes read and full sizes per URL, for this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.read: dict[str, int] = {}
        self.size: dict[str, int] = {}
        self.retries = 0

    def add(self, url: str, n: int, size: int | None) -> None:
        with self._lock:
            self.read[url] = self.read.get(url, 0) + n
            if size is not None:
                self.size[url] = size

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def totals(self, urls: list[str]) -> tuple[int, int]:
        """(bytes read, full bytes) of ``urls`` so far."""
        keys = {unsigned(u) for u in urls}
        with self._lock:
            return (sum(self.read.get(u, 0) for u in keys),
                    sum(self.size.get(u, 0) for u in keys))


COUNTER = ReadCounter()


def is_http(location: str) -> bool:
    return location.lower().startswith(("http://", "https://"))


def unsigned(url: str) -> str:
    """The URL without a SAS token (its query), the key that reads are counted under."""
    parts = urlsplit(url)
    if parts.netloc.endswith(SAS_HOST_SUFFIX):
        return urlunsplit(parts._replace(query=""))
    return url


def resign(url: str) -> str:
    """A fresh Planetary Computer SAS token for ``url`` (the old one expired or was refused).

    The SDK caches a token per container until a minute before its expiry; a server that
    refused it knows better, so that cache entry goes first.
    """
    from planetary_computer import sas

    bare = unsigned(url)
    account, container = sas.parse_blob_url(urlparse(bare))
    request = f"{sas.Settings.get().sas_url}/{account}/{container}"
    sas.TOKEN_CACHE.pop(request, None)
    return sas.sign_url(bare)


@lru_cache(maxsize=1)
def _client() -> httpx.Client:
    # One pooled client per process; it honours HTTP(S)_PROXY like GDAL would.
    return httpx.Client(follow_redirects=True, timeout=DEFAULT_RETRY.timeout_s,
                        limits=httpx.Limits(max_connections=32))


def fetch(url: str, start: int | None = None, stop: int | None = None,
          policy: RetryPolicy = DEFAULT_RETRY) -> tuple[bytes, int | None, str]:
    """GET ``url`` (bytes ``start:stop`` when given); ``(body, full size, url used)``.

    The URL used is the one that worked: re-signed when its token had expired.
    """
    headers = {} if start is None else {"Range": f"bytes={start}-{stop - 1}"}
    last = ""
    for attempt in range(policy.attempts):
        try:
            response = _client().get(url, headers=headers, timeout=policy.timeout_s)
            status = response.status_code
            if status == 403 and urlsplit(url).netloc.endswith(SAS_HOST_SUFFIX):
                last = "HTTP 403 (token refused)"
                url = resign(url)
                log.warning("%s: token refused (403); re-signed, trying again", unsigned(url))
                continue
            if status in RETRY_STATUSES:
                last = f"HTTP {status}"
                _pause(url, last, attempt, policy, response.headers.get("Retry-After"))
                continue
            if status == 416:  # a read past the end: nothing there
                return b"", _full_size(response), url
            if status >= 400:
                raise RemoteReadError(f"{unsigned(url)}: HTTP {status} "
                                      f"{response.reason_phrase}")
            body = response.content
            if status == 206 and stop is not None:
                expected = min(stop, _full_size(response) or stop) - start
                if len(body) != expected:
                    last = f"short body ({len(body)} of {expected} bytes)"
                    _pause(url, last, attempt, policy)
                    continue
            size = _full_size(response) if status == 206 else len(body)
            COUNTER.add(unsigned(url), len(body), size)  # what crossed the network
            if status == 200 and start is not None:
                body = body[start:stop]  # a server without range support sent it all
            return body, size, url
        except httpx.TransportError as exc:  # timeouts, refused or dropped connections
            last = f"{type(exc).__name__}: {exc}"
            _pause(url, last, attempt, policy)
    raise RemoteReadError(f"{unsigned(url)}: no answer after {policy.attempts} attempts "
                          f"({last})")


def _pause(url: str, why: str, attempt: int, policy: RetryPolicy,
           retry_after: str | None = None) -> None:
    if attempt + 1 >= policy.attempts:
        return
    wait = policy.delay(attempt, retry_after)
    COUNTER.retried()
    log.warning("%s: %s; retry %d of %d in %.1f s", unsigned(url), why, attempt + 1,
                policy.attempts - 1, wait)
    time.sleep(wait)


def _full_size(response: httpx.Response) -> int | None:
    total = response.headers.get("Content-Range", "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def read_text(url: str) -> str:
    """A whole small remote file (an MTL or a STAC Item) as text."""
    return fetch(url)[0].decode("utf-8")


#: Ranges read lately in this process, shared by every open file: a band is opened once
#: to check it and again to read it, and both read its header and first tiles.
_RECENT = ByteBoundedLRU(64 * 2**20)


class RemoteFile(io.RawIOBase):
    """A seekable, read-only view of a remote file, fetched in ranges as it is read.

    Recent ranges are kept (a few MiB at most), so GDAL's many small header reads cost a
    handful of requests.
    """

    def __init__(self, url: str, policy: RetryPolicy = DEFAULT_RETRY, cache_blocks: int = 16):
        super().__init__()
        self.url, self.policy, self.pos = url, policy, 0
        self.size: int | None = None
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = cache_blocks

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset += self._size()
        elif whence == io.SEEK_CUR:
            offset += self.pos
        self.pos = max(0, offset)
        return self.pos

    def _size(self) -> int:
        if self.size is None:
            self._get(0, MIN_REQUEST)
        return self.size or 0

    def _get(self, start: int, stop: int) -> bytes:
        key = (unsigned(self.url), start, stop)
        held = _RECENT.get(key)
        if held is None:
            body, size, self.url = fetch(self.url, start, stop, self.policy)
            _RECENT.put(key, (np.frombuffer(body, np.uint8), np.array([size or -1])))
        else:
            body, size = held[0].tobytes(), int(held[1][0])
            size = None if size < 0 else size
        if size is not None:
            self.size = size
        self._blocks[start] = body
        while len(self._blocks) > self._cache_blocks:
            self._blocks.popitem(last=False)
        return body

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        view = memoryview(buffer).cast("B")
        want = len(view)
        if self.size is not None:
            want = min(want, self.size - self.pos)
        if want <= 0:
            return 0
        data = self._cached(self.pos, want)
        if data is None:
            data = self._get(self.pos, self.pos + max(want, MIN_REQUEST))[:want]
        view[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def _cached(self, start: int, n: int) -> bytes | None:
        for first, block in reversed(self._blocks.items()):
            if first <= start and start + n <= first + len(block):
                return block[start - first:start - first + n]
        return None


def remote_opener(url: str):
    """A rasterio ``opener`` serving ``url`` alone: GDAL's probes for side-car files of a
    remote product get "not found" without a request (USGS products have none)."""

    def opener(path: str, mode: str = "rb") -> io.RawIOBase:
        if path != url:
            raise FileNotFoundError(path)
        return RemoteFile(url)

    return opener

"""Reading inputs over HTTP(S) as a stream that survives a flaky server.

Common Crawl's servers answer heavy readers with 503s and dropped connections. `HTTPStream` reads
a URL front to back without downloading it first; when a request fails in a way that may pass
(HTTP 5xx or 429, a reset or timed-out connection, a body cut short of its Content-Length) it
waits (exponential backoff with jitter) and asks again from the byte where the data stopped
(`Range: bytes=N-`; a server that ignores ranges is read from the start and the first N bytes
skipped). After `retries` failed attempts in a row without a byte of progress, or at once for an
answer that will not change (404, 403, ...), it raises `InputUnavailable`: the task of that file
fails alone, is counted, and leaves no completion marker, so a rerun tries it again.

Other URL schemes (s3://, gs://, ...) go through fsspec and its own retry settings.
"""

from __future__ import annotations

import http.client
import io
import logging
import random
import socket
import time
import urllib.error
import urllib.request
from typing import BinaryIO, Callable, Optional

import fsspec

log = logging.getLogger("dataprep")
USER_AGENT = "ccpretrain-dataprep (+https://github.com/; research crawl processing)"
TRANSIENT_STATUS = {429, 500, 502, 503, 504}


class InputUnavailable(OSError):
    """An input that could not be read, after retrying what may pass."""


class _Transient(Exception):
    pass


class HTTPStream(io.RawIOBase):
    def __init__(self, url: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.url, self.retries, self.backoff_s, self.timeout_s = url, retries, backoff_s, timeout_s
        self.sleep = sleep
        self.pos = 0  # bytes delivered so far
        self.length: Optional[int] = None  # the whole body's, once a response said it
        self.failures = 0  # failed attempts in a row without progress
        self.attempts = 0  # requests made
        self._resp: Optional[http.client.HTTPResponse] = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def _open(self) -> None:
        headers = {"User-Agent": USER_AGENT}
        if self.pos:
            headers["Range"] = f"bytes={self.pos}-"
        self.attempts += 1
        try:
            resp = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=self.timeout_s)
        except urllib.error.HTTPError as e:
            if e.code == 416 and self.length is not None and self.pos >= self.length:
                self._resp = None
                return
            if e.code in TRANSIENT_STATUS:
                raise _Transient(f"HTTP {e.code}") from None
            raise InputUnavailable(f"{self.url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
            raise _Transient(f"{type(e).__name__}: {e}") from None
        if self.pos and resp.status == 206:
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            self.length = int(total) if total.isdigit() else self.length
        else:
            size = resp.headers.get("Content-Length")
            self.length = int(size) if size and size.isdigit() else None
            skip = self.pos  # a server that ignored the range: read past what we have
            while skip:
                chunk = resp.read(min(skip, 1 << 20))
                if not chunk:
                    raise _Transient("body cut short while skipping to the resume point")
                skip -= len(chunk)
        self._resp = resp

    def readinto(self, buffer) -> int:
        while True:
            try:
                if self._resp is None:
                    if self.length is not None and self.pos >= self.length:
                        return 0
                    self._open()
                    if self._resp is None:
                        return 0
                n = self._resp.readinto(buffer)
                if n == 0 and self.length is not None and self.pos < self.length:
                    raise _Transient(f"body cut short at byte {self.pos} of {self.length}")
                if n:
                    self.pos += n
                    self.failures = 0
                return n
            except (_Transient, http.client.IncompleteRead, http.client.HTTPException, ConnectionError,
                    socket.timeout, TimeoutError) as e:
                self._retry(e)

    def _retry(self, error: Exception) -> None:
        self.close_response()
        self.failures += 1
        if self.failures > self.retries:
            raise InputUnavailable(
                f"{self.url}: {error} (at byte {self.pos}; {self.failures} failed attempts in a row)") from None
        wait = min(60.0, self.backoff_s * 2 ** (self.failures - 1)) * (0.5 + random.random() / 2)
        log.warning("%s: %s at byte %d; retry %d of %d in %.1fs", self.url, error, self.pos, self.failures,
                    self.retries, wait)
        self.sleep(wait)

    def close_response(self) -> None:
        if self._resp is not None:
            try:
                self._resp.close()
            except OSError:
                pass
            self._resp = None

    def close(self) -> None:
        self.close_response()
        super().close()


def is_http(path: str) -> bool:
    return str(path).startswith(("http://", "https://"))


def open_input(path: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60.0) -> BinaryIO:
    """A binary stream of a local path, an http(s) URL (HTTPStream, buffered) or another fsspec URL;
    `peek` works on all of them."""
    if is_http(path):
        return io.BufferedReader(HTTPStream(path, retries, backoff_s, timeout_s), buffer_size=1 << 20)
    if "://" not in str(path) or str(path).startswith("file://"):
        return open(str(path).removeprefix("file://"), "rb")
    return io.BufferedReader(fsspec.open(str(path), "rb").open(), buffer_size=1 << 20)

"""An HTTP response's payload: undoing its transfer and content codings, and telling whether it can
become a document (dataprep/ingest.py reads the records; their drop reasons are listed there)."""

from __future__ import annotations

import re
import zlib
from typing import Optional

# Payload kinds that are never HTML whatever the Content-Type says.
BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"PK\x03\x04", b"\x00\x00\x01\x00",
                b"RIFF", b"\x1f\x8b", b"BM", b"ID3", b"OggS", b"\x00\x00\x00")
HTML_SNIFF = re.compile(rb"<(!doctype\s+html|html|head|body|title|meta|div|p|table)[\s>/]", re.I)
CHUNK_HEAD = re.compile(rb"[0-9A-Fa-f]+[ \t]*(;[^\r\n]*)?\r?\n")


def payload_problem(kind: str, ctype: str, body: bytes) -> Optional[str]:
    """Why a payload cannot become a document (None when it can)."""
    if not body.strip():
        return "empty_body"
    if kind == "text":
        return None
    if body.lstrip()[:8].startswith(BINARY_MAGIC):
        return "not_html"
    ctype = ctype.lower()
    if "html" in ctype:
        return None
    # No or a generic Content-Type: HTML when its first bytes say so.
    if ctype.split(";")[0].strip() in ("", "unknown", "unknown/unknown", "application/octet-stream",
                                        "text/plain") and HTML_SNIFF.search(body[:1024]):
        return None
    return "not_html"


def decode_http_body(body: bytes, transfer: str, content: str, cap: int) -> bytes:
    """Undo chunked transfer coding and gzip / deflate / br content coding, each only when the
    body is really so coded (a failed decode keeps the bytes as stored)."""
    if "chunked" in transfer.lower() and CHUNK_HEAD.match(body):
        body = dechunk(body)
    enc = content.lower().strip()
    try:
        if enc in ("gzip", "x-gzip") and body[:2] == b"\x1f\x8b":
            body = _inflate(body, 31, cap)
        elif enc == "deflate":
            try:
                body = _inflate(body, 15, cap)
            except zlib.error:
                body = _inflate(body, -15, cap)
        elif enc == "br":
            import brotli  # noqa: PLC0415 - optional; without it the body stays as stored
            body = brotli.decompress(body)
    except Exception:  # noqa: BLE001 - keep the stored bytes
        pass
    return body


def _inflate(body: bytes, wbits: int, cap: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(body, cap + 1)  # a decompression bomb stops at the cap
    return out


def dechunk(body: bytes) -> bytes:
    """Chunked transfer coding to the body; a broken chunk ends it with what came before."""
    out, pos = [], 0
    while pos < len(body):
        m = CHUNK_HEAD.match(body, pos)
        if not m:
            break
        size = int(m.group(0).split(b";")[0].strip(), 16)
        if size == 0:
            break
        start = m.end()
        out.append(body[start:start + size])
        pos = start + size
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
    return b"".join(out)

"""An HTTP response's payload: undoing its transfer and content codings, and telling whether it can
become a document (dataprep/ingest.py reads the records; their drop reasons are listed there)."""

from __future__ import annotations

import re
import zlib
from typing import Optional

import brotli

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


class PayloadTooLarge(Exception):
    """A body that decodes to more than the size cap (dropped as too_large, never cut)."""


def decode_http_body(body: bytes, transfer: str, content: str, cap: int) -> bytes:
    """Undo chunked transfer coding and gzip / deflate / br content coding, each only when the
    body is really so coded (a failed decode keeps the bytes as stored). A body that decodes to
    more than `cap` bytes raises PayloadTooLarge (decoding stops there: a decompression bomb
    costs no more than the cap)."""
    if "chunked" in transfer.lower() and CHUNK_HEAD.match(body):
        body = dechunk(body)
    enc = content.lower().strip()
    try:
        if enc in ("gzip", "x-gzip") and body[:2] == b"\x1f\x8b":
            return _inflate(body, 31, cap)
        if enc == "deflate":
            try:
                return _inflate(body, 15, cap)
            except zlib.error:
                return _inflate(body, -15, cap)
        if enc == "br":
            return _unbrotli(body, cap)
    except (zlib.error, brotli.error):  # not so coded after all: keep the stored bytes
        pass
    return body


def _inflate(body: bytes, wbits: int, cap: int) -> bytes:
    d = zlib.decompressobj(wbits)
    return _within_cap(d.decompress(body, cap + 1), cap)


def _unbrotli(body: bytes, cap: int) -> bytes:
    d = brotli.Decompressor()
    out = _within_cap(d.process(body, output_buffer_limit=cap + 1), cap)
    if not d.is_finished():  # a cut or corrupt stream: brotli gives no error for a cut one
        raise brotli.error("brotli stream ends early")
    return out


def _within_cap(out: bytes, cap: int) -> bytes:
    if len(out) > cap:
        raise PayloadTooLarge(f"decodes to more than {cap} bytes")
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

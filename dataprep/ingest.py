"""Read crawl archives into raw records: WARC (gzip per record, whole-file gzip or plain), Common
Crawl WET, and the old ARC-v1 format, from local paths or any fsspec URL (s3://, https://, file://).

Yields one `RawRecord` per candidate document: HTTP responses and resource records (HTML to be
extracted), WET conversion records (text as is) and ARC records. Requests, metadata and warcinfo
records are not documents and are not counted.

Bad input never stops a file and never costs a good record: gzip members are decompressed one at
a time, so a corrupt member is skipped (the reader resyncs to the next member) and a truncated
one yields the records it still holds whole; each loss is a record with a `drop_reason`:

  corrupt_gzip   a gzip member that does not decompress (its records, when one header is legible)
  truncated      the record the file (or a gzip member) ends in the middle of
  bad_http       an HTTP response whose status line or headers cannot be parsed
  http_status    an HTTP status other than 200
  not_html       a payload that is not HTML by its Content-Type or its first bytes (images, PDF)
  empty_body     nothing in the payload
  too_large      a payload over the size cap (not read)
  bad_record     a WARC/ARC record whose own header cannot be parsed

HTTP transfer and content encodings (chunked, gzip, deflate, br) are undone here, each only when
the body really is so encoded: crawlers (the 2008 ARC file, some wget WARCs) store the decoded
body under the original headers.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import fsspec
from fastwarc.warc import ArchiveIterator, WarcRecordType

from dataprep.readers import file_name

DOC_TYPES = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
DOC_TYPE_NAMES = {b"response", b"resource", b"conversion"}
GZIP_MAGIC = b"\x1f\x8b\x08"
READ_CHUNK = 1 << 20  # compressed bytes read at a time
FEED_CHUNK = 1 << 16  # compressed bytes fed to zlib at a time (bounds what a corrupt member loses)
BLOCK_BYTES = 8 << 20  # whole decompressed members batched into one parse of about this size

# Payload kinds that are never HTML whatever the Content-Type says.
BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"PK\x03\x04", b"\x00\x00\x01\x00",
                b"RIFF", b"\x1f\x8b", b"BM", b"ID3", b"OggS", b"\x00\x00\x00")
HTML_SNIFF = re.compile(rb"<(!doctype\s+html|html|head|body|title|meta|div|p|table)[\s>/]", re.I)
CHUNK_HEAD = re.compile(rb"[0-9A-Fa-f]+[ \t]*(;[^\r\n]*)?\r?\n")
ARC_HEADER = re.compile(rb"^(\S+) (\S+) (\d{14}) (\S*) (\d+)\r?$")


@dataclass
class RawRecord:
    id: str
    url: str
    date: str
    kind: str  # "html" | "text"
    payload: bytes
    charset: Optional[str]
    drop_reason: Optional[str] = None  # set when the record cannot become a document
    raw_bytes: int = 0  # bytes of the record's stored payload (before HTTP decoding)


# --- records --------------------------------------------------------------------------------------

def read_records(path: str | Path, max_payload_bytes: int) -> Iterator[RawRecord]:
    """Every candidate document of one archive, in file order (see the module doc)."""
    name = file_name(path)
    with fsspec.open(str(path), "rb") as f:
        head = f.read(4)
        f.seek(0)
        if head.startswith(GZIP_MAGIC[:2]):
            yield from _read_gzip(f, name, max_payload_bytes)
        elif head.startswith(b"file"):  # ARC-v1 starts with its filedesc:// version block
            yield from _read_arc(f, name, max_payload_bytes)
        else:
            yield from _read_warc(f, name, max_payload_bytes)


def _read_gzip(f: BinaryIO, name: str, cap: int) -> Iterator[RawRecord]:
    block: list[bytes] = []
    size, arc = 0, None
    for offset, data, status in gzip_members(f):
        if arc is None:
            arc = data.startswith(b"filedesc://")
        if status == "ok":
            block.append(data)
            size += len(data)
            if size < BLOCK_BYTES:
                continue
        if block:
            yield from _parse_block(b"".join(block), name, cap, arc)
            block, size = [], 0
        if status != "ok":
            yield from _damaged_block(data, name, cap, arc, status, offset)
    if block:
        yield from _parse_block(b"".join(block), name, cap, bool(arc))


def _parse_block(data: bytes, name: str, cap: int, arc: bool) -> Iterator[RawRecord]:
    reader = _read_arc if arc else _read_warc
    yield from reader(io.BytesIO(data), name, cap)


WARC_START = re.compile(rb"(?:\A|\n)WARC/\d")


def _salvage(member: bytes, step: int = 256) -> bytes:
    """What a corrupt gzip member decompresses to before the damage (fed in small steps, so the
    record header before it survives to name the loss)."""
    d, out = zlib.decompressobj(31), []
    for i in range(0, len(member), step):
        try:
            out.append(d.decompress(member[i:i + step]))
        except zlib.error:
            break
    return b"".join(out)


def _damaged_block(data: bytes, name: str, cap: int, arc: bool, status: str, offset: int) -> Iterator[RawRecord]:
    """The records of a truncated or corrupt gzip member: those whole come through; the one the
    damage cut is dropped (truncated / corrupt_gzip), named by its header when that survived.
    A damaged request / metadata / warcinfo record is no document and adds nothing."""
    reason = "truncated" if status == "truncated" else "corrupt_gzip"
    if arc:
        recs = list(_read_arc(io.BytesIO(data), name, cap))
        if recs and recs[-1].drop_reason == "truncated":
            recs[-1].drop_reason = reason
        else:
            recs.append(RawRecord(f"{name}#gz{offset}", "", "", "html", b"", None, reason))
        yield from recs
        return
    starts = [m.end() - 6 for m in WARC_START.finditer(data)]
    fields = _header_fields(data[starts[-1]:].split(b"\r\n\r\n", 1)[0]) if starts else {}
    recs = list(_read_warc(io.BytesIO(data), name, cap))
    rtype = fields.get(b"warc-type")
    if rtype is not None and rtype not in DOC_TYPE_NAMES:
        yield from recs
        return
    rid = fields.get(b"warc-record-id", f"{name}#gz{offset}".encode()).decode("utf-8", "replace").strip("<>")
    if recs and recs[-1].id == rid:
        recs[-1].drop_reason, recs[-1].payload = reason, b""
    else:
        url = fields.get(b"warc-target-uri", b"").decode("utf-8", "replace").strip("<>")
        date = fields.get(b"warc-date", b"").decode("utf-8", "replace")
        recs.append(RawRecord(rid, url, date, "html", b"", None, reason))
    yield from recs


def gzip_members(f: BinaryIO) -> Iterator[tuple[int, bytes, str]]:
    """(offset, decompressed bytes, status) for each gzip member of `f`: status "ok", "truncated"
    (the file ends inside it; the bytes are what it held) or "corrupt" (it fails to decompress;
    the bytes are what came out before that). After a corrupt member the reader resyncs to the
    next position where a member starts and decompresses; the bytes in between are skipped."""
    buf, start, base, eof = b"", 0, 0, False  # buf[start:] holds the file from offset base + start

    def refill() -> bool:
        nonlocal buf, start, base, eof
        more = f.read(READ_CHUNK)
        if not more:
            eof = True
            return False
        if start:  # drop what was consumed (once per read, not once per member)
            buf, base, start = buf[start:], base + start, 0
        buf += more
        return True

    resyncing = False
    while True:
        while len(buf) - start < 18 and not eof:
            refill()
        if start >= len(buf):
            return
        if not buf.startswith(GZIP_MAGIC, start):  # garbage between members: skip to the next one
            j = buf.find(GZIP_MAGIC, start + 1)
            while j < 0 and not eof:
                start = max(start, len(buf) - 2)
                refill()
                j = buf.find(GZIP_MAGIC, start)
            if j < 0:
                return
            start = j
        d = zlib.decompressobj(31)
        out: list[bytes] = []
        pos, status = start, None  # pos: next byte of buf to feed
        while status is None:
            if pos >= len(buf):
                shift = start
                if not refill():
                    status = "truncated"
                    break
                pos -= shift - start
            piece = buf[pos:pos + FEED_CHUNK]
            try:
                out.append(d.decompress(piece))
            except zlib.error:
                status = "corrupt"
                out = [_salvage(buf[start:pos + len(piece)])]
                break
            pos += len(piece)
            if d.eof:
                pos -= len(d.unused_data)
                status = "ok"
        data = b"".join(out)
        if status == "ok":
            resyncing = False
            yield base + start, data, status
            start = pos
            continue
        if status == "truncated":
            if not resyncing:
                yield base + start, data, status
            return
        # Corrupt: report once per corrupt stretch (a false start inside it is not news), then
        # try the next member magic after this member's start.
        if not resyncing:
            yield base + start, data, status
        resyncing = True
        start += 1


def _header_fields(block: bytes) -> dict[bytes, bytes]:
    fields = {}
    for line in block.split(b"\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def _read_warc(stream: BinaryIO, name: str, cap: int) -> Iterator[RawRecord]:
    records = ArchiveIterator(stream, record_types=DOC_TYPES, parse_http=True, quirks_mode=True,
                              auto_decode="none", fsspec_args=False)
    # quirks_mode: LF-only HTTP headers (ClueWeb09) would otherwise eat the page's start.
    it = iter(records)
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - the parser gave up on the rest of this stream
            yield RawRecord(f"{name}#{stream.tell()}", "", "", "html", b"", None, "bad_record")
            return
        try:
            yield _from_warc(rec, name, cap)
        except Exception:  # noqa: BLE001 - one unreadable record must not stop the file
            yield RawRecord(f"{name}#{rec.stream_pos}", "", "", "html", b"", None, "bad_record")


def _from_warc(rec, name: str, cap: int) -> RawRecord:
    h = rec.headers
    rid = (h.get("WARC-Record-ID") or f"<{name}#{rec.stream_pos}>").strip().strip("<>")
    url = (h.get("WARC-Target-URI") or "").strip().strip("<>")
    date = h.get("WARC-Date") or ""
    r = RawRecord(rid, url, date, "html", b"", None)
    if rec.record_type == WarcRecordType.conversion:
        r.kind, r.charset = "text", "utf-8"
        ctype = "text/plain"
    elif rec.is_http:
        status = rec.http_headers.status_code
        if not status:
            r.drop_reason = "bad_http"
            return r
        if status != 200:
            r.drop_reason = "http_status"
            return r
        ctype = rec.http_content_type or ""
        r.charset = rec.http_charset
    else:
        ctype = h.get("Content-Type") or ""
    if rec.content_length > cap:
        r.drop_reason = "too_large"
        return r
    body = rec.reader.read()
    r.raw_bytes = len(body)
    if rec.is_http:
        hh = rec.http_headers
        body = decode_http_body(body, hh.get("Transfer-Encoding") or "", hh.get("Content-Encoding") or "", cap)
    r.payload = body
    r.drop_reason = payload_problem(r.kind, ctype, body)
    if r.drop_reason:
        r.payload = b""
    return r


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


# --- ARC-v1 ---------------------------------------------------------------------------------------

def _read_arc(stream: BinaryIO, name: str, cap: int) -> Iterator[RawRecord]:
    """ARC-v1 records: a header line `URL IP-address Archive-date Content-type Archive-length`,
    then Archive-length bytes (for HTTP captures: the response with its headers), then a newline.
    The first record (`filedesc://...`) is the version block. Each record is handed to the WARC
    path as a synthesized WARC response, so both formats share one HTTP and payload code path."""
    while True:
        offset = stream.tell()
        line = stream.readline()
        if not line:
            return
        if not line.strip():
            continue
        m = ARC_HEADER.match(line.rstrip(b"\n"))
        if not m:  # not a header: resync at the next line that is one
            yield RawRecord(f"{name}#arc{offset}", "", "", "html", b"", None, "bad_record")
            while True:
                offset = stream.tell()
                line = stream.readline()
                if not line or ARC_HEADER.match(line.rstrip(b"\n")):
                    break
            if not line:
                return
            m = ARC_HEADER.match(line.rstrip(b"\n"))
        url, _ip, date, ctype, length = (g.decode("latin-1") for g in m.groups())
        body = stream.read(int(length))
        if url.startswith("filedesc://"):
            continue
        rid = f"urn:arc:{name}:{offset}"
        iso = f"{date[:4]}-{date[4:6]}-{date[6:8]}T{date[8:10]}:{date[10:12]}:{date[12:14]}Z"
        if len(body) < int(length):
            yield RawRecord(rid, url, iso, "html", b"", None, "truncated")
            return
        yield from _read_warc(io.BytesIO(arc_to_warc(rid, url, iso, ctype, body)), name, cap)


def arc_to_warc(rid: str, url: str, date: str, ctype: str, body: bytes) -> bytes:
    if body.startswith(b"HTTP/"):
        wtype, wctype = b"response", b"application/http; msgtype=response"
    else:
        wtype, wctype = b"resource", (ctype or "application/octet-stream").encode("latin-1")
    head = (b"WARC/1.0\r\nWARC-Type: " + wtype + b"\r\nWARC-Record-ID: <" + rid.encode() + b">\r\n"
            b"WARC-Target-URI: " + url.encode("latin-1") + b"\r\nWARC-Date: " + date.encode() + b"\r\n"
            b"Content-Type: " + wctype + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head + body + b"\r\n\r\n"

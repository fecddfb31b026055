"""Read crawl archives into raw records: WARC (gzip per record, whole-file gzip or plain), Common
Crawl WET, and the old ARC-v1 format, from local paths or any fsspec URL (s3://, https://, file://).

Yields one `RawRecord` per candidate document: HTTP responses and resource records (HTML to be
extracted), WET conversion records (text as is) and ARC records. Requests, metadata and warcinfo
records are not documents and are not counted.

Bad input never stops a file and never costs a good record: gzip members are decompressed one at
a time (dataprep/gzip_members.py), so a corrupt member is skipped (the reader resyncs to the next
member) and a truncated one yields the records it still holds whole; a plain (uncompressed) WARC
is framed record by record (dataprep/warc_records.py), so a damaged record is skipped and reading
resyncs at the next record header. Each loss is a record with a `drop_reason`:

  corrupt_gzip   a gzip member that does not decompress (its records, when one header is legible)
  truncated      the record the file (or a gzip member) ends in the middle of
  bad_http       an HTTP response whose status line or headers cannot be parsed
  http_status    an HTTP status other than 200
  not_html       a payload that is not HTML by its Content-Type or its first bytes (images, PDF)
  empty_body     nothing in the payload
  too_large      a payload over the size cap, as stored (not read) or once decoded (decoding
                 stops at the cap: never a cut page)
  bad_record     a WARC/ARC record whose own header cannot be parsed, or (plain WARC) whose
                 length does not end it where the next record starts

HTTP transfer and content encodings (chunked, gzip, deflate, br) are undone
(dataprep/http_payload.py), each only when the body really is so encoded: crawlers (the 2008 ARC
file, some wget WARCs) store the decoded body under the original headers.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from fastwarc.warc import ArchiveIterator, WarcRecordType

from dataprep.gzip_members import gzip_members
from dataprep.http_payload import PayloadTooLarge, decode_http_body, payload_problem
from dataprep.readers import GZIP_MAGIC, file_name
from dataprep.remote import open_input
from dataprep.warc_records import warc_records

DOC_TYPES = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
DOC_TYPE_NAMES = {b"response", b"resource", b"conversion"}
# Every reason a record can be lost for (the module doc), listed in the extract stage's stats.
DROP_REASONS = ("corrupt_gzip", "truncated", "bad_http", "http_status", "not_html", "empty_body", "too_large",
                "bad_record")
BLOCK_BYTES = 8 << 20  # whole decompressed members batched into one parse of about this size
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

def read_records(path: str | Path, max_payload_bytes: int, retries: int = 5, backoff_s: float = 1.0,
                 timeout_s: float = 60.0) -> Iterator[RawRecord]:
    """Every candidate document of one archive, in file order (see the module doc). An http(s)
    URL is streamed, and retried from the byte where it broke (dataprep/remote.py)."""
    name = file_name(path)
    with open_input(str(path), retries, backoff_s, timeout_s) as f:
        head = f.peek(4)[:4]
        if head.startswith(GZIP_MAGIC):
            yield from _read_gzip(f, name, max_payload_bytes)
        elif head.startswith(b"file"):  # ARC-v1 starts with its filedesc:// version block
            yield from _read_arc(f, name, max_payload_bytes)
        else:
            yield from _read_plain_warc(f, name, max_payload_bytes)


def _read_gzip(f: BinaryIO, name: str, cap: int) -> Iterator[RawRecord]:
    yield from _read_pieces(gzip_members(f), name, cap, None)


def _read_plain_warc(f: BinaryIO, name: str, cap: int) -> Iterator[RawRecord]:
    yield from _read_pieces(warc_records(f, cap), name, cap, False)


# What a damaged piece of a file costs its record (gzip_members and warc_records say which).
PIECE_REASONS = {"truncated": "truncated", "corrupt": "corrupt_gzip", "damaged": "bad_record", "large": "too_large"}


def _read_pieces(pieces: Iterator[tuple[int, bytes, str]], name: str, cap: int, arc: bool | None) -> Iterator[RawRecord]:
    """The records of a file's pieces (offset, bytes, status): whole ones ("ok") batched into blocks
    of about BLOCK_BYTES for one parse each; a damaged one's records through _damaged_block. `arc`:
    ARC or WARC, or None to tell from the first piece."""
    block: list[bytes] = []
    size = 0
    for offset, data, status in pieces:
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
            yield from _damaged_block(data, name, cap, arc, PIECE_REASONS[status], offset)
    if block:
        yield from _parse_block(b"".join(block), name, cap, bool(arc))


def _parse_block(data: bytes, name: str, cap: int, arc: bool) -> Iterator[RawRecord]:
    reader = _read_arc if arc else _read_warc
    yield from reader(io.BytesIO(data), name, cap)


WARC_START = re.compile(rb"(?:\A|\n)WARC/\d")


def _damaged_block(data: bytes, name: str, cap: int, arc: bool, reason: str, offset: int) -> Iterator[RawRecord]:
    """The records of a damaged piece (a truncated or corrupt gzip member; a damaged, truncated or
    too large record of a plain WARC, its header only): those whole come through; the one the
    damage cut is dropped with `reason`, named by its header when that survived. A damaged
    request / metadata / warcinfo record is no document and adds nothing."""
    if arc:
        recs = list(_read_arc(io.BytesIO(data), name, cap))
        if recs and recs[-1].drop_reason == "truncated":
            recs[-1].drop_reason = reason
        else:
            recs.append(RawRecord(f"{name}#{offset}", "", "", "html", b"", None, reason))
        yield from recs
        return
    starts = [m.end() - 6 for m in WARC_START.finditer(data)]
    head = data[starts[-1]:] if starts else data  # a garbled first line may still head legible fields
    fields = _header_fields(re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0])
    recs = list(_read_warc(io.BytesIO(data), name, cap)) if starts else []
    rtype = fields.get(b"warc-type")
    if rtype is not None and rtype not in DOC_TYPE_NAMES:
        yield from recs
        return
    rid = fields.get(b"warc-record-id", f"{name}#{offset}".encode()).decode("utf-8", "replace").strip("<>")
    if recs and recs[-1].id == rid:
        recs[-1].drop_reason, recs[-1].payload = reason, b""
    else:
        url = fields.get(b"warc-target-uri", b"").decode("utf-8", "replace").strip("<>")
        date = fields.get(b"warc-date", b"").decode("utf-8", "replace")
        recs.append(RawRecord(rid, url, date, "html", b"", None, reason))
    yield from recs


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
        try:
            body = decode_http_body(body, hh.get("Transfer-Encoding") or "", hh.get("Content-Encoding") or "", cap)
        except PayloadTooLarge:
            r.drop_reason = "too_large"
            return r
    r.payload = body
    r.drop_reason = payload_problem(r.kind, ctype, body)
    if r.drop_reason:
        r.payload = b""
    return r


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

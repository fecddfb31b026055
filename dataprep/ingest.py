"""Read crawl archives (WARC, and Common Crawl WET) into raw records with FastWARC.

Yields one `RawRecord` per candidate document: HTTP responses and resource records (HTML to be
extracted) and WET conversion records (text as is). Requests, metadata and warcinfo records are
not documents and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from fastwarc.warc import ArchiveIterator, WarcRecordType

DOC_TYPES = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion


@dataclass
class RawRecord:
    id: str
    url: str
    date: str
    kind: str  # "html" | "text"
    payload: bytes
    charset: Optional[str]
    drop_reason: Optional[str] = None  # set when the record cannot become a document


def read_records(path: str | Path, max_payload_bytes: int) -> Iterator[RawRecord]:
    path = Path(path)
    with open(path, "rb") as stream:
        records = ArchiveIterator(
            stream, record_types=DOC_TYPES, parse_http=True, quirks_mode=True, auto_decode="transfer"
        )
        # quirks_mode: LF-only HTTP headers (ClueWeb09) would otherwise eat the page's start;
        # transfer decoding strips chunked framing, which some crawlers store as is.
        for rec in records:
            h = rec.headers
            rid = (h.get("WARC-Record-ID") or f"<{path.name}#{rec.stream_pos}>").strip("<>")
            url = h.get("WARC-Target-URI") or ""
            date = h.get("WARC-Date") or ""
            if rec.record_type == WarcRecordType.conversion:
                kind, charset, ctype = "text", "utf-8", "text/plain"
            else:
                kind = "html"
                if rec.is_http:
                    ctype = rec.http_content_type or ""
                    charset = rec.http_charset
                else:
                    ctype = h.get("Content-Type") or ""
                    charset = None
            reason = None
            if rec.content_length > max_payload_bytes:
                reason = "too_large"
            elif kind == "html" and rec.is_http and rec.http_headers.status_code != 200:
                reason = "http_status"
            elif kind == "html" and "html" not in ctype.lower():
                reason = "not_html"
            payload = b"" if reason else rec.reader.read()
            yield RawRecord(rid, url, date, kind, payload, charset, reason)

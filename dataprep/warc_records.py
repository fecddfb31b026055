"""An uncompressed WARC file read record by record, so that damage costs only the record it is in
(the counterpart of dataprep/gzip_members.py for files without gzip members to resync at).

A record is whole when its header parses and its Content-Length ends its block where the WARC
separator (CRLF CRLF), the next record's header or the end of the file follows. Otherwise it is
reported as damaged and reading resyncs at the next line that starts a WARC header
(`WARC/<digit>`), searched from the end of the damaged record's header: a record whose length
field is wrong loses only itself, and so does a record whose header is garbled. dataprep/ingest.py
turns what this yields into records.
"""

from __future__ import annotations

import re
from typing import BinaryIO, Iterator

HEADER_START = re.compile(rb"WARC/\d")
NEXT_HEADER = re.compile(rb"\nWARC/\d")
CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d+)[ \t]*\r?$", re.I | re.M)
HEADER_LIMIT = 1 << 16  # a WARC header longer than this is damage, not a header
SCAN_CHUNK = 1 << 20  # bytes searched at a time when resyncing


def warc_records(f: BinaryIO, cap: int) -> Iterator[tuple[int, bytes, str]]:
    """(offset, bytes, status) for each record of the seekable WARC stream `f`:

      ok         a whole record: its header, block and separator
      large      a whole record whose block is over `cap` bytes: only its header (the block is not read)
      damaged    a record whose header does not parse or whose length does not end it: what
                 there is of its header; reading resyncs at the next WARC header line
      truncated  the record the file ends in (no WARC header follows its own): its header
    """
    size = f.seek(0, 2)
    pos = _skip_blank(f, 0, size)
    while pos < size:
        f.seek(pos)
        head = f.read(4096)
        end = _header_end(head)
        if not end and len(head) == 4096:  # a long header (or none): look further, within the limit
            head += f.read(HEADER_LIMIT - len(head))
            end = _header_end(head)
        length = CONTENT_LENGTH.search(head, 0, end) if end else None
        if not HEADER_START.match(head) or length is None:
            yield pos, head[:end or 1024], "damaged"
            pos = _next_header(f, pos + 1, size)
            continue
        block_end = pos + end + int(length.group(1))
        if block_end > size:  # the file ends inside it, or its length is damaged
            later = _next_header(f, pos + end, size)
            yield pos, head[:end], "damaged" if later < size else "truncated"
            pos = later
            continue
        after = _skip_blank(f, block_end, size)
        f.seek(block_end)
        separator = f.read(4)
        f.seek(after)
        if separator != b"\r\n\r\n" and after < size and not HEADER_START.match(f.read(8)):
            yield pos, head[:end], "damaged"
            pos = _next_header(f, pos + end, size)
            continue
        if block_end - pos - end > cap:
            yield pos, head[:end], "large"
        else:
            f.seek(pos)
            yield pos, f.read(block_end - pos) + b"\r\n\r\n", "ok"
        pos = after


def _header_end(head: bytes) -> int:
    """Where the header block of `head` ends (after its blank line); 0 when it does not."""
    crlf, lf = head.find(b"\r\n\r\n"), head.find(b"\n\n")
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends, default=0)


def _skip_blank(f: BinaryIO, pos: int, size: int) -> int:
    """The first offset from `pos` that is not a CR or LF (`size` when there is none)."""
    while pos < size:
        f.seek(pos)
        chunk = f.read(4096)
        rest = chunk.lstrip(b"\r\n")
        if rest:
            return pos + len(chunk) - len(rest)
        pos += len(chunk)
    return size


def _next_header(f: BinaryIO, start: int, size: int) -> int:
    """The offset of the next line from `start` on that starts a WARC header (`size` if none)."""
    pos = max(start, 1)
    while pos < size:
        f.seek(pos - 1)
        chunk = f.read(SCAN_CHUNK + 1)  # one byte back: a header line at `pos` follows its newline
        m = NEXT_HEADER.search(chunk)
        if m:
            return pos - 1 + m.start() + 1
        if len(chunk) <= SCAN_CHUNK:
            return size
        pos += SCAN_CHUNK - 8  # overlap: a header line cut by the chunk's end is found next time
    return size

"""An uncompressed WARC file read record by record, so that damage costs only the record it is in
(the counterpart of dataprep/gzip_members.py for files without gzip members to resync at).

A record is whole when its header parses and its Content-Length ends its block where the WARC
separator (CRLF CRLF), the next record's header or the end of the file follows. Otherwise it is
reported as damaged and reading resyncs at the next line that starts a WARC header
(`WARC/<digit>`) after the damaged record's header: a record whose length field is wrong loses
only itself, and so does a record whose header is garbled.

The stream is read front to back (an http(s) input is a stream, dataprep/remote.py), holding at
most one record of up to `cap` bytes. A record over the cap is passed over without being held;
should its length then prove wrong, reading goes back to the first header line inside it on a
seekable file (local or fsspec). A stream cannot go back: there the bytes from that header line
on are held, up to the cap, until the record's end shows whether its length was right; a record
over the cap that holds a WARC header line farther than the cap from its end (a WARC file
archived whole, say) is then taken for a damaged one (logged).
"""

from __future__ import annotations

import logging
import re
from typing import BinaryIO, Iterator, Optional

HEADER_START = re.compile(rb"WARC/\d")
NEXT_HEADER = re.compile(rb"\nWARC/\d")
NON_BLANK = re.compile(rb"[^\r\n]")
CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d+)[ \t]*\r?$", re.I | re.M)
HEADER_LIMIT = 1 << 16  # a WARC header longer than this is damage, not a header
READ_CHUNK = 1 << 20  # bytes read at a time
log = logging.getLogger("dataprep")


class _Window:
    """The bytes [base, base + len(buf)) of a stream read front to back; earlier bytes are dropped
    as reading moves on (and read again by seeking, where the stream can)."""

    def __init__(self, f: BinaryIO):
        self.f, self.base, self.buf, self.eof = f, 0, bytearray(), False
        self.seekable = bool(getattr(f, "seekable", lambda: False)())

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def fill(self, upto: int) -> None:
        """Read until the window reaches offset `upto` or the stream ends."""
        while self.end < upto and not self.eof:
            chunk = self.f.read(max(READ_CHUNK, upto - self.end))
            if chunk:
                self.buf += chunk
            else:
                self.eof = True

    def get(self, start: int, stop: int) -> bytes:
        self.fill(stop)
        return bytes(self.buf[start - self.base:stop - self.base])

    def move(self, to: int) -> bool:
        """Make the window start at `to` (or the end of the stream): forward by dropping (and
        reading past) bytes, back by seeking. False when the stream cannot go back."""
        if to < self.base:
            if not self.seekable:
                return False
            self.f.seek(to)
            self.base, self.buf, self.eof = to, bytearray(), False
            return True
        while self.end < to and not self.eof:  # beyond the window: read and drop
            self.base, self.buf = self.end, bytearray()
            self.fill(min(to, self.base + READ_CHUNK))
        cut = min(to, self.end) - self.base
        del self.buf[:cut]
        self.base += cut
        return True

    def skip_blank(self, pos: int) -> Optional[int]:
        """The first offset from `pos` that is not a CR or LF; None at the end of the stream."""
        self.move(pos)
        while True:
            m = NON_BLANK.search(self.buf)
            if m:
                return self.base + m.start()
            if self.eof:
                return None
            self.move(self.end)
            self.fill(self.end + READ_CHUNK)

    def next_header(self, start: int, stop: Optional[int] = None) -> Optional[int]:
        """The first offset from `start` (and before `stop`) where a line starts a WARC header, or
        None. The window only moves forward, as far as the search went."""
        if start - 1 > self.base:
            self.move(start - 1)  # one byte back: a header line at `start` follows its newline
        while True:
            m = NEXT_HEADER.search(self.buf, max(0, start - 1 - self.base))
            if m:
                found = self.base + m.start() + 1
                return found if stop is None or found < stop else None
            if self.eof or (stop is not None and self.end > stop + 8):
                return None
            self.move(max(self.base, self.end - 8))  # keep a header line cut by the chunk's end
            self.fill(self.end + READ_CHUNK)


def warc_records(f: BinaryIO, cap: int) -> Iterator[tuple[int, bytes, str]]:
    """(offset, bytes, status) for each record of the WARC stream `f`:

      ok         a whole record: its header, block and separator
      large      a whole record whose block is over `cap` bytes: only its header (the block is not held)
      damaged    a record whose header does not parse or whose length does not end it: what
                 there is of its header; reading resyncs at the next WARC header line
      truncated  the record the file ends in (no WARC header follows its own): its header
    """
    w = _Window(f)
    pos = w.skip_blank(0)
    while pos is not None:
        head = w.get(pos, pos + 4096)
        end = _header_end(head)
        if not end and len(head) == 4096:  # a long header (or none): look further, within the limit
            head = w.get(pos, pos + HEADER_LIMIT)
            end = _header_end(head)
        length = CONTENT_LENGTH.search(head, 0, end) if end else None
        if not HEADER_START.match(head) or length is None:
            yield pos, head[:end or 1024], "damaged"
            pos = w.next_header(pos + 1)
            continue
        block_end = pos + end + int(length.group(1))
        if block_end - pos - end <= cap:
            w.fill(block_end + 16)
            if w.end >= block_end and _ends_there(w, block_end):
                yield pos, w.get(pos, block_end) + b"\r\n\r\n", "ok"
                pos = w.skip_blank(block_end)
                continue
            inner = w.next_header(pos + end)  # the first header after its own
        else:
            inner = w.next_header(pos + end, block_end)  # the first header line inside the span it claims
            if inner is not None and not w.seekable:
                # A stream cannot come back to that header: hold the bytes from it, up to the cap.
                w.move(inner)
                w.fill(min(block_end, inner + cap))
                if w.end >= block_end and _ends_there(w, block_end):
                    yield pos, head[:end], "large"
                    pos = w.skip_blank(block_end)
                    continue
                if w.end < block_end and not w.eof:
                    log.warning("offset %d: a record over the size cap holds a WARC header line within the cap "
                                "after its own; taken for a record of wrong length (a stream cannot go back)", pos)
                yield pos, head[:end], "damaged"
                pos = inner
                continue
            w.move(block_end)  # passed over, not held
            if w.end >= block_end and _ends_there(w, block_end):
                yield pos, head[:end], "large"
                pos = w.skip_blank(block_end)
                continue
            if inner is None:
                inner = w.next_header(block_end)
        if inner is None:
            yield pos, head[:end], "truncated" if w.end < block_end else "damaged"
            return
        yield pos, head[:end], "damaged"
        w.move(inner)  # back into the span it claimed (a seekable file), or on
        pos = inner


def _ends_there(w: _Window, block_end: int) -> bool:
    """Whether a record's block may end at `block_end`: the separator follows, or (leniently) blank
    lines and the next header, or the end of the stream."""
    tail = w.get(block_end, block_end + 16)
    rest = tail.lstrip(b"\r\n")
    return tail[:4] == b"\r\n\r\n" or HEADER_START.match(rest) is not None or (not rest and w.eof)


def _header_end(head: bytes) -> int:
    """Where the header block of `head` ends (after its blank line); 0 when it does not."""
    crlf, lf = head.find(b"\r\n\r\n"), head.find(b"\n\n")
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends, default=0)

"""A gzip file read member by member, so that damage costs only the member it is in: a corrupt
member is reported and skipped (reading resyncs to the next member), a truncated one gives what it
held. Web archives compress each record as its own member (dataprep/ingest.py)."""

from __future__ import annotations

import zlib
from typing import BinaryIO, Iterator

from dataprep.readers import GZIP_MAGIC

MEMBER_START = GZIP_MAGIC + b"\x08"  # the magic, then the deflate method: where a member can start
READ_CHUNK = 1 << 20  # compressed bytes read at a time
FEED_CHUNK = 1 << 16  # compressed bytes fed to zlib at a time (bounds what a corrupt member loses)


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
        if not buf.startswith(MEMBER_START, start):  # garbage between members: skip to the next one
            j = buf.find(MEMBER_START, start + 1)
            while j < 0 and not eof:
                start = max(start, len(buf) - 2)
                refill()
                j = buf.find(MEMBER_START, start)
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

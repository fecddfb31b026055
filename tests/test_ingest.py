"""Ingest on the real sample archives, and on damaged copies of them made here (truncated, corrupt,
spliced): bad input is counted by reason and never costs the good records around it."""

import gzip
import io
import re
import zlib
from collections import Counter

import brotli
import fsspec
import pytest
from fastwarc.warc import ArchiveIterator

from conftest import SHARED_DATA
from dataprep import extract, gzip_members, ingest, warc_records
from dataprep.ingest import DOC_TYPES, read_records
from dataprep.readers import list_inputs

WARC = SHARED_DATA / "warc"
PER_RECORD = WARC / "cc-main-2020-34_resiliparse_warcfile.warc.gz"  # 50 gzip members, 16 responses
WHOLE_FILE = WARC / "cc-main-2016-50_filter_test_1.wet.gz"  # one gzip member, 25 conversions
ARC = WARC / "cc-2008_copycat_small-sample-1213893279526_0.arc"
CAP = 2_000_000


def records(path, cap=CAP):
    return list(read_records(path, cap))


def members(data: bytes) -> list[bytes]:
    """The raw gzip members of a per-record-gzip file."""
    out, i = [], 0
    while i < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[i:])
        end = len(data) - len(d.unused_data)
        out.append(data[i:end])
        i = end
    return out


def response_members(data: bytes) -> list[int]:
    """Indexes of the members that hold a response record."""
    return [i for i, m in enumerate(members(data)) if b"WARC-Type: response" in gzip.decompress(m)[:2000]]


@pytest.fixture(autouse=True, params=["default-buffers", "small-buffers"])
def buffers(request, monkeypatch):
    """Every case again with reads and zlib feeds far smaller than a member, so members and
    damage straddle buffer boundaries."""
    if request.param == "small-buffers":
        monkeypatch.setattr(gzip_members, "READ_CHUNK", 1000)
        monkeypatch.setattr(gzip_members, "FEED_CHUNK", 97)
        monkeypatch.setattr(ingest, "BLOCK_BYTES", 5000)
        monkeypatch.setattr(warc_records, "READ_CHUNK", 1000)


@pytest.fixture(scope="module")
def good():
    recs = records(PER_RECORD)
    assert len(recs) == 16 and all(r.drop_reason is None for r in recs)
    return recs


def test_every_sample_archive_is_read(shared_data):
    files = list_inputs(str(WARC), ["*.warc.gz", "*.warc", "*.wet.gz", "*.arc", "*.arc.gz"])
    assert len(files) == 9
    counts = {f.rsplit("/", 1)[-1]: Counter(r.drop_reason for r in read_records(f, CAP)) for f in files}
    assert sum(counts[ARC.name].values()) == 145  # the 2008 ARC file: every record
    assert counts[ARC.name]["not_html"] == 6  # its PDFs
    assert sum(counts[WHOLE_FILE.name].values()) == counts[WHOLE_FILE.name][None] == 25
    quirk = records(WARC / "clueweb09-ja_resiliparse_clueweb-quirk.warc.gz")
    assert len(quirk) == 29 and all(r.drop_reason is None for r in quirk)
    # LF-only HTTP headers: the payload is the page, not the tail of its headers
    assert all(r.payload.lstrip()[:1] == b"<" for r in quirk)
    aut = counts["archive-org-2008_aut_example.warc.gz"]
    assert sum(aut.values()) == 299 and aut["not_html"] > 100 and aut["http_status"] > 0  # images, 404s
    # no silent loss: one record out per response / resource / conversion record in, counted by a
    # plain FastWARC pass over each WARC file
    for f in files:
        if not f.endswith(".arc"):
            with open(f, "rb") as stream:
                n = sum(1 for _ in ArchiveIterator(stream, record_types=DOC_TYPES, parse_http=False))
            assert sum(counts[f.rsplit("/", 1)[-1]].values()) == n, f


def test_arc_records_are_documents():
    recs = records(ARC)
    assert len({r.id for r in recs}) == len(recs)
    page = next(r for r in recs if r.url == "http://cineciudad.com/pelicula/index/502")
    # stored de-chunked under a 'Transfer-Encoding: chunked' header: kept as stored
    assert page.drop_reason is None and page.payload.startswith(b"<!DOCTYPE html")
    assert page.date == "2008-05-09T19:02:41Z" and page.charset == "utf-8"
    assert "LEÓNIDAS" in extract.html_to_text(extract.decode(page.payload, page.charset))


def test_truncated_per_record_file_keeps_every_whole_record(tmp_path, good):
    data = PER_RECORD.read_bytes()
    ms = members(data)
    cut_member = response_members(data)[10]
    start = sum(len(m) for m in ms[:cut_member])
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[:start + len(ms[cut_member]) // 2])
    recs = records(path)
    assert [r.id for r in recs if r.drop_reason is None] == [r.id for r in good[:10]]
    assert [r.drop_reason for r in recs[10:]] == ["truncated"]
    assert recs[10].id == good[10].id  # named by its own header, which survived


def test_corrupt_member_in_the_middle_is_skipped_and_reading_resyncs(tmp_path, good):
    data = PER_RECORD.read_bytes()
    ms = members(data)
    bad = response_members(data)[5]
    m = bytearray(ms[bad])
    for i in range(len(m) // 2, len(m) // 2 + 64):  # damage the deflate stream
        m[i] ^= 0x5A
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(b"".join(ms[:bad]) + bytes(m) + b"".join(ms[bad + 1:]))
    recs = records(path)
    reasons = Counter(r.drop_reason for r in recs)
    assert reasons == {None: 15, "corrupt_gzip": 1}
    assert [r.id for r in recs if r.drop_reason is None] == [r.id for i, r in enumerate(good) if i != 5]
    assert next(r for r in recs if r.drop_reason).id == good[5].id


def test_garbage_between_members_and_spliced_files(tmp_path, good):
    data = PER_RECORD.read_bytes()
    ms = members(data)
    junk = b"\x00garbage\x1f\x8b not a member\xff" * 10
    path = tmp_path / "spliced.warc.gz"
    path.write_bytes(b"".join(ms[:20]) + junk + b"".join(ms[20:]) + (WARC / "wget-2024_dolma_sample-0001.warc.gz").read_bytes())
    recs = records(path)
    wget = records(WARC / "wget-2024_dolma_sample-0001.warc.gz")
    assert [r.id for r in recs] == [r.id for r in good] + [r.id for r in wget]
    assert [r.payload for r in recs[:16]] == [r.payload for r in good]


def test_truncated_whole_file_gzip_keeps_records_before_the_cut(tmp_path):
    full = records(WHOLE_FILE)
    path = tmp_path / "cut.wet.gz"
    data = WHOLE_FILE.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    recs = records(path)
    whole = [r for r in recs if r.drop_reason is None]
    assert 10 < len(whole) < 25 and [r.id for r in whole] == [r.id for r in full[: len(whole)]]
    assert [r.payload for r in whole] == [r.payload for r in full[: len(whole)]]
    assert [r.drop_reason for r in recs[len(whole):]] == ["truncated"]


def _rewrite_member(tmp_path, good_data, index, edit):
    ms = members(good_data)
    body = edit(gzip.decompress(ms[index]))
    path = tmp_path / "edited.warc.gz"
    path.write_bytes(b"".join(ms[:index]) + gzip.compress(body) + b"".join(ms[index + 1:]))
    return records(path)


def test_malformed_http_and_empty_body_are_counted_not_fatal(tmp_path, good):
    data = PER_RECORD.read_bytes()
    i = response_members(data)[3]
    recs = _rewrite_member(tmp_path, data, i, lambda b: b.replace(b"HTTP/1.1 200 OK", b"HTXP/1.1 2O0 OK", 1))
    assert [r.drop_reason for r in recs].count("bad_http") == 1 and recs[3].drop_reason == "bad_http"
    assert [r.id for r in recs if r.drop_reason is None] == [r.id for k, r in enumerate(good) if k != 3]

    def empty(b: bytes) -> bytes:  # keep the headers, drop the body, fix Content-Length
        warc_head, http = b.split(b"\r\n\r\n", 1)
        http_head = http.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        lines = [ln if not ln.startswith(b"Content-Length:") else b"Content-Length: %d" % len(http_head)
                 for ln in warc_head.split(b"\r\n")]
        return b"\r\n".join(lines) + b"\r\n\r\n" + http_head + b"\r\n\r\n"
    recs = _rewrite_member(tmp_path, data, i, empty)
    assert recs[3].drop_reason == "empty_body" and sum(r.drop_reason is None for r in recs) == 15


def _recoded(member: bytes, encoding: str, encode) -> bytes:
    """A response record whose body is stored encoded (`encode`) under `Content-Encoding: <encoding>`,
    its HTTP and WARC lengths made to fit."""
    warc_head, http = member.split(b"\r\n\r\n", 1)
    http_head, body = http.split(b"\r\n\r\n", 1)
    body = encode(body.rstrip(b"\r\n"))
    lines = [ln for ln in http_head.split(b"\r\n") if not ln.lower().startswith((b"content-length:", b"content-encoding:"))]
    http = b"\r\n".join(lines + [b"Content-Encoding: " + encoding.encode(), b"Content-Length: %d" % len(body)]) + b"\r\n\r\n" + body
    warc = [ln if not ln.startswith(b"Content-Length:") else b"Content-Length: %d" % len(http) for ln in warc_head.split(b"\r\n")]
    return b"\r\n".join(warc) + b"\r\n\r\n" + http + b"\r\n\r\n"


def test_brotli_bodies_are_decoded(tmp_path, good):
    data = PER_RECORD.read_bytes()
    i = response_members(data)[2]
    recs = _rewrite_member(tmp_path, data, i, lambda b: _recoded(b, "br", brotli.compress))
    assert recs[2].drop_reason is None and recs[2].payload == good[2].payload  # the page, not brotli bytes
    # stored already decoded under its original header (as crawlers do): kept as stored
    recs = _rewrite_member(tmp_path, data, i, lambda b: _recoded(b, "br", lambda body: body))
    assert recs[2].payload == good[2].payload
    assert [r.payload for r in recs if r.id != recs[2].id] == [r.payload for r in good if r.id != good[2].id]


def test_a_body_over_the_cap_once_decoded_is_dropped_not_cut(tmp_path, good):
    data = PER_RECORD.read_bytes()
    i = response_members(data)[2]
    size = len(good[2].payload)
    for encoding, encode in (("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress)):
        stored = _recoded(gzip.decompress(members(data)[i]), encoding, encode)
        cap = len(stored) + 100  # the stored record fits; the decoded page does not
        assert cap < size
        recs = _rewrite_member(tmp_path, data, i, lambda b: stored)
        assert recs[2].drop_reason is None and recs[2].payload == good[2].payload  # under the default cap
        capped = records(tmp_path / "edited.warc.gz", cap=cap)
        assert capped[2].drop_reason == "too_large" and capped[2].payload == b"", encoding
        assert capped[2].id == good[2].id


def plain_data(edit=lambda data, starts: data) -> bytes:
    """The records of the per-record sample as one uncompressed WARC, edited by edit(data, the
    offsets of the records' headers)."""
    data = b"".join(gzip.decompress(m) for m in members(PER_RECORD.read_bytes()))
    return edit(data, [m.start() for m in re.finditer(rb"WARC/1\.\d\r\n", data)])


VICTIM = response_members(PER_RECORD.read_bytes())[7]  # the record of the 8th response: good[7]
DAMAGE = {
    "garbled version line": lambda d, s: d[:s[VICTIM]] + b"WXRC/1.0" + d[s[VICTIM] + 8:],
    "length too long": lambda d, s: d[:s[VICTIM]] + d[s[VICTIM]:].replace(b"Content-Length: ", b"Content-Length: 9", 1),
    "bytes lost": lambda d, s: d[:s[VICTIM] + 900] + d[s[VICTIM] + 1300:],
    "length beyond the end": lambda d, s: d[:s[VICTIM]] + d[s[VICTIM]:].replace(b"Content-Length: ", b"Content-Length: 99999999", 1),
}


def plain_warc(tmp_path, edit=lambda data, starts: data) -> list:
    path = tmp_path / "plain.warc"
    path.write_bytes(plain_data(edit))
    return records(path)


def test_a_damaged_record_of_a_plain_warc_costs_only_itself(tmp_path, good):
    assert [r.payload for r in plain_warc(tmp_path)] == [r.payload for r in good]
    capped = records(tmp_path / "plain.warc", cap=20_000)  # over the cap: not read, counted alike
    assert [(r.id, r.drop_reason) for r in capped] == [(r.id, r.drop_reason) for r in records(PER_RECORD, cap=20_000)]
    for what, edit in DAMAGE.items():
        recs = plain_warc(tmp_path, edit)
        assert Counter(r.drop_reason for r in recs) == {None: 15, "bad_record": 1}, what
        assert [r.payload for r in recs if r.drop_reason is None] == [r.payload for k, r in enumerate(good) if k != 7], what
        assert next(r for r in recs if r.drop_reason).id == good[7].id, what  # named by its header
    junk = plain_warc(tmp_path, lambda d, s: d[:s[VICTIM]] + b"\x00 junk between records \xff\r\n\r\n" + d[s[VICTIM]:])
    assert [r.payload for r in junk if r.drop_reason is None] == [r.payload for r in good]
    assert Counter(r.drop_reason for r in junk) == {None: 16, "bad_record": 1}
    cut = plain_warc(tmp_path, lambda d, s: d[:s[VICTIM] + 2000])
    assert [r.drop_reason for r in cut] == [None] * 7 + ["truncated"] and cut[7].id == good[7].id


class OneWayStream(io.RawIOBase):
    """Bytes that can be read front to back only, as an http(s) input is (dataprep/remote.py)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_a_plain_warc_read_as_a_stream_is_framed_the_same():
    """Read front to back (an http(s) input cannot seek), the framing finds what it finds in a
    seekable file, damage over the size cap included (the file goes back into the span a wrong
    length claimed; the stream holds that span's start, up to the cap)."""
    frame = lambda data, stream, cap: [(o, s) for o, _, s in warc_records.warc_records(  # noqa: E731
        io.BufferedReader(OneWayStream(data)) if stream else io.BytesIO(data), cap)]
    for what, edit in {"whole": lambda d, s: d, **DAMAGE}.items():
        data = plain_data(edit)
        for cap in (CAP, 20_000):  # the damaged record under the cap, and over it
            on_file = frame(data, False, cap)
            assert frame(data, True, cap) == on_file, (what, cap)
            assert Counter(s for _, s in on_file)["damaged"] == (what != "whole"), (what, cap)


def test_size_cap_and_non_html(good):
    capped = records(PER_RECORD, cap=20_000)
    big = [r for r in good if len(r.payload) > 20_000]
    assert big and Counter(r.drop_reason for r in capped)["too_large"] == len(big)
    assert [r.id for r in capped] == [r.id for r in good]
    aut = records(WARC / "archive-org-2008_aut_example.warc.gz")
    images = [r for r in aut if r.url.lower().endswith((".jpg", ".gif", ".png"))]
    assert images and all(r.drop_reason in ("not_html", "http_status") for r in images)


def test_charsets_mislabelled_and_invalid(good):
    page = next(r for r in good if r.charset and r.charset.lower() == "utf-8" and not r.payload.isascii())
    text, how = extract.decode_with_status(page.payload, page.charset)
    assert how == extract.OK
    # declared latin-1 but really UTF-8: decoded as UTF-8 and counted
    assert extract.decode_with_status(page.payload, "iso-8859-1") == (text, extract.MISLABELLED)
    ja = records(WARC / "clueweb09-ja_resiliparse_clueweb-quirk.warc.gz")[0]
    declared, _ = extract.decode_with_status(ja.payload, ja.charset)
    mislabelled, how = extract.decode_with_status(ja.payload, "utf-8")  # a wrong label
    assert how in (extract.DETECTED, extract.MISLABELLED) and mislabelled == declared
    broken = page.payload[:2000] + b"\xff\xfe\xc3" + page.payload[2000:]  # invalid UTF-8 inside
    text2, how = extract.decode_with_status(broken, "utf-8")
    assert how != extract.OK and len(text2) > 0.9 * len(text)


def test_fsspec_urls_read_like_local_paths(tmp_path, good):
    local = records(PER_RECORD)
    assert [r.id for r in records(f"file://{PER_RECORD}")] == [r.id for r in local]
    fs = fsspec.filesystem("memory")
    fs.pipe("/ccp-test/in/a.warc.gz", PER_RECORD.read_bytes())
    fs.pipe("/ccp-test/in/notes.txt", b"not an archive")
    try:
        files = list_inputs("memory://ccp-test/in", ["*.warc.gz"])
        assert files == ["memory:///ccp-test/in/a.warc.gz"]
        assert [r.payload for r in records(files[0])] == [r.payload for r in local]
    finally:
        fs.rm("/ccp-test", recursive=True)
    with pytest.raises(FileNotFoundError, match="ingest.input_dir"):
        list_inputs(str(tmp_path / "nowhere"), ["*"], "ingest.")
    with pytest.raises(FileNotFoundError, match=r"ingest\.patterns=\['\*\.arc'\]"):
        list_inputs(str(WARC.parent / "text"), ["*.arc"], "ingest.")


"""The real crawl as input: a path listing read over HTTP from a server that answers 503 and cuts
transfers short (a local stand-in for Common Crawl's), archives streamed and resumed from the
byte where they broke, and a file that never comes counted while the job goes on."""

import gzip
import json
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import run_module

from dataprep import ingest
from dataprep.config import IngestConfig
from dataprep.readers import list_archives
from dataprep.remote import HTTPStream, InputUnavailable

PREFIX = "/crawl-data/CC-MAIN-2099-01/segments/1/warc/"


class FaultyArchive(BaseHTTPRequestHandler):
    """Serves `root`'s files under PREFIX (and `listing` at /warc.paths.gz) with Range support.
    The first request of every file gets a 503; the first full transfer of each file in `cut` is
    cut off halfway; files in `dead` always get a 503."""

    def __init__(self, *args, root: Path, listing: bytes, state: dict, **kwargs):
        self.root, self.listing, self.state = root, listing, state
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def do_GET(self):
        s = self.state
        with s["lock"]:
            n = s["requests"][self.path] = s["requests"].get(self.path, 0) + 1
        if self.path == "/warc.paths.gz":
            body = self.listing
        else:
            name = self.path.removeprefix(PREFIX)
            if name in s["dead"] or n == 1:
                self.send_error(503, "Slow Down")
                return
            if not self.path.startswith(PREFIX) or not (self.root / name).is_file():
                self.send_error(404)
                return
            body = (self.root / name).read_bytes()
        start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0] or 0)
        part = body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(part)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if not start and self.path.removeprefix(PREFIX) in s["cut"] and len(part) > 1000:
            s["cut"].discard(self.path.removeprefix(PREFIX))
            self.wfile.write(part[: len(part) // 2])  # and the connection drops
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)


@pytest.fixture
def server(shared_data):
    root = shared_data / "warc"
    names = sorted(p.name for p in root.iterdir() if p.is_file())
    listing = gzip.compress("".join(f"{PREFIX.lstrip('/')}{n}\n" for n in names).encode())
    state = {"lock": threading.Lock(), "requests": {}, "cut": set(names), "dead": set()}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(FaultyArchive, root=root, listing=listing, state=state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state, names, root
    httpd.shutdown()


def _records(path):
    return [(r.id, r.url, r.date, r.kind, r.payload, r.charset, r.drop_reason)
            for r in ingest.read_records(path, 2_000_000, retries=3, backoff_s=0.001)]


def test_archives_read_over_a_failing_server_equal_the_local_files(server):
    base, state, names, root = server
    files = list_archives(IngestConfig(paths_file=f"{base}/warc.paths.gz", base_url=base, retry_backoff_s=0.001))
    assert [f.rsplit("/", 1)[1] for f in files] == names
    for url in files:
        name = url.rsplit("/", 1)[1]
        assert _records(url) == _records(root / name), name
        # 503 first, then a transfer cut halfway, then the rest from the byte where it broke.
        assert state["requests"][url.removeprefix(base)] == 3, name
    assert not state["cut"]


def test_selection_of_the_listing(server):
    base, _, names, _ = server
    listing = dict(paths_file=f"{base}/warc.paths.gz", base_url=base, retry_backoff_s=0.001)
    assert [f.rsplit("/", 1)[1] for f in list_archives(IngestConfig(**listing, max_files=3))] == names[:3]
    sample = [f.rsplit("/", 1)[1] for f in list_archives(IngestConfig(**listing, sample_files=4, sample_seed=1))]
    assert len(sample) == 4 and sample == sorted(sample) and set(sample) <= set(names)
    assert sample == [f.rsplit("/", 1)[1] for f in list_archives(IngestConfig(**listing, sample_files=4, sample_seed=1))]
    assert sample != [f.rsplit("/", 1)[1] for f in list_archives(IngestConfig(**listing, sample_files=4, sample_seed=2))]


def test_a_file_that_keeps_failing_is_given_up_after_the_retries(server):
    base, state, names, _ = server
    state["dead"].add(names[0])
    stream = HTTPStream(f"{base}{PREFIX}{names[0]}", retries=2, backoff_s=0.0)
    with pytest.raises(InputUnavailable, match="HTTP 503.*3 failed attempts"):
        stream.read(10)
    assert stream.attempts == 3
    with pytest.raises(InputUnavailable, match="HTTP 404"):  # no retry for what will not change
        HTTPStream(f"{base}{PREFIX}missing.warc.gz", retries=5, backoff_s=0.0).read(10)


def test_stage_counters_add_up_over_every_task():
    """A stage's own counters (tokens, charsets, ...) are summed over all its tasks, not taken
    from whichever task came first (stats.json depended on completion order)."""
    from dataprep.stats import merge

    parts = [{"docs_in": 2, "tokens": 10, "latin-1": 1}, {"docs_in": 3, "tokens": 5}, {"docs_in": 1, "latin-1": 2}]
    total = merge(parts)
    assert (total["docs_in"], total["tokens"], total["latin-1"]) == (6, 15, 3)
    assert merge(reversed(parts)) == total


@pytest.mark.slow
def test_the_job_goes_on_without_an_unreadable_file_and_a_rerun_takes_it(server, tmp_path):
    base, state, names, _ = server
    small = ["cc-main-2020-34_resiliparse_warcfile.warc.gz", "wget-2024_dolma_sample-0001.warc.gz"]
    listing = tmp_path / "warc.paths"
    listing.write_text("".join(f"{PREFIX}{n}\n" for n in small))
    state["dead"].add(small[1])
    out = tmp_path / "corpus"
    args = [f"output_dir={out}", f"ingest.paths_file={listing}", f"ingest.base_url={base}",
            "ingest.retries=1", "ingest.retry_backoff_s=0.01", "shards.shard_tokens=100000"]
    first = run_module("dataprep", *args)
    stats = before = json.loads((out / "stats.json").read_text())
    failed = stats["stages"]["extract"]["failed_files"]
    assert [f["file"].rsplit("/", 1)[1] for f in failed] == [small[1]] and "HTTP 503" in failed[0]["error"]
    assert "could not be read" in first.stdout
    done = {p.name for p in (out / "extract" / "_done").glob("*.json")}
    assert done == {small[0].replace(".", "_") + ".json"}  # no marker for the file that failed

    state["dead"].clear()
    run_module("dataprep", *args)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stages"]["extract"]["failed_files"] == []
    assert len(list((out / "extract" / "_done").glob("*.json"))) == 2
    # What is made from the crawl is made again with the new archive's documents in it.
    for stage in ("extract", "quality", "dedup"):
        assert stats["stages"][stage]["docs_in"] > before["stages"][stage]["docs_in"], stage

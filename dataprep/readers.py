"""Finding and reading a job's input files, one way for every job: the files of a folder (local
or any fsspec URL), the files matching glob patterns, a task's name from its file, JSON lines."""

from __future__ import annotations

import fnmatch
import glob
import gzip
import json
import logging
import posixpath
import zlib
from pathlib import Path
from typing import IO, Iterable, Iterator

import fsspec

GZIP_MAGIC = b"\x1f\x8b"
log = logging.getLogger("dataprep")


def list_inputs(folder: str, patterns: Iterable[str], key_prefix: str = "") -> list[str]:
    """Files of `folder` (a local folder or an fsspec URL) whose names match any fnmatch pattern,
    sorted; local paths come back as paths, others as URLs with their protocol. A missing folder
    or no matching file stops the job, naming the config keys `<key_prefix>input_dir` and
    `<key_prefix>patterns`."""
    patterns = list(patterns)
    fs, root = fsspec.core.url_to_fs(str(folder))
    if not fs.isdir(root):
        raise FileNotFoundError(f"{key_prefix}input_dir={folder}: no such folder")
    names = {p for p in fs.ls(root, detail=False)
             if fs.isfile(p) and any(fnmatch.fnmatch(posixpath.basename(p), pat) for pat in patterns
                                     if "/" not in pat)}
    for pat in (p for p in patterns if "/" in p):  # "**/*.warc.gz": a glob below the folder
        names.update(p for p in fs.glob(posixpath.join(root.rstrip("/"), pat)) if fs.isfile(p))
    names = sorted(names)
    if not names:
        raise FileNotFoundError(f"no file in {folder} matches {key_prefix}patterns={patterns}")
    local = fs.protocol in ("file", "local") or "file" in fs.protocol
    return [p if local else fs.unstrip_protocol(p) for p in names]


def glob_files(patterns: Iterable[str]) -> list[Path]:
    """The files (not folders) matching any of the glob patterns, each once, sorted."""
    return sorted({Path(p) for pattern in patterns for p in glob.glob(pattern) if Path(p).is_file()})


def file_name(path: str | Path) -> str:
    return posixpath.basename(str(path).rstrip("/"))


def task_name(path: str | Path) -> str:
    """The name of the task that reads one input file: the file's name, dots made underscores."""
    return file_name(path).replace(".", "_")


def open_binary(path: str | Path) -> IO[bytes]:
    """A file's bytes, gzip-decompressed when it is gzip (told from its first bytes, not its name)."""
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")


# What reading JSON lines can drop (read_jsonl).
JSONL_DROP_REASONS = ("bad_json", "truncated")
# Bad lines of one file named one by one in the log, then only counted.
BAD_LINES_LOGGED = 5


def read_jsonl(path: str | Path, dropped: dict[str, int] | None = None,
               quiet: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number from 0, JSON object) for each non-blank line of a JSON-lines file, .gz or not.
    This is the one place that decides what a bad line costs: a line that is not UTF-8, not JSON
    or not a JSON object is dropped and the rest of the file read; it is logged with its file and
    line number (the first BAD_LINES_LOGGED of a file, then a total) and counted in
    `dropped["bad_json"]`. A gzip file that ends early or is corrupt ends the read at the damage,
    counted as `dropped["truncated"]`: the lines before it are kept. `quiet`: log nothing (a
    second pass over a file already read)."""
    bad = 0
    i = -1
    with open_binary(path) as f:
        lines = enumerate(f)
        while True:
            try:
                i, raw = next(lines)
            except StopIteration:
                break
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                if not quiet:
                    log.warning("%s: unreadable after line %d (%s); the rest of the file dropped (truncated)",
                                path, i + 1, e)
                _count(dropped, "truncated", 1)
                break
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig"))  # -sig: a byte order mark is no error
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
            except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                bad += 1
                if bad <= BAD_LINES_LOGGED and not quiet:
                    log.warning("%s, line %d: not a JSON object (%s); line dropped (bad_json)", path, i + 1, e)
                continue
            yield i, row
    if bad:
        if bad > BAD_LINES_LOGGED and not quiet:
            log.warning("%s: %d bad lines dropped in all (bad_json)", path, bad)
        _count(dropped, "bad_json", bad)


def _count(dropped: dict[str, int] | None, reason: str, n: int) -> None:
    if dropped is not None:
        dropped[reason] = dropped.get(reason, 0) + n


def list_archives(ingest) -> list[str]:
    """The corpus job's input archives (`ingest`: the config's IngestConfig): the lines of
    `ingest.paths_file` joined to `ingest.base_url`, or the files of `ingest.input_dir`; then the
    first `max_files`, or a seeded sample of `sample_files` (in listing order). Two inputs of one
    name would share a task: that stops the job, naming both."""
    if ingest.paths_file:
        from dataprep.remote import open_input

        with open_input(ingest.paths_file, ingest.retries, ingest.retry_backoff_s, ingest.timeout_s) as raw:
            text = (gzip.open(raw) if raw.peek(2)[:2] == GZIP_MAGIC else raw).read().decode("utf-8")
        base = ingest.base_url.rstrip("/")
        files = [f"{base}/{line.strip().lstrip('/')}" if base else line.strip()
                 for line in text.splitlines() if line.strip()]
        if not files:
            raise FileNotFoundError(f"ingest.paths_file={ingest.paths_file} lists no file")
    else:
        files = list_inputs(ingest.input_dir, ingest.patterns, "ingest.")
    if ingest.max_files:
        files = files[:ingest.max_files]
    elif ingest.sample_files and ingest.sample_files < len(files):
        import random

        keep = set(random.Random(ingest.sample_seed).sample(range(len(files)), ingest.sample_files))
        files = [f for i, f in enumerate(files) if i in keep]
    seen: dict[str, str] = {}
    for f in files:
        if task_name(f) in seen:
            raise ValueError(f"two inputs share the name {file_name(f)}: {seen[task_name(f)]} and {f}")
        seen[task_name(f)] = f
    return files

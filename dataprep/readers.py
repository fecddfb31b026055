"""Finding and reading a job's input files, one way for every job: the files of a folder (local
or any fsspec URL), the files matching glob patterns, a task's name from its file, JSON lines."""

from __future__ import annotations

import fnmatch
import glob
import gzip
import json
import posixpath
from pathlib import Path
from typing import IO, Iterable, Iterator

import fsspec

GZIP_MAGIC = b"\x1f\x8b"


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


def open_text(path: str | Path) -> IO[str]:
    """A UTF-8 text file, gzip-compressed or not (told from its first bytes, not its name)."""
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    return gzip.open(path, "rt", encoding="utf-8") if compressed else open(path, encoding="utf-8")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number from 0, parsed value) for each non-blank line of a JSON-lines file, .gz or not.
    A line that is not JSON stops the read, naming the file and line: this is the one place that
    decides what a bad line costs."""
    with open_text(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {i + 1}: not JSON ({e})") from e
            yield i, row


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

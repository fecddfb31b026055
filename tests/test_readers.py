"""Input files, one way for every job: listing, task names and JSON lines."""

import gzip
import json

import pytest

from dataprep.readers import glob_files, read_jsonl, task_name


def test_json_lines_plain_or_gzip_told_from_the_bytes(tmp_path):
    rows = [{"id": "a", "text": "x"}, {"id": "b", "nested": {"url": "u"}}]
    body = json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n"
    (tmp_path / "plain.jsonl").write_text(body)
    with gzip.open(tmp_path / "zipped.jsonl", "wt") as f:  # gzip without the .gz name
        f.write(body)
    for name in ("plain.jsonl", "zipped.jsonl"):
        assert list(read_jsonl(tmp_path / name)) == [(0, rows[0]), (2, rows[1])]  # blank lines count


def test_a_bad_json_line_names_the_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not JSON"):
        list(read_jsonl(tmp_path / "bad.jsonl"))


def test_glob_files_and_task_names(tmp_path):
    for name in ("b.txt", "a.txt", "c.md"):
        (tmp_path / name).write_text(name)
    (tmp_path / "d.txt").mkdir()  # a folder is not a file
    pattern = str(tmp_path / "*.txt")
    assert glob_files([pattern, pattern]) == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert task_name(tmp_path / "x.warc.gz") == task_name("s3://bucket/x.warc.gz") == "x_warc_gz"

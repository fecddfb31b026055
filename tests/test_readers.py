"""Input files, one way for every job: listing, task names and JSON lines."""

import gzip
import json
import logging

from conftest import damaged_jsonl
from dataprep.readers import glob_files, read_jsonl, task_name


def test_json_lines_plain_or_gzip_told_from_the_bytes(tmp_path):
    rows = [{"id": "a", "text": "x"}, {"id": "b", "nested": {"url": "u"}}]
    body = json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n"
    (tmp_path / "plain.jsonl").write_text(body)
    with gzip.open(tmp_path / "zipped.jsonl", "wt") as f:  # gzip without the .gz name
        f.write(body)
    for name in ("plain.jsonl", "zipped.jsonl"):
        assert list(read_jsonl(tmp_path / name)) == [(0, rows[0]), (2, rows[1])]  # blank lines count


def test_bad_lines_are_dropped_counted_and_logged_and_the_rest_kept(tmp_path, shared_data, caplog):
    path, rows = damaged_jsonl(shared_data, tmp_path)
    dropped = {}
    with caplog.at_level(logging.WARNING, logger="dataprep"):
        got = list(read_jsonl(path, dropped))
    assert [row for _, row in got] == rows and dropped == {"bad_json": 3}
    assert [i for i, _ in got] == [0, 1, 2] + list(range(6, len(rows) + 3))  # line numbers of the file
    logged = caplog.text
    for line, why in ((4, "column 41"), (5, "utf-8"), (6, "a JSON list")):
        assert f"damaged.jsonl.gz, line {line}: not a JSON object" in logged and why in logged


def test_a_cut_gzip_keeps_the_lines_before_the_cut(tmp_path, shared_data):
    data = (shared_data / "text" / "dolma_CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz").read_bytes()
    whole = list(read_jsonl(shared_data / "text" / "dolma_CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"))
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    dropped = {}
    got = list(read_jsonl(tmp_path / "cut.jsonl.gz", dropped))
    assert 100 < len(got) < len(whole) and got == whole[: len(got)] and dropped == {"truncated": 1}


def test_glob_files_and_task_names(tmp_path):
    for name in ("b.txt", "a.txt", "c.md"):
        (tmp_path / name).write_text(name)
    (tmp_path / "d.txt").mkdir()  # a folder is not a file
    pattern = str(tmp_path / "*.txt")
    assert glob_files([pattern, pattern]) == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert task_name(tmp_path / "x.warc.gz") == task_name("s3://bucket/x.warc.gz") == "x_warc_gz"

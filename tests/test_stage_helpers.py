"""What every corpus stage shares: drop accounting (documents.DocumentSorter) and driver steps
run once (tasks.once)."""

import json

import pyarrow.parquet as pq
import pytest

from dataprep.documents import DocumentSorter, new_document
from dataprep.fingerprint import Fingerprint
from dataprep.tasks import RerunMismatch, Reruns, once


def test_sorter_counts_every_document_once_and_writes_both_files(tmp_path):
    kept, dropped = tmp_path / "k.parquet", tmp_path / "d.parquet"
    with DocumentSorter(kept, dropped, ["first", "second"]) as sorter:
        for i, text in enumerate(["short", "a long enough text", "another long text", "été"]):
            doc = new_document(f"d{i}", text)
            if not sorter.judge("first", doc, "too_short" if len(text) < 6 else None):
                continue
            size = len(doc["text"].encode())
            doc["text"] = doc["text"][:5]  # a stage that cleans the text it keeps
            sorter.judge("second", doc, "odd" if i == 2 else None, size)
    first, second = sorter.stats["first"], sorter.stats["second"]
    assert (first["docs_in"], first["docs_out"], first["dropped"]) == (4, 2, {"too_short": 2})
    assert (first["bytes_in"], first["bytes_out"]) == (5 + 18 + 17 + 5, 18 + 17)
    assert (second["docs_in"], second["docs_out"], second["dropped"]) == (2, 1, {"odd": 1})
    assert (second["bytes_in"], second["bytes_out"]) == (18 + 17, 5)
    assert [r["id"] for r in pq.read_table(kept).to_pylist()] == ["d1"]
    gone = pq.read_table(dropped).to_pylist()
    assert [(r["id"], r["drop_reason"]) for r in gone] == [("d0", "too_short"), ("d2", "odd"), ("d3", "too_short")]


def test_sorter_writes_nothing_when_the_task_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with DocumentSorter(tmp_path / "k.parquet", tmp_path / "d.parquet", ["s"]) as sorter:
            sorter.judge("s", new_document("a", "text"), None)
            raise RuntimeError("the task broke")
    assert not any(tmp_path.iterdir())


def test_once_runs_a_step_once_and_keeps_its_result(tmp_path):
    calls = []
    step = lambda: calls.append(1) or {"how": "made", "n": len(calls)}  # noqa: E731
    marker = tmp_path / "_done" / "step.json"
    made_as = Fingerprint({"step.size": 1})
    assert once(marker, step, made_as, Reruns(), "step") == {"how": "made", "n": 1}
    assert once(marker, step, made_as, Reruns(), "step") == {"how": "made", "n": 1} and calls == [1]
    stored = json.loads(marker.read_text())
    assert stored["how"] == "made" and stored["_fingerprint"]["settings"] == {"step.size": 1}
    # made with another setting: strict stops, naming it; auto runs the step again
    with pytest.raises(RerunMismatch, match=r"step\.size: 1 -> 2"):
        once(marker, step, Fingerprint({"step.size": 2}), Reruns("strict"), "step")
    assert once(marker, step, Fingerprint({"step.size": 2}), Reruns(), "step") == {"how": "made", "n": 2}

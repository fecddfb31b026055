"""Stage `sources` (output_dir/sources/<source>/): one Ray task per file of each mixture source that
is not the crawl (reference text, JSON lines, Parquet) makes its documents. Its outputs are every
mixture source's documents, the crawl's (the dedup stage's) included."""

from __future__ import annotations

import time
from pathlib import Path

from dataprep import mixture
from dataprep.config import MixtureSourceConfig
from dataprep.documents import DocumentSorter
from dataprep.fingerprint import Fingerprint, config_items, file_identity
from dataprep.layout import CorpusLayout
from dataprep.readers import JSONL_DROP_REASONS
from dataprep.stages import StageInputs, dedup, source_task_name
from dataprep.stats import merge
from dataprep.tasks import TaskRunner

NAME = "sources"


def source_task(path: str, name: str, source: MixtureSourceConfig, kept_out: str, dropped_out: str) -> dict:
    """One file of a mixture source -> documents (an empty one dropped; a JSON line that is no
    document counted as dropped: bad_json)."""
    t0 = time.perf_counter()
    unreadable: dict[str, int] = {}
    with DocumentSorter(kept_out, dropped_out, [NAME], {NAME: ("empty", *JSONL_DROP_REASONS)}) as sorter:
        for doc in mixture.read_source_file(Path(path), name, source, unreadable):
            sorter.judge(NAME, doc, doc["drop_reason"])
        sorter.unreadable(NAME, unreadable)
    s = sorter.stats[NAME]
    s["seconds"] = time.perf_counter() - t0
    return s


# What shapes a source file's documents: how it is read (not its weight: that is the mixture's).
READ_SETTINGS = ("kind", "split", "chunk_chars", "strip_gutenberg", "text_field", "id_field", "url_field")


def fingerprints(inputs: StageInputs) -> dict[str, dict[str, Fingerprint]]:
    """Each mixture source's documents files, as `run` returns them (source -> task), with what
    shapes them: for a source read from files, how it is read and the file; for the crawl, the
    dedup stage's."""
    def make() -> dict[str, dict[str, Fingerprint]]:
        return {name: dict(dedup.fingerprints(inputs)) if src.kind == "crawl" else
                {task: Fingerprint(config_items(f"mixture.sources.{name}", src, READ_SETTINGS), {"file": file_identity(f)})
                 for task, f in inputs.source_files[name].items()}
                for name, src in inputs.sources.items()}
    return inputs.memo(NAME, make)


def documents(layout: CorpusLayout, inputs: StageInputs, crawl: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each mixture source's documents (task -> file), in a fixed order; the crawl's are `crawl`."""
    return {name: dict(crawl) if src.kind == "crawl" else
            {task: layout.documents(NAME, task, name) for task in inputs.source_files[name]}
            for name, src in inputs.sources.items()}


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict[str, dict[str, str]], dict]:
    tasks = {
        source_task_name(name, task): (str(f), name, inputs.sources[name], layout.documents(NAME, task, name),
                                       layout.dropped(NAME, task, name))
        for name, files in inputs.source_files.items() for task, f in files.items()
    }
    made_as = {source_task_name(name, task): fp for name, files in fingerprints(inputs).items()
               if name in inputs.source_files for task, fp in files.items()}
    results = TaskRunner(NAME, layout.stage_dir(NAME), inputs.reruns).run(source_task, tasks, made_as) if tasks else {}
    stats = {name: merge(results[source_task_name(name, task)] for task in files)
             for name, files in inputs.source_files.items()}
    return documents(layout, inputs, inputs.outputs[dedup.NAME]), {"sources": stats}

"""Stage `decontam` (output_dir/decontam/<source>/): GPT-3's decontamination (dataprep/decontam.py)
of every mixture source, the crawl and the curated ones alike (GPT-3 decontaminated all its
training data; a curated source may hold an evaluation set itself, as WikiText-2's test split is
Wikipedia). The index of the evaluation sets' n-grams is built once in the driver and put in the
Ray object store; one task per documents file looks up its documents' n-grams and drops the
contaminated ones (reason "contaminated"), or with decontam.mode=mark keeps them with the sets
they share n-grams with in their `contamination` column. decontam.enabled=false skips it."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import ray

from dataprep import mixture
from dataprep.config import DecontamConfig
from dataprep.decontam import EvalIndex, build_index
from dataprep.documents import DocumentSorter, open_parquet
from dataprep.fingerprint import Fingerprint, config_items, files_identity
from dataprep.layout import CorpusLayout
from dataprep.readers import glob_files
from dataprep.stages import StageInputs, source_task_name, sources
from dataprep.stats import merge
from dataprep.tasks import TaskRunner

NAME = "decontam"
REASON = "contaminated"
BATCH = 1024
INDEX_INFO = "index_info"  # in each task's statistics: what the index it read held
log = logging.getLogger("dataprep")


def decontam_task(docs_path: str, mode: str, kept_out: str, dropped_out: str, max_ids: int,
                  index: EvalIndex | ray.ObjectRef, index_info: dict | None = None) -> dict:
    """One documents file: each document sharing an n-gram with an evaluation set is dropped
    (mode drop) or flagged (mode mark). Per set: the documents that share n-grams with it (count,
    the first max_ids ids) and the numbers of the set's examples they share them with. index_info
    (what the index holds) is kept with them, for a rerun that finds every task done."""
    t0 = time.perf_counter()
    if isinstance(index, ray.ObjectRef):
        index = ray.get(index)  # the arrays are mapped from the object store, not copied
    found: dict[str, dict] = {name: {"documents": 0, "document_ids": [], "examples": set()} for name in index.names}
    contaminated = 0
    with DocumentSorter(kept_out, dropped_out, [NAME]) as sorter:
        for batch in open_parquet(docs_path).iter_batches(batch_size=BATCH):
            docs = batch.to_pylist()
            texts, sets, examples = index.matches([d["text"] for d in docs])
            hits: dict[int, set[int]] = {}
            for t, s, e in zip(texts.tolist(), sets.tolist(), examples.tolist()):
                hits.setdefault(t, set()).add(s)
                found[index.names[s]]["examples"].add(e)
            contaminated += len(hits)
            for i, doc in enumerate(docs):
                names = [index.names[s] for s in sorted(hits.get(i, ()))]
                for name in names:
                    f = found[name]
                    f["documents"] += 1
                    if len(f["document_ids"]) < max_ids:
                        f["document_ids"].append(doc["id"])
                doc["contamination"] = ",".join(names) or None
                sorter.judge(NAME, doc, REASON if names and mode == "drop" else None)
    s = sorter.stats[NAME]
    s["contaminated"] = contaminated  # dropped, or kept with a flag
    s["sets"] = {name: {**f, "examples": sorted(f["examples"])} for name, f in found.items()}
    s["seconds"] = time.perf_counter() - t0
    if index_info is not None:
        s[INDEX_INFO] = index_info
    return s


def eval_documents(cfg: DecontamConfig, name: str) -> Iterator[tuple[str, str]]:
    """(id, text) of each example of evaluation set `name`, in order (file after file, as
    mixture.read_source_file reads them)."""
    s = cfg.sets[name]
    for path in glob_files(s.paths):
        for doc in mixture.read_source_file(Path(path), name, s.as_source()):
            yield doc["id"], doc["text"]


def eval_texts(cfg: DecontamConfig, name: str, ids: list[str]) -> Iterator[str]:
    """The texts of the examples of evaluation set `name`, in order; their ids are appended to `ids`."""
    for doc_id, text in eval_documents(cfg, name):
        ids.append(doc_id)
        yield text


def fingerprints(inputs: StageInputs) -> dict[str, dict[str, Fingerprint]]:
    """Each mixture source's documents after this stage (source -> task), with what shapes them:
    the decontam.* settings, the evaluation sets' files and the documents before it. Off: the
    sources stage's, unchanged (its outputs pass through)."""
    d = inputs.cfg.decontam
    before = sources.fingerprints(inputs)
    if not d.enabled or not d.sets:
        return before

    def make() -> dict[str, dict[str, Fingerprint]]:
        settings = config_items("decontam", d, ["mode", "ngram", "example_ids"])
        for name, s in d.sets.items():  # its files by identity below, not by how a path spells them
            settings.update(config_items(f"decontam.sets.{name}", s, [k for k in dataclasses.asdict(s) if k != "paths"]))
        files = files_identity(p for s in d.sets.values() for p in glob_files(s.paths))
        return {name: {task: Fingerprint(settings, files, {"documents": fp.digest}) for task, fp in tasks.items()}
                for name, tasks in before.items()}
    return inputs.memo(NAME, make)


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict[str, dict[str, str]], dict]:
    """Every mixture source's documents without the contaminated ones: source -> task -> file."""
    d, docs = inputs.cfg.decontam, inputs.outputs[sources.NAME]
    if not d.enabled or not d.sets:
        return docs, {}
    example_ids: dict[str, list[str]] = {name: [] for name in d.sets}
    built: dict[str, dict] = {}

    def build() -> EvalIndex:
        """The index; what it holds goes to `built`."""
        t0 = time.perf_counter()
        index, info = build_index({name: eval_texts(d, name, ids) for name, ids in example_ids.items()}, d.ngram,
                                  {name: s.placeholder for name, s in d.sets.items() if s.placeholder})
        seconds = time.perf_counter() - t0
        log.info("decontam: %d-grams of %s: %d rows, %.1f MB, built in %.1fs", d.ngram,
                 ", ".join(f"{name} ({i['examples']} examples)" for name, i in info.items()), len(index.hashes),
                 index.nbytes / 2**20, seconds)
        built.update(sets=info, index={"rows": len(index.hashes), "bytes": index.nbytes, "seconds": round(seconds, 3)})
        return index

    def shared() -> tuple:
        """The index in the object store (built only when a task is left to run), what it holds."""
        return ray.put(build()), built

    tasks = {source_task_name(name, task): (path, d.mode, layout.documents(NAME, task, name),
                                            layout.dropped(NAME, task, name), d.example_ids)
             for name, files in docs.items() for task, path in files.items()}
    made_as = {source_task_name(name, task): fp for name, files in fingerprints(inputs).items()
               for task, fp in files.items()}
    results = TaskRunner(NAME, layout.stage_dir(NAME), inputs.reruns).run(decontam_task, tasks, made_as, shared)
    if not built:  # every task was done: what the index held is in their markers, the sets' ids in the files
        kept = next((r[INDEX_INFO] for r in results.values() if INDEX_INFO in r), None)
        if kept is None:  # no task, or markers written before they kept it
            build()
        else:
            built.update(kept)
            for name, ids in example_ids.items():
                ids.extend(doc_id for doc_id, _ in eval_documents(d, name))
    info = built["sets"]
    s = merge({k: v for k, v in r.items() if k != INDEX_INFO} for r in results.values())
    s.update(mode=d.mode, ngram=d.ngram, index=built["index"])
    s["by_source"] = {}
    for name, files in docs.items():
        parts = [results[source_task_name(name, task)] for task in files]
        s["by_source"][name] = {"docs_in": sum(p["docs_in"] for p in parts), "docs_out": sum(p["docs_out"] for p in parts),
                                "contaminated": sum(p["contaminated"] for p in parts)}
        if s["by_source"][name]["contaminated"]:
            log.warning("decontam: %d of %d documents of source %s share a %d-gram with an evaluation set (%s)",
                        s["by_source"][name]["contaminated"], s["by_source"][name]["docs_in"], name, d.ngram,
                        "dropped" if d.mode == "drop" else "kept, flagged in the contamination column")
    s["sets"] = {}
    for name, ids in example_ids.items():
        parts = [results[task]["sets"][name] for task in tasks]
        hit = np.zeros(len(ids), dtype=bool)  # the set's examples that some task found
        for p in parts:
            hit[p["examples"]] = True
        hit = np.flatnonzero(hit)
        s["sets"][name] = {**info[name], "documents": sum(p["documents"] for p in parts),
                           "document_ids": [i for p in parts for i in p["document_ids"]][:d.example_ids],
                           "examples_hit": len(hit), "example_ids": [ids[e] for e in hit[:d.example_ids]]}
    outputs = {name: {task: layout.documents(NAME, task, name) for task in files} for name, files in docs.items()}
    return outputs, {"stages": {NAME: s}}

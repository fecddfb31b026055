"""Stage `quality` (output_dir/quality/): the GPT-3 quality classifier, trained once in the driver
(reference text against this job's raw crawl text, cross-fitted in quality.folds folds, at most
quality.max_train_docs documents of each kind) unless quality.model_path gives one; then one Ray
task per file of filtered documents scores each one with the fold model that did not train on it
and keeps it or drops it (Pareto or threshold), decided from the document's id and score alone.
quality.enabled=false skips it."""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from dataprep import quality
from dataprep.config import QualityConfig
from dataprep.documents import DocumentSorter, read_documents
from dataprep.fingerprint import Fingerprint, combine, config_items, file_identity, files_identity
from dataprep.layout import CorpusLayout
from dataprep.readers import JSONL_DROP_REASONS, glob_files
from dataprep.stages import StageInputs, extract
from dataprep.stats import merge
from dataprep.tasks import TaskRunner, once

NAME = "quality"
log = logging.getLogger("dataprep")


def quality_task(docs_path: str, model_path: str, kept_out: str, dropped_out: str, q: QualityConfig,
                 held_out: bool) -> dict:
    """Score one file's documents (quality_score on every one) and select. held_out: each
    document is scored by the fold model that did not train on it (a classifier trained here on
    this crawl); else by all the fold models together (a classifier given by quality.model_path)."""
    t0 = time.perf_counter()
    model = quality.load(model_path)
    docs = list(read_documents(docs_path))
    texts = [d["text"] for d in docs]
    scores = model.score_held_out([d["id"] for d in docs], texts) if held_out else model.score(texts)
    with DocumentSorter(kept_out, dropped_out, [NAME]) as sorter:
        for doc, score in zip(docs, scores.tolist()):
            doc["quality_score"] = score
            kept = quality.keep(doc["id"], score, q.selection, q.threshold, q.alpha, q.seed)
            sorter.judge(NAME, doc, None if kept else "quality")
    s = sorter.stats[NAME]
    s["histogram"] = quality.histogram(scores)
    s["seconds"] = time.perf_counter() - t0
    return s


def crawl_negatives(layout: CorpusLayout, inputs: StageInputs) -> Iterator[tuple[str, str]]:
    """(id, text) of this job's raw extracted crawl text: every document that reached the language
    stage in a wanted language, whatever the filters said; a file's batch at a time."""
    wanted = set(inputs.cfg.langid.languages)
    for n in inputs.outputs[extract.NAME]:  # the archives that were read (not those that failed)
        for part in (layout.documents(extract.NAME, n), layout.dropped(extract.NAME, n)):
            for d in read_documents(part, ["id", "text", "lang"]):
                if d["text"] and d["lang"] is not None and (not wanted or d["lang"] in wanted):
                    yield d["id"], d["text"]


def classifier_fingerprint(inputs: StageInputs) -> Fingerprint:
    """The classifier given (its file), or trained here: its training settings, the languages the
    crawl's negatives are taken in, the reference and negative files, and every archive read."""
    q = inputs.cfg.quality
    if q.model_path:
        return Fingerprint({"quality.model_path": q.model_path}, {"quality.model_path": file_identity(q.model_path)})
    settings = {**config_items("quality", q, ["model_path", "hash_bits", "ngram", "c", "folds", "max_train_docs",
                                              "seed", "chunk_chars"]),
                **config_items("langid", inputs.cfg.langid, ["languages"])}
    files = {**files_identity(glob_files(q.reference_paths)), **files_identity(glob_files(q.negative_paths))}
    return Fingerprint(settings, files, {"extract": combine(read_archives(inputs))})


def read_archives(inputs: StageInputs) -> dict[str, Fingerprint]:
    """The extract stage's fingerprints of the archives it read (not of those that failed: a rerun
    that reads them makes new outputs, the classifier's included)."""
    made = extract.fingerprints(inputs)
    return {n: made[n] for n in inputs.outputs[extract.NAME]}


def fingerprints(inputs: StageInputs) -> dict[str, Fingerprint]:
    """Per documents file: the selection settings, the classifier and the extract task before it;
    with the stage off, the extract stage's (its documents pass through)."""
    q = inputs.cfg.quality
    if not q.enabled:
        return read_archives(inputs)

    def make() -> dict[str, Fingerprint]:
        settings = config_items("quality", q, ["enabled", "selection", "alpha", "threshold", "seed"])
        model = classifier_fingerprint(inputs).digest
        return {n: Fingerprint(settings, upstream={"extract": fp.digest, "classifier": model})
                for n, fp in read_archives(inputs).items()}
    return inputs.memo(NAME, make)


def classifier(layout: CorpusLayout, inputs: StageInputs) -> tuple[str, dict]:
    """The classifier's path and what is known of it: given by quality.model_path, else trained
    here once (its marker holds its evaluation). Positives: the reference sources, in
    document-sized chunks. Negatives: the crawl's text (crawl_negatives) and the configured
    JSON-lines files."""
    q = inputs.cfg.quality
    if q.model_path:
        path = str(Path(q.model_path).resolve())
        return path, {"how": f"loaded {q.model_path}", **quality.load(path).info}

    def train() -> dict:
        t0 = time.perf_counter()
        features = quality.FeatureSettings(hash_bits=q.hash_bits, ngram=q.ngram)
        unreadable = dict.fromkeys(JSONL_DROP_REASONS, 0)
        negatives = itertools.chain(crawl_negatives(layout, inputs), quality.jsonl_documents(q.negative_paths, unreadable))
        model = quality.train(quality.reference_documents(q.reference_paths, q.chunk_chars), negatives, features,
                              c=q.c, folds=q.folds, max_train_docs=q.max_train_docs, seed=q.seed)
        model.save(layout.quality_model)
        return {"how": f"trained: reference text vs this job's extracted crawl text, {q.folds} folds "
                       f"(each crawl document scored by the model that did not train on it)",
                **model.info, "negative_paths_dropped": unreadable, "seconds": round(time.perf_counter() - t0, 3)}

    return str(layout.quality_model), once(layout.marker(NAME, "model"), train, classifier_fingerprint(inputs),
                                           inputs.reruns, NAME)


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict[str, str], dict]:
    """The selected documents (task -> file); the extract stage's when the stage is off."""
    q, docs = inputs.cfg.quality, inputs.outputs[extract.NAME]
    if not q.enabled:
        return docs, {}
    model_path, info = classifier(layout, inputs)
    log.info("quality classifier: %s (held-out precision %s, recall %s, F1 %s, ROC AUC %s)",
             info["how"], info.get("precision"), info.get("recall"), info.get("f1"), info.get("roc_auc"))
    tasks = {n: (path, model_path, layout.documents(NAME, n), layout.dropped(NAME, n), q, not q.model_path)
             for n, path in docs.items()}
    results = TaskRunner(NAME, layout.stage_dir(NAME), inputs.reruns).run(quality_task, tasks, fingerprints(inputs))
    s = merge(results[n] for n in tasks)
    s["histogram"] = np.sum([results[n]["histogram"] for n in tasks], axis=0).tolist()
    s["histogram_bins"] = np.linspace(0.0, 1.0, len(s["histogram"]) + 1).round(2).tolist()
    s["keep_rate"] = round(s["docs_out"] / s["docs_in"], 4) if s["docs_in"] else None
    s["selection"] = {"mode": q.selection, "alpha": q.alpha, "threshold": q.threshold, "seed": q.seed}
    s["classifier"] = info
    return {n: layout.documents(NAME, n) for n in tasks}, {"stages": {NAME: s}}

"""Stage `extract` (output_dir/extract/): one Ray task per input archive reads its records and takes
each through extraction (decode, main content), language id and the heuristic filters. Its
statistics are those of three stages: extract, language and filter."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from dataprep import extract, filters, ingest, langid
from dataprep.config import DataprepConfig
from dataprep.documents import DocumentSorter, new_document, text_bytes
from dataprep.fingerprint import Fingerprint, config_items, file_identity
from dataprep.layout import CorpusLayout
from dataprep.readers import file_name
from dataprep.stages import StageInputs
from dataprep.stats import merge
from dataprep.tasks import FAILED, TaskRunner

NAME = "extract"
STAGES = ("extract", "language", "filter")  # the entries of stats.json this stage fills
log = logging.getLogger("dataprep")


def record_filters(cfg: DataprepConfig) -> list:
    """The filter stage's checks, in order: length, Gopher repetition, Gopher quality, C4, and
    length again (C4 removes lines)."""
    f = cfg.filters
    checks = [filters.length_filter(f.min_chars, f.min_words)]
    if f.gopher_repetition.enabled:
        checks.append(filters.gopher_repetition_filter(**asdict(f.gopher_repetition)))
    if f.gopher_quality.enabled:
        checks.append(filters.gopher_quality_filter(**asdict(f.gopher_quality)))
    if f.c4.enabled:
        checks += [filters.c4_filter(**asdict(f.c4)), checks[0]]
    return checks


def _extract_text(rec: ingest.RawRecord, doc: dict, counts: dict) -> str | None:
    """Set the document's text from its record; the reason to drop it, if any. How each payload
    was decoded, when not plainly, is counted in `counts`."""
    if rec.drop_reason:
        return rec.drop_reason
    try:
        text, how = extract.decode_with_status(rec.payload, rec.charset)
        if how != extract.OK:
            counts[how] = counts.get(how, 0) + 1
        doc["text"] = text if rec.kind == "text" else extract.html_to_text(text)
    except Exception as e:  # a broken page must not stop the file
        log.debug("extract failed for %s: %s", rec.id, e)
        return "extract_failed"
    return None if doc["text"].strip() else "empty"


def extract_task(path: str, kept_out: str, dropped_out: str, cfg: DataprepConfig) -> dict:
    """One archive: ingest -> extract -> language -> filter. Every record is counted in exactly
    one place: a stage's dropped-by-reason or the kept output."""
    t0 = time.perf_counter()
    lang_check = langid.language_filter(cfg.langid.languages, cfg.langid.min_score, cfg.langid.max_chars)
    checks = record_filters(cfg)
    langs: dict[str, int] = {}
    source = file_name(path)
    with DocumentSorter(kept_out, dropped_out, STAGES, {"extract": ingest.DROP_REASONS}) as sorter:
        ex, lg, fl = (sorter.stats[stage] for stage in STAGES)
        i = cfg.ingest
        for rec in ingest.read_records(path, i.max_payload_bytes, i.retries, i.retry_backoff_s, i.timeout_s):
            doc = new_document(rec.id, "", rec.url, source, rec.date)
            if not sorter.judge("extract", doc, _extract_text(rec, doc, ex), rec.raw_bytes):
                continue
            t1 = time.perf_counter()
            reason = lang_check(doc)
            lg["seconds"] += time.perf_counter() - t1
            langs[doc["lang"]] = langs.get(doc["lang"], 0) + 1
            if not sorter.judge("language", doc, reason):
                continue
            size = text_bytes(doc)  # before the filters clean the text
            t1 = time.perf_counter()
            reason = filters.first_failure(doc, checks)
            fl["seconds"] += time.perf_counter() - t1
            sorter.judge("filter", doc, reason, size)
    ex["seconds"] = time.perf_counter() - t0 - lg["seconds"] - fl["seconds"]
    lg["languages"] = dict(sorted(langs.items()))
    return {"docs_in": ex["docs_in"], "extract": ex, "language": lg, "filter": fl}


def fingerprints(inputs: StageInputs) -> dict[str, Fingerprint]:
    """Per archive: the record size cap, the language and filter settings, and the archive."""
    def make() -> dict[str, Fingerprint]:
        cfg = inputs.cfg
        settings = {**config_items("ingest", cfg.ingest, ["max_payload_bytes"]), **config_items("langid", cfg.langid),
                    **config_items("filters", cfg.filters)}
        return {n: Fingerprint(settings, {"archive": file_identity(f)}) for n, f in inputs.archives.items()}
    return inputs.memo(NAME, make)


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict[str, str], dict]:
    """The archives' documents after the filters (task -> file)."""
    tasks = {n: (str(f), layout.documents(NAME, n), layout.dropped(NAME, n), inputs.cfg)
             for n, f in inputs.archives.items()}
    results = TaskRunner(NAME, layout.stage_dir(NAME), inputs.reruns).run(extract_task, tasks, fingerprints(inputs))
    failed = {n: r[FAILED] for n, r in results.items() if FAILED in r}
    done = [n for n in tasks if n not in failed]
    stats = {stage: merge(results[n][stage] for n in done) for stage in STAGES}
    stats["extract"]["failed_files"] = [{"file": str(inputs.archives[n]), "error": e} for n, e in failed.items()]
    if failed:
        log.warning("[%s] %d of %d input files could not be read (stats.json: extract.failed_files); the job "
                    "goes on without them, and a rerun tries them again", NAME, len(failed), len(tasks))
    languages: dict[str, int] = {}
    for n in done:
        for lang, count in results[n]["language"].get("languages", {}).items():
            languages[lang] = languages.get(lang, 0) + count
    stats["language"]["languages"] = dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0])))
    return {n: layout.documents(NAME, n) for n in done}, {"stages": stats}

"""Stage `dedup` (output_dir/dedup/): exact, then MinHash-LSH near-duplicate removal of the crawl's
documents (after the filters and the quality selection), as the Ray stages of
dataprep/dedup_stages.py over files under output_dir/dedup/."""

from __future__ import annotations

from dataprep.dedup_stages import Deduplicator, decisions_fingerprint
from dataprep.fingerprint import Fingerprint, combine
from dataprep.layout import CorpusLayout
from dataprep.stages import StageInputs, quality

NAME = "dedup"


def fingerprints(inputs: StageInputs) -> dict[str, Fingerprint]:
    """Every file's decisions depend on every document: per documents file, the dedup settings and
    all of the quality stage's outputs."""
    def make() -> dict[str, Fingerprint]:
        docs = quality.fingerprints(inputs)
        return dict.fromkeys(docs, decisions_fingerprint(inputs.cfg.dedup, {"quality": combine(docs)}))
    return inputs.memo(NAME, make)


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict[str, str], dict]:
    """The crawl's documents without duplicates (task -> file)."""
    docs = inputs.outputs[quality.NAME]
    kept = {n: layout.documents(NAME, n) for n in docs}
    dropped = {n: layout.dropped(NAME, n) for n in docs}
    dedup = Deduplicator(inputs.cfg.dedup, layout.stage_dir(NAME), reruns=inputs.reruns)
    stats = dedup.run(docs, kept, dropped, {"quality": combine(quality.fingerprints(inputs))})
    return kept, {"stages": {NAME: stats}}

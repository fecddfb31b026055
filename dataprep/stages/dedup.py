"""Stage `dedup` (output_dir/dedup/): exact, then MinHash-LSH near-duplicate removal of the crawl's
documents (after the filters and the quality selection), as the Ray stages of
dataprep/dedup_stages.py over files under output_dir/dedup/."""

from __future__ import annotations

from dataprep.dedup_stages import Deduplicator
from dataprep.layout import CorpusLayout
from dataprep.stages import StageInputs, quality

NAME = "dedup"


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict[str, str], dict]:
    """The crawl's documents without duplicates (task -> file)."""
    docs = inputs.outputs[quality.NAME]
    kept = {n: layout.documents(NAME, n) for n in docs}
    dropped = {n: layout.dropped(NAME, n) for n in docs}
    stats = Deduplicator(inputs.cfg.dedup, layout.stage_dir(NAME)).run(docs, kept, dropped)
    return kept, {"stages": {NAME: stats}}

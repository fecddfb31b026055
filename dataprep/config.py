"""Typed schema for `conf/dataprep.yaml`: unknown keys and wrong types stop the job at once, and so
do wrong values: each config checks its own in `__post_init__`, when Hydra's config becomes
these objects (`OmegaConf.to_object`), before any work; the message names the key."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore

from dataprep.readers import glob_files

# The values some keys may take.
SOURCE_KINDS = ("crawl", "text", "jsonl", "parquet")
TEXT_SPLITS = ("file", "headings", "chunks")
QUALITY_SELECTIONS = ("pareto", "threshold", "none")
SHINGLE_HASHES = ("wordhash", "sha1")  # dataprep/shingling.py's SHINGLE_HASHES
DECONTAM_MODES = ("drop", "mark")


@dataclass
class IngestConfig:
    input_dir: str = "${shared_data}/warc"
    # Files of input_dir to read (fnmatch patterns on the name; a pattern with "/" or "**" is a
    # glob below input_dir, e.g. "**/*.warc.gz"); each file is one task.
    patterns: List[str] = field(default_factory=lambda: ["*.warc.gz", "*.warc", "*.wet.gz", "*.arc", "*.arc.gz"])
    # Instead of input_dir: a path listing (Common Crawl's warc.paths.gz: one path a line, gzip or
    # plain), a local file or a URL; each line is joined to base_url (when set).
    paths_file: Optional[str] = None
    base_url: str = ""
    # Of the listed files, the first max_files, or a sample of sample_files (seeded): null for all.
    max_files: Optional[int] = None
    sample_files: Optional[int] = None
    sample_seed: int = 0
    # Remote (http/https) archives are streamed; a transient failure (5xx, 429, reset, a body cut
    # short) is retried from the byte where it broke, up to `retries` failed attempts in a row,
    # waiting retry_backoff_s x 2^k (with jitter). A file that still fails is counted in
    # stats.json and left without a completion marker: a rerun tries it again.
    retries: int = 5
    retry_backoff_s: float = 1.0
    timeout_s: float = 60.0
    # Payloads larger than this are skipped (reason too_large).
    max_payload_bytes: int = 2_000_000

    def __post_init__(self) -> None:
        for key in ("max_files", "sample_files"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"ingest.{key} must be >= 1 (or null), not {value}")
        if self.max_files is not None and self.sample_files is not None:
            raise ValueError("ingest.max_files and ingest.sample_files: set one (the first N, or a sample of N)")
        if self.retries < 0 or self.retry_backoff_s < 0 or self.timeout_s <= 0:
            raise ValueError("ingest.retries and ingest.retry_backoff_s must be >= 0, ingest.timeout_s > 0")


@dataclass
class LangIdConfig:
    # Keep documents in these languages (ISO 639-1, py3langid's codes); empty: label, keep all.
    languages: List[str] = field(default_factory=lambda: ["en"])
    # ... identified with at least this probability.
    min_score: float = 0.5
    # Characters of a document the identifier reads (its cost grows with them).
    max_chars: int = 2000


@dataclass
class GopherQualityConfig:
    # Rae et al. 2021 (Gopher), appendix A.1.1.
    enabled: bool = True
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # '#' and ellipses per word
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8  # words with at least one letter
    min_stop_words: int = 2
    stop_words: List[str] = field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])


@dataclass
class GopherRepetitionConfig:
    # Rae et al. 2021 (Gopher), table A1: drop above these fractions.
    enabled: bool = True
    max_dup_line_frac: float = 0.3
    max_dup_para_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    max_dup_para_char_frac: float = 0.2
    # n -> max share of characters in the most frequent n-gram
    top_ngram_max_frac: Dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    # n -> max share of characters in n-grams that occur more than once
    dup_ngram_max_frac: Dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})


@dataclass
class C4Config:
    # Raffel et al. 2020 (C4), section 2.2. Line rules clean kept text; page rules drop.
    enabled: bool = True
    remove_no_terminal_punct_lines: bool = True
    min_words_per_line: int = 5
    max_word_length: int = 1000
    remove_javascript_lines: bool = True
    remove_policy_lines: bool = True  # terms of use, privacy / cookie policy, uses cookies
    drop_lorem_ipsum: bool = True
    drop_curly_braces: bool = True
    min_sentences: int = 3


@dataclass
class FilterConfig:
    min_chars: int = 200
    min_words: int = 30
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)


@dataclass
class QualityConfig:
    # The GPT-3 quality classifier (dataprep/quality.py). false: no scoring, no selection.
    enabled: bool = True
    # A model saved by an earlier run (output_dir/quality/model.safetensors); None: train one.
    model_path: Optional[str] = None
    # Positives: reference text files (Gutenberg header/footer stripped), cut into documents.
    reference_paths: List[str] = field(default_factory=lambda: ["${shared_data}/reference/*.txt"])
    chunk_chars: int = 3000
    # Negatives: this job's extracted crawl text (in langid.languages) and these JSON-lines files.
    negative_paths: List[str] = field(default_factory=lambda: ["${shared_data}/text/*.jsonl.gz"])
    # Features: hashed word 1..ngram-grams in 2**hash_bits buckets; logistic regression with C.
    hash_bits: int = 18
    ngram: int = 2
    c: float = 1.0
    # Cross-fitting: k fold models, each crawl document scored by the one that did not train on
    # it; their held-out predictions are the evaluation in stats.json.
    folds: int = 5
    # At most this many positives and this many negatives train the classifier (a seeded sample
    # within each fold): the driver holds them, each cut to 20,000 characters; about 640 MiB at
    # 10,000 web-page-sized documents of each (docs/quality.md).
    max_train_docs: int = 10_000
    # pareto: keep when pareto(alpha) > 1 - score (GPT-3); threshold: score >= threshold; none.
    selection: str = "pareto"
    alpha: float = 9.0
    threshold: float = 0.5
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        if self.selection not in QUALITY_SELECTIONS:
            raise ValueError(f"quality.selection={self.selection!r}: expected pareto, threshold or none")
        if self.folds < 2:
            raise ValueError(f"quality.folds={self.folds}: cross-fitting needs at least 2 folds")
        if self.max_train_docs < self.folds:
            raise ValueError(f"quality.max_train_docs={self.max_train_docs}: must be at least quality.folds={self.folds}")
        if self.model_path:
            from dataprep import quality  # noqa: PLC0415 - numpy and safetensors, only when needed
            quality.load(self.model_path)  # exists and is a quality classifier


@dataclass
class DedupConfig:
    # Exact: documents whose normalized text is equal. Fuzzy: MinHash LSH (docs/dedup.md).
    exact: bool = True
    fuzzy: bool = True
    # MinHash over word n-gram shingles; LSH keeps pairs of estimated Jaccard >= threshold.
    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    seed: int = 1
    # Shingle hash: "wordhash" (fast: words hashed once, n-grams combined in numpy) or "sha1"
    # (datasketch's default: signatures equal a default datasketch MinHash's, 2-3x slower).
    hashfunc: str = "wordhash"
    # LSH bands x rows; None: chosen from threshold as datasketch does, minimizing
    # fp_weight * false positives + fn_weight * false negatives.
    bands: Optional[int] = None
    rows: Optional[int] = None
    fp_weight: float = 0.5
    fn_weight: float = 0.5
    # A candidate pair becomes an edge only if its signatures estimate Jaccard >= threshold.
    verify: bool = True
    # Survivor of a cluster: the highest value of this column (when a file has it), then the
    # smallest id. None: smallest id only.
    quality_column: Optional[str] = "quality_score"
    # Memory of one task's data (above its Ray worker's ~210 MiB baseline): the partitioned stages
    # (exact groups, LSH buckets, connected components) get as many partitions as this needs, so
    # more documents -> more partitions spilled to disk, never a bigger task (docs/dedup.md).
    memory_budget_mb: float = 1024
    # None: as many as the budget needs; a number: exactly that many, for every partitioned stage.
    partitions: Optional[int] = None

    def __post_init__(self) -> None:
        if self.hashfunc not in SHINGLE_HASHES:
            raise ValueError(f"dedup.hashfunc={self.hashfunc!r}: choose one of {sorted(SHINGLE_HASHES)}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("dedup.bands and dedup.rows go together: set both, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"dedup.bands * dedup.rows = {self.bands * self.rows} > dedup.num_perm = {self.num_perm}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"dedup.threshold={self.threshold}: must be in (0, 1)")


@dataclass
class TokenizerConfig:
    # A tokenizer.json to use as is (e.g. ${shared_data}/tokenizer/gpt2/tokenizer.json);
    # None: train a byte-level BPE on a sample of the mixture's sources.
    path: Optional[str] = None
    vocab_size: int = 4096
    min_frequency: int = 2
    # Ends every document (it separates documents in the token stream); always a special token.
    eod_token: str = "<|endoftext|>"
    # More special tokens for a trained BPE (one id each, never split or merged).
    special_tokens: List[str] = field(default_factory=list)
    # Training sample: about this many bytes of text, from each mixture source in proportion to
    # its weight (a seeded sample of its documents).
    sample_bytes: int = 20_000_000
    seed: int = 1


@dataclass
class ValidationConfig:
    """Documents held out of training for validation, per mixture source, before the mixture
    repeats any (docs/shards.md). A source's documents are ranked by a seeded hash of their id;
    the first max(min_documents, ceil(fraction x documents)) are held out, fewer when their tokens
    reach max_tokens, and never the source's last training document."""
    # Share of each source's documents held out; 0: none (the trainer then holds out windows).
    fraction: float = 0.05
    # ... and at least this many of each source (when fraction > 0).
    min_documents: int = 1
    # Per source: the held-out tokens stop growing with the corpus here (the overlap check
    # below holds 8 bytes per held-out token).
    max_tokens: int = 4_194_304
    # A training document (of any source) sharing a span of this many tokens with a held-out
    # document is left out of training: the same text reached by another id or another source.
    overlap_tokens: int = 50
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.fraction < 1:
            raise ValueError(f"validation.fraction={self.fraction}: must be in [0, 1) (0: no held-out documents)")
        if self.min_documents < 0:
            raise ValueError(f"validation.min_documents={self.min_documents}: must be >= 0")
        if self.max_tokens < 1:
            raise ValueError(f"validation.max_tokens={self.max_tokens}: must be positive")
        if self.overlap_tokens < 1:
            raise ValueError(f"validation.overlap_tokens={self.overlap_tokens}: must be positive")

    @property
    def enabled(self) -> bool:
        return self.fraction > 0


@dataclass
class ShardConfig:
    shard_tokens: int = 16_777_216


@dataclass
class MixtureSourceConfig:
    # crawl: this job's filtered, deduplicated crawl; text: plain text files;
    # jsonl: JSON lines (.gz read too); parquet: Parquet files.
    kind: str = "crawl"
    # Glob patterns of the source's files (text, jsonl, parquet); each file is one task.
    paths: List[str] = field(default_factory=list)
    # Share of the training tokens (weights are normalized to sum to 1).
    weight: float = 1.0
    # text: how a file becomes documents: "file" (one document), "headings" (one per WikiText
    # top-level ' = Title = ' heading), "chunks" (about chunk_chars each, cut at line ends).
    split: str = "file"
    chunk_chars: int = 20_000
    # text: drop the Project Gutenberg header and licence footer.
    strip_gutenberg: bool = False
    # jsonl / parquet: fields holding text, id and url (dotted for nested, e.g. metadata.url).
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"


@dataclass
class MixtureConfig:
    # Name -> source. Empty: the crawl alone, one epoch.
    sources: Dict[str, MixtureSourceConfig] = field(default_factory=dict)
    # The mixture's size: total_tokens, or anchor_epochs passes over the source named anchor.
    total_tokens: Optional[int] = None
    anchor: Optional[str] = None
    anchor_epochs: Optional[float] = None
    # Seeds the document subsets (epochs below 1 or fractional parts) and the order.
    seed: int = 1
    # Achieved shares further than this from their targets are explained in the manifest.
    tolerance: float = 0.01

    def sources_or_crawl(self) -> Dict[str, MixtureSourceConfig]:
        """The configured sources; no sources means the crawl alone."""
        return dict(self.sources) if self.sources else {"crawl": MixtureSourceConfig(kind="crawl", weight=1.0)}

    def size(self) -> tuple[Optional[int], Optional[str], Optional[float]]:
        """(total_tokens, anchor, anchor_epochs); no sources and no size means one crawl epoch."""
        if not self.sources and self.total_tokens is None and self.anchor is None:
            return None, "crawl", 1.0
        return self.total_tokens, self.anchor, self.anchor_epochs

    def __post_init__(self) -> None:
        sources = self.sources_or_crawl()
        for name, s in sources.items():
            _check_source(name, s)
        total, anchor, epochs = self.size()
        if (total is None) == (anchor is None):
            raise ValueError("mixture: set either mixture.total_tokens or mixture.anchor with "
                             "mixture.anchor_epochs (the mixture's size), not both")
        if total is not None and total <= 0:
            raise ValueError(f"mixture.total_tokens={total}: must be positive")
        if anchor is not None:
            if anchor not in sources:
                raise ValueError(f"mixture.anchor={anchor!r} is not one of mixture.sources ({', '.join(sources)})")
            if epochs is None or not epochs > 0:
                raise ValueError(f"mixture.anchor_epochs={epochs}: must be positive when mixture.anchor is set")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"mixture.tolerance={self.tolerance}: must be in (0, 1)")


def _check_source(name: str, s: MixtureSourceConfig, key: str | None = None) -> None:
    """A source's values, named by its key (a source does not know its own name)."""
    key = key or f"mixture.sources.{name}"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"{key}: a source name may hold letters, digits, '_' and '-' only")
    if s.kind not in SOURCE_KINDS:
        raise ValueError(f"{key}.kind={s.kind!r}: must be one of {', '.join(SOURCE_KINDS)}")
    if s.split not in TEXT_SPLITS:
        raise ValueError(f"{key}.split={s.split!r}: must be one of {', '.join(TEXT_SPLITS)}")
    if not s.weight > 0:
        raise ValueError(f"{key}.weight={s.weight}: must be positive")
    if s.chunk_chars <= 0:
        raise ValueError(f"{key}.chunk_chars={s.chunk_chars}: must be positive")
    if s.kind == "crawl" and s.paths:
        raise ValueError(f"{key}.paths: a crawl source is this job's dedup output, it takes no paths")
    if s.kind != "crawl" and not glob_files(s.paths):
        raise FileNotFoundError(f"{key}.paths={list(s.paths)}: no file matches")


@dataclass
class EvalSetConfig:
    # An evaluation set, read as a mixture source of the same kind is (dataprep/mixture.py): each
    # record (jsonl, parquet) or part of a text file (split) is one example.
    kind: str = "jsonl"
    paths: List[str] = field(default_factory=list)
    split: str = "file"
    chunk_chars: int = 20_000
    text_field: str = "text"
    id_field: str = "id"
    # A token standing for a word the set removed (WikiText: "<unk>"): no n-gram spans it.
    placeholder: Optional[str] = None

    def as_source(self) -> MixtureSourceConfig:
        """The same files, as mixture.read_source_file reads them."""
        return MixtureSourceConfig(kind=self.kind, paths=list(self.paths), split=self.split,
                                   chunk_chars=self.chunk_chars, text_field=self.text_field, id_field=self.id_field)


@dataclass
class DecontamConfig:
    # GPT-3 appendix C: a training document (of every mixture source) sharing an ngram-word n-gram
    # of normalized words with an example of an evaluation set is dropped (mode drop: reason
    # "contaminated") or kept with the sets named in its `contamination` column (mode mark).
    enabled: bool = True
    mode: str = "drop"
    ngram: int = 13
    # Name -> evaluation set (conf/dataprep.yaml: LAMBADA and WikiText-2's test split). Empty:
    # nothing to decontaminate against.
    sets: Dict[str, EvalSetConfig] = field(default_factory=dict)
    # stats.json names up to this many contaminated documents and hit examples per set.
    example_ids: int = 10

    def __post_init__(self) -> None:
        if self.enabled:
            self._check()

    def _check(self) -> None:
        if self.mode not in DECONTAM_MODES:
            raise ValueError(f"decontam.mode={self.mode!r}: must be one of {', '.join(DECONTAM_MODES)}")
        if self.ngram < 1:
            raise ValueError(f"decontam.ngram={self.ngram}: must be at least 1")
        for name, s in self.sets.items():
            if s.kind == "crawl":
                raise ValueError(f"decontam.sets.{name}.kind: an evaluation set is read from files (text, jsonl, parquet)")
            _check_source(name, s.as_source(), key=f"decontam.sets.{name}")


@dataclass
class RayConfig:
    # None: RAY_ADDRESS when set, else a local Ray started for this job.
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    object_store_memory: Optional[int] = 268_435_456
    # Submit this job to the Ray cluster (address, else RAY_ADDRESS) as a Ray Job and follow it;
    # needs the cluster's dashboard (ray[default]), e.g. address=http://head:8265.
    submit_job: bool = False


RERUN_MODES = ("auto", "strict")  # dataprep/tasks.py: Reruns


def check_rerun(mode: str) -> None:
    if mode not in RERUN_MODES:
        raise ValueError(f"rerun={mode!r}: expected auto (redo what other settings or inputs shape) or strict "
                         f"(stop, naming them)")


@dataclass
class DataprepConfig:
    shared_data: str = "../shared/data"
    output_dir: str = "outputs/corpus"
    # A rerun over an output_dir made with other settings or inputs: auto redoes the stages they
    # shape and everything after them (one log line names the keys); strict stops, naming them.
    rerun: str = "auto"
    ingest: IngestConfig = field(default_factory=IngestConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        check_rerun(self.rerun)


def register() -> None:
    ConfigStore.instance().store(name="dataprep_schema", node=DataprepConfig)

"""Exact and fuzzy deduplication as Ray stages that exchange files, so that no process holds the
whole corpus: each task reads one input file or one partition, and every stage is resumable
(dataprep/tasks.py markers). The algorithms are in dataprep/dedup.py, the tasks in
dataprep/dedup_tasks.py and dataprep/dedup_components.py, the files they exchange in
dataprep/dedup_files.py; docs/dedup.md has the memory model and the measured figures.

  exact_hash    per input file: a digest of each normalized text, partitioned by digest
  exact_groups  per partition: documents of equal digest; all but one survivor are duplicates
  minhash       per input file: signatures of the documents left, and one (band key, doc)
                record per band, partitioned by key
  lsh           per partition: documents sharing a bucket become candidate pairs, verified
                (estimated Jaccard >= threshold) into edges
  components    connected components of the edges: per node partition, rounds of the
                large-star and small-star steps until the edges are one star per component
  clusters      per node partition: the stars are the clusters; one survivor each
  resolve       per exact partition: an exact duplicate whose survivor was dropped as a near
                duplicate names that one's survivor, so every duplicate_of names a kept document
  filter        per input file: the kept documents, and the dropped ones with their reason and
                the survivor's id in duplicate_of

work_dir/
  exact/<part>/<task>.parquet  digest, doc, id, quality           (by digest % partitions)
  exact/h0/<task>.parquet      each document's digest's first word, in file order
  exact/groups/<part>.parquet  exact duplicates: doc, reason, duplicate_of, survivor  (by doc)
  exact/resolved/<part>.parquet the same, duplicate_of naming a kept document      (by doc)
  signatures/<task>.parquet    doc, id, quality, h0, minhash        (by doc, small row groups)
  bands/<part>/<task>.parquet  key, doc                              (by key % partitions)
  edges/<part>.parquet         a, b: the pairs that became edges
  components/<step>/<task>/<node part>.parquet
                               node, nbr: a step's edges, for the next step (by fmix64(node) % P')
  clusters/<node part>.parquet near duplicates: doc, reason, duplicate_of             (by doc)
  clusters/by_exact/<node part>/<part>.parquet  the same, by the exact partition of their text
  .../_done/<task>.json        completion markers with each task's statistics and fingerprint:
                               the dedup settings, the documents' upstream digests, the
                               partitions (a rerun redoes what they would make otherwise)

A document is known everywhere by its number doc = input file index << 32 | row, 8 bytes;
its id and quality are looked up (by row group) only where a survivor must be chosen.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Iterable, Mapping

from dataprep import dedup
from dataprep.config import DedupConfig
from dataprep.dedup_components import connected_components
from dataprep.dedup_files import DedupLayout, write_buffer_bytes
from dataprep.dedup_tasks import (candidates_task, clusters_task, exact_groups_task, exact_hash_task, filter_task,
                                  resolve_task, signature_task)
from dataprep.documents import open_parquet
from dataprep.fingerprint import Fingerprint, config_items, file_identity
from dataprep.stats import merge
from dataprep.tasks import Reruns, TaskRunner

log = logging.getLogger("dataprep")

# Peak bytes of a partition task per record, measured (bench/bench_dedup.py): an lsh record is
# key + doc (16), an argsort index and one reordered copy (16), and what reading Parquet leaves
# in the allocator; an exact record is two digest words, doc, quality and the id string plus a
# sort's copy.
BAND_RECORD_BYTES = 48
EXACT_RECORD_BYTES = 160
# Peak bytes of a connected-components step task per edge of its partition, measured
# (bench/bench_dedup.py): a large-star task holds each edge from both ends (two 16-byte records,
# sorted: 46 bytes a record), a small-star task once, but writes up to four records for it.
COMPONENT_EDGE_BYTES = 128
# Settings that say how the work is split, not what it decides (the partitions they give are in
# the work's fingerprints all the same: the files are laid out by them).
WORK_ONLY = ("memory_budget_mb", "partitions")


def decisions_fingerprint(cfg: DedupConfig, upstream: Mapping[str, str]) -> Fingerprint:
    """What shapes dedup's decisions: every dedup.* setting but the memory budget and partition
    count (they only say how the work is split), and the documents (`upstream`: the digests of what
    made them)."""
    return Fingerprint(config_items("dedup", cfg, [k for k in asdict(cfg) if k not in WORK_ONLY]), upstream=upstream)


def add_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Size -> count tables summed, by increasing size."""
    total: Counter = Counter()
    for p in parts:
        total.update(p)
    return {k: total[k] for k in sorted(total, key=int)}


class Deduplicator:
    """Exact, then fuzzy deduplication of Parquet document files (columns id, text, and
    optionally cfg.quality_column), run as Ray stages over files in work_dir."""

    def __init__(self, cfg: DedupConfig, work_dir: str | Path, runner: type[TaskRunner] = TaskRunner,
                 reruns: Reruns | None = None):
        """runner runs each stage's tasks (a TaskRunner, or a subclass that also records them);
        reruns says what to do with finished tasks made otherwise (dataprep/tasks.py). The settings
        were checked when cfg was made (DedupConfig.__post_init__)."""
        self.cfg, self.runner, self.reruns = cfg, runner, reruns or Reruns()
        self.work = Path(work_dir)
        self.bands, self.rows = ((cfg.bands, cfg.rows) if cfg.bands is not None else
                                 dedup.lsh_params(cfg.threshold, cfg.num_perm, (cfg.fp_weight, cfg.fn_weight)))

    def layout(self, doc_paths: list[str]) -> DedupLayout:
        """Partitions so that a partition task's records fit memory_budget_mb."""
        docs = sum(open_parquet(p).metadata.num_rows for p in doc_paths)
        per_doc = max(self.bands * BAND_RECORD_BYTES, EXACT_RECORD_BYTES)
        partitions = self.cfg.partitions or max(1, math.ceil(docs * per_doc / (self.cfg.memory_budget_mb * 2**20)))
        return DedupLayout(docs=docs, partitions=partitions, bands=self.bands, rows=self.rows)

    def run(self, docs: dict[str, str], kept: dict[str, str], dropped: dict[str, str],
            upstream: Mapping[str, str] | None = None) -> dict:
        """Deduplicate the files docs[task] into kept[task] and dropped[task]; returns the stats.
        upstream: digests of what made the documents (dataprep/fingerprint.py); None: the files'
        identities stand for them. A task's marker holds these, the settings and the partitions,
        so a rerun redoes what other settings, documents or partitions would make otherwise
        (instead of mixing the files of two runs in work_dir)."""
        cfg, w = self.cfg, self.work
        names = list(docs)
        layout = self.layout([docs[n] for n in names])
        if upstream is None:
            upstream = {f"file {n}": Fingerprint(inputs={"file": file_identity(docs[n])}).digest for n in names}
        work_fp = decisions_fingerprint(cfg, upstream).plus({"dedup.plan.partitions": layout.partitions})
        parts = [f"{p:05d}" for p in range(layout.partitions)]
        log.info("dedup: %d documents in %d files, %d partitions, LSH %d bands x %d rows",
                 layout.docs, len(names), layout.partitions, layout.bands, layout.rows)
        path = lambda *p: str(w.joinpath(*p))
        results: dict[str, dict[str, dict]] = {}
        wall: dict[str, float] = {}

        def stage(name: str, stage_dir: Path, fn, tasks: dict[str, tuple], timed_as: str | None = None,
                  fingerprint: Fingerprint = work_fp) -> dict[str, dict]:
            t0 = time.perf_counter()
            results[name] = self.runner(name, stage_dir, self.reruns).run(fn, tasks, fingerprint)
            wall[timed_as or name] = round(wall.get(timed_as or name, 0.0) + time.perf_counter() - t0, 3)
            return results[name]

        decision_paths: list[str] = []
        exact: dict[str, dict] = {}
        near: dict = {}
        if cfg.exact:
            stage("exact_hash", w / "exact", exact_hash_task, {
                n: (docs[n], i, [path("exact", p, f"{n}.parquet") for p in parts], path("exact", "h0", f"{n}.parquet"),
                    cfg.quality_column, write_buffer_bytes(cfg))
                for i, n in enumerate(names)})
            groups = [path("exact", "groups", f"{p}.parquet") for p in parts]
            exact = stage("exact_groups", w / "exact" / "groups", exact_groups_task, {
                p: ([path("exact", p, f"{n}.parquet") for n in names], out) for p, out in zip(parts, groups)})
            decision_paths += groups
        if cfg.fuzzy:
            sig_paths = [path("signatures", f"{n}.parquet") for n in names]
            stage("minhash", w / "signatures", signature_task, {
                n: (docs[n], i, list(decision_paths), path("exact", "h0", f"{n}.parquet") if cfg.exact else None, sig_paths[i],
                    [path("bands", p, f"{n}.parquet") for p in parts], cfg, layout)
                for i, n in enumerate(names)})
            edges = [path("edges", f"{p}.parquet") for p in parts]
            lsh = stage("lsh", w / "edges", candidates_task, {
                p: ([path("bands", p, f"{n}.parquet") for n in names], sig_paths, out, cfg)
                for p, out in zip(parts, edges)})
            node_parts = self.component_partitions(sum(r["verified_pairs"] for r in lsh.values()))
            components = partial(stage, timed_as="components",
                                 fingerprint=work_fp.plus({"dedup.plan.component_partitions": node_parts}))
            near = connected_components(dict(zip(parts, edges)), w / "components", node_parts, components)
            clusters = [path("clusters", f"{p}.parquet") for p in near["parts"]]
            # The near decisions again, by the exact partition of the dropped document's text.
            routed = lambda d: [path("clusters", "by_exact", d, f"{p}.parquet") for p in parts] if cfg.exact else []
            found = stage("clusters", w / "clusters", clusters_task, {
                d: (near["last_step"](d), sig_paths, out, routed(d)) for d, out in zip(near["parts"], clusters)}).values()
            near.update(near_duplicates=sum(r["near_duplicates"] for r in found),
                        clusters=sum(r["clusters"] for r in found),
                        largest_cluster=max(r["largest_cluster"] for r in found),
                        cluster_sizes=add_counts(r.get("cluster_sizes", {}) for r in found))
            if cfg.exact:  # exact duplicates of a near duplicate name its survivor
                resolved = [path("exact", "resolved", f"{p}.parquet") for p in parts]
                handed = stage("resolve", w / "exact" / "resolved", resolve_task, {
                    p: (g, [path("clusters", "by_exact", d, f"{p}.parquet") for d in near["parts"]], out)
                    for p, g, out in zip(parts, groups, resolved)})
                near["handed_on"] = sum(r["handed_on"] for r in handed.values())
                decision_paths = resolved
            decision_paths += clusters
        filtered = stage("filter", w, filter_task, {
            n: (docs[n], i, list(decision_paths), kept[n], dropped[n]) for i, n in enumerate(names)})

        s = merge(filtered[n] for n in names)
        s["exact_duplicates"] = sum(r["exact_duplicates"] for r in exact.values())
        # How many groups of exact duplicates, and clusters of near ones, have each size (documents).
        s["exact_group_sizes"] = add_counts(r.get("group_sizes", {}) for r in exact.values())
        s["cluster_sizes"] = near.get("cluster_sizes", {})
        # exact duplicates whose exact survivor was dropped as a near duplicate: they name its survivor
        s["exact_duplicates_of_near_duplicates"] = near.get("handed_on", 0)
        s["near_duplicates"] = near.get("near_duplicates", 0)
        s["clusters"] = near.get("clusters", 0)
        s["largest_cluster"] = near.get("largest_cluster", 0)
        if cfg.fuzzy:
            # Summed over lsh partitions: a pair sharing buckets in k partitions counts k times.
            s["candidate_pairs"] = sum(r["candidate_pairs"] for r in lsh.values())
            s["verified_pairs"] = sum(r["verified_pairs"] for r in lsh.values())
            s["edges"] = near["edges"]
            s["component_partitions"], s["component_rounds"] = len(near["parts"]), near["rounds"]
        s.update(partitions=layout.partitions, bands=layout.bands, rows=layout.rows, stage_wall_seconds=wall)
        # Like the other stages: seconds is the tasks' time summed (this run's and earlier runs').
        s["seconds"] = round(sum(r["seconds"] for stage_results in results.values() for r in stage_results.values()), 3)
        log.info("dedup: %d in, %d exact and %d near duplicates in %d clusters (largest %d), %d out",
                 s["docs_in"], s["exact_duplicates"], s["near_duplicates"], s["clusters"],
                 s["largest_cluster"], s["docs_out"])
        return s

    def component_partitions(self, edges: int) -> int:
        """Partitions of the connected-components steps, so that a task's edges fit
        memory_budget_mb; or exactly dedup.partitions."""
        return self.cfg.partitions or max(1, math.ceil(edges * COMPONENT_EDGE_BYTES / (self.cfg.memory_budget_mb * 2**20)))

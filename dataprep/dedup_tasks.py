"""The dedup stages' tasks, run in Ray workers: each reads one input file or one partition and
writes files for the next stage (dataprep/dedup_stages.py runs them; the algorithms are in
dataprep/dedup.py, the connected-components steps in dataprep/dedup_components.py)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataprep import dedup
from dataprep.config import DedupConfig
from dataprep.dedup_files import (BAND_SCHEMA, DECISION_ROW_GROUP, DECISION_SCHEMA, DOC_BATCH, EXACT_SCHEMA,
                                  READ_BATCH, SIG_ROW_GROUP, DedupLayout, PartitionedWriter, decision_table,
                                  decisions_for_file, doc_batches, doc_numbers, lookup, read_columns,
                                  signature_schema, signatures, write_buffer_bytes)
from dataprep.documents import TableWriter, open_parquet, write_table
from dataprep.stats import drop, stage_stats


def size_counts(sizes: np.ndarray) -> dict[str, int]:
    """How many groups (clusters) have each size: {"size": count}, for stats.json."""
    values, counts = np.unique(sizes, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def exact_hash_task(docs_path: str, file_index: int, outs: list[str], h0_out: str, quality_column: str | None,
                    buffer_bytes: int) -> dict:
    """Each document's digest record to outs[its partition]; the digests' first words, in the
    file's order, to h0_out (8 bytes a document: the signature task copies them)."""
    t0 = time.perf_counter()
    h0 = []
    with PartitionedWriter(outs, EXACT_SCHEMA, buffer_bytes) as out:
        for first, ids, quality, texts in doc_batches(docs_path, quality_column):
            digests = dedup.text_digests(texts)
            out.write(pa.table({"h0": digests[:, 0], "h1": digests[:, 1],
                                "doc": doc_numbers(file_index, first, len(texts)), "id": ids, "quality": quality},
                               schema=EXACT_SCHEMA), (digests[:, 0] % len(outs)).astype(np.int64))
            h0.append(digests[:, 0].copy())
    h0 = np.concatenate(h0) if h0 else np.zeros(0, dtype=np.uint64)
    write_table(pa.table({"h0": h0}), h0_out, use_dictionary=False)
    return {"docs_in": len(h0), "seconds": time.perf_counter() - t0}


def exact_groups_task(in_paths: list[str], out: str) -> dict:
    t0 = time.perf_counter()
    table = pa.concat_tables(pq.read_table(p) for p in in_paths)
    order = np.lexsort((table["h1"].to_numpy(), table["h0"].to_numpy()))
    h0, h1 = table["h0"].to_numpy()[order], table["h1"].to_numpy()[order]
    same = (h0[1:] == h0[:-1]) & (h1[1:] == h1[:-1])
    grouped = np.zeros(len(order), dtype=bool)
    grouped[1:] = same
    grouped[:-1] |= same
    group = table.take(order[grouped])  # only documents with an equal twin
    survivor = dedup.choose_survivors({"h0": group["h0"].to_numpy(), "h1": group["h1"].to_numpy()},
                                      group["id"], group["quality"])
    dup = np.flatnonzero(survivor != np.arange(len(group)))
    doc = group["doc"].to_numpy()
    decisions = decision_table(doc[dup], "exact_duplicate", group["id"].take(survivor[dup]), doc[survivor[dup]])
    write_table(decisions.sort_by("doc"), out, DECISION_ROW_GROUP, use_dictionary=False)
    h0, h1 = h0[grouped], h1[grouped]
    first = np.ones(len(h0), dtype=bool)  # the first document of each group of equal digests
    first[1:] = (h0[1:] != h0[:-1]) | (h1[1:] != h1[:-1])
    return {"docs_in": len(table), "exact_duplicates": len(dup),
            "group_sizes": size_counts(np.diff(np.flatnonzero(first), append=len(h0))), "seconds": time.perf_counter() - t0}


def signature_task(docs_path: str, file_index: int, exact_paths: list[str], h0_path: str | None, sig_out: str,
                   band_outs: list[str], cfg: DedupConfig, layout: DedupLayout) -> dict:
    """h0_path: the exact stage's digest words of this file's documents (None: exact is off)."""
    t0 = time.perf_counter()
    signer = dedup.MinHasher(cfg.num_perm, cfg.seed, cfg.ngram, cfg.hashfunc)
    skip = decisions_for_file(exact_paths, file_index)["doc"].to_numpy()
    digest_words = pq.read_table(h0_path)["h0"].to_numpy() if h0_path else None
    schema = signature_schema(cfg.num_perm)
    n_in = n_signed = 0
    with TableWriter(sig_out, schema, SIG_ROW_GROUP, use_dictionary=False) as signatures, \
            PartitionedWriter(band_outs, BAND_SCHEMA, write_buffer_bytes(cfg)) as bands:
        for first, ids, quality, texts in doc_batches(docs_path, cfg.quality_column):
            n_in += len(texts)
            numbers = doc_numbers(file_index, first, len(texts))
            keep = np.flatnonzero(~np.isin(numbers, skip))
            sig = signer([texts[i] for i in keep])  # it bounds its temporaries (MinHasher.CHUNK)
            h0 = digest_words[first + keep] if digest_words is not None else pa.nulls(len(keep), pa.uint64())
            signatures.write(pa.table({
                "doc": numbers[keep], "id": ids.take(keep), "quality": quality.take(keep), "h0": h0,
                "minhash": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), cfg.num_perm),
            }, schema=schema))
            keys = dedup.band_keys(sig, layout.bands, layout.rows).ravel()  # document-major
            bands.write(pa.table({"key": keys, "doc": np.repeat(numbers[keep], layout.bands)}, schema=BAND_SCHEMA),
                        (keys % np.uint64(layout.partitions)).astype(np.int64))
            n_signed += len(keep)
    return {"docs_in": n_in, "signed": n_signed, "seconds": time.perf_counter() - t0}


def _verified(pairs: np.ndarray, sig_paths: list[str], cfg: DedupConfig) -> np.ndarray:
    """For each pair, whether its signatures estimate Jaccard >= threshold. The signatures of a
    chunk of pairs are read together (each row group once); a chunk's signatures (2 documents a
    pair, 4 x num_perm bytes each) take at most half the memory budget, the other half being
    left to what reading them costs."""
    per_chunk = max(READ_BATCH, int(cfg.memory_budget_mb * 2**20) // (4 * 4 * cfg.num_perm))
    keep = np.empty(len(pairs), dtype=bool)
    for i in range(0, len(pairs), per_chunk):
        chunk = pairs[i:i + per_chunk]
        docs = np.unique(chunk)
        sig = signatures(sig_paths, docs, cfg.num_perm)
        a, b = np.searchsorted(docs, chunk[:, 0]), np.searchsorted(docs, chunk[:, 1])
        for j in range(0, len(chunk), READ_BATCH):  # the compared rows' copies stay small
            keep[i + j:i + j + READ_BATCH] = dedup.estimated_jaccard(
                sig[a[j:j + READ_BATCH]], sig[b[j:j + READ_BATCH]]) >= cfg.threshold
    return keep


def candidates_task(band_paths: list[str], sig_paths: list[str], out: str, cfg: DedupConfig) -> dict:
    t0 = time.perf_counter()
    keys, docs = read_columns(band_paths, ("key", "doc"))
    n = len(keys)
    pairs = dedup.bucket_pairs(keys, docs)
    del keys, docs
    candidates = len(pairs)
    if cfg.verify and candidates:
        pairs = pairs[_verified(pairs, sig_paths, cfg)]
    write_table(pa.table({"a": pairs[:, 0], "b": pairs[:, 1]}), out, use_dictionary=False)
    return {"records": n, "candidate_pairs": candidates, "verified_pairs": len(pairs),
            "seconds": time.perf_counter() - t0}


def clusters_task(in_paths: list[str], sig_paths: list[str], out: str, exact_outs: list[str]) -> dict:
    """After the last step: the stars of this partition's centres (a component's smallest node,
    the end of its star's edges that is smaller) are the clusters; one survivor each. The
    decisions go to `out` and, when exact dedup ran, also to exact_outs[their exact partition]
    (resolve_task: an exact survivor dropped here hands its survivor to its exact duplicates)."""
    t0 = time.perf_counter()
    node, nbr = read_columns(in_paths, ("node", "nbr"))
    centre = node < nbr
    member, label = nbr[centre], node[centre]  # each member is in one star: the edges are stars
    del node, nbr, centre
    centres, leaves = np.unique(label, return_counts=True)
    nodes, labels = np.concatenate([centres, member]), np.concatenate([centres, label])
    order = np.argsort(nodes)
    nodes, labels = nodes[order], labels[order]
    decisions, h0 = DECISION_SCHEMA.empty_table(), np.zeros(0, dtype=np.uint64)
    if len(nodes):
        meta = lookup(sig_paths, nodes, ["id", "quality", "h0"])
        survivor = dedup.choose_survivors({"label": labels}, meta["id"], meta["quality"])
        dup = np.flatnonzero(survivor != np.arange(len(nodes)))
        decisions = decision_table(nodes[dup], "near_duplicate", meta["id"].take(survivor[dup]))  # nodes are sorted
        h0 = meta["h0"].to_numpy(zero_copy_only=False)[dup] if exact_outs else h0
    write_table(decisions, out, DECISION_ROW_GROUP, use_dictionary=False)
    if exact_outs:
        with PartitionedWriter(exact_outs, DECISION_SCHEMA) as routed:
            routed.write(decisions, (h0 % np.uint64(len(exact_outs))).astype(np.int64))
    return {"docs_in": len(nodes), "near_duplicates": len(decisions), "clusters": len(centres),
            "largest_cluster": int(leaves.max(initial=-1)) + 1, "cluster_sizes": size_counts(leaves + 1),
            "seconds": time.perf_counter() - t0}


def resolve_task(groups_path: str, near_paths: list[str], out: str) -> dict:
    """One exact partition's decisions, each naming a kept document: an exact duplicate whose
    survivor was then dropped as a near duplicate names that one's survivor instead (a near
    survivor is never dropped, and exact duplicates never reach the near stages, so one step
    ends every chain). near_paths: the near decisions about this partition's documents."""
    t0 = time.perf_counter()
    exact = pq.read_table(groups_path)
    near = pa.concat_tables([pq.read_table(p) for p in near_paths] or [DECISION_SCHEMA.empty_table()]).sort_by("doc")
    near_docs, survivors = near["doc"].to_numpy(), exact["survivor"].to_numpy()
    duplicate_of = exact["duplicate_of"].combine_chunks()
    moved = np.zeros(len(exact), dtype=bool)
    if len(near_docs):
        at = np.minimum(np.searchsorted(near_docs, survivors), len(near_docs) - 1)
        moved = near_docs[at] == survivors
        handed_on = near["duplicate_of"].combine_chunks().take(pa.array(at))
        duplicate_of = pc.if_else(pa.array(moved), handed_on, duplicate_of)
    resolved = pa.table({"doc": exact["doc"], "reason": exact["reason"], "duplicate_of": duplicate_of},
                        schema=DECISION_SCHEMA)
    write_table(resolved, out, DECISION_ROW_GROUP, use_dictionary=False)
    return {"docs_in": len(exact), "handed_on": int(moved.sum()), "seconds": time.perf_counter() - t0}


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.schema.names:
        return table.set_column(table.schema.get_field_index(name), pa.field(name, pa.string()), values)
    return table.append_column(pa.field(name, pa.string()), values)


def filter_task(docs_path: str, file_index: int, decision_paths: list[str], kept_out: str, dropped_out: str) -> dict:
    """Split one input file into kept and dropped documents, every column kept as it was; a batch
    of documents at a time."""
    t0 = time.perf_counter()
    decisions = decisions_for_file(decision_paths, file_index)
    rows = (decisions["doc"].to_numpy() & np.uint64(0xFFFFFFFF)).astype(np.int64)  # sorted
    pf = open_parquet(docs_path)
    s = stage_stats()
    for reason in decisions["reason"].to_pylist():
        drop(s, reason)
    dropped_schema = _with_column(_with_column(pf.schema_arrow.empty_table(), "drop_reason", pa.array([], pa.string())),
                                  "duplicate_of", pa.array([], pa.string())).schema
    first = 0
    with TableWriter(kept_out, pf.schema_arrow, use_dictionary=False) as kept, \
            TableWriter(dropped_out, dropped_schema, use_dictionary=False) as dropped:
        for batch in pf.iter_batches(batch_size=DOC_BATCH):
            table = pa.Table.from_batches([batch], pf.schema_arrow)
            lo, hi = np.searchsorted(rows, [first, first + len(table)])
            here = rows[lo:hi] - first
            mask = np.zeros(len(table), dtype=bool)
            mask[here] = True
            kept_table = table.filter(pa.array(~mask))
            gone = _with_column(table.take(here), "drop_reason", decisions["reason"].slice(lo, hi - lo))
            dropped.write(_with_column(gone, "duplicate_of", decisions["duplicate_of"].slice(lo, hi - lo)))
            kept.write(kept_table)
            s["bytes_in"] += int(pc.sum(pc.binary_length(table["text"])).as_py() or 0)
            s["bytes_out"] += int(pc.sum(pc.binary_length(kept_table["text"])).as_py() or 0)
            first += len(table)
    s["docs_in"], s["docs_out"] = first, kept.rows
    s["seconds"] = time.perf_counter() - t0
    return s

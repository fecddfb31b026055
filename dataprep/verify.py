"""Check a shard set against its manifest, and find where a training sample came from.

    python -m dataprep.verify outputs/corpus/manifest.json

checks, for every shard in the manifest, training and validation: that its .bin, .idx and
.docs.parquet exist; the .bin's size against the manifest's token count (truncated or grown);
both sha256 checksums (altered); the index's consistency (IndexedShard: header, sizes, pointers,
document index; plus contiguous pointers, every sequence ending in the end-of-document id, the
manifest's counts); the lineage file against the index; the tokenizer's checksum; the mixture:
tokens per source counted from the lineage files equal the manifest's, achieved weights are
those counts' shares and lie within the tolerance of the targets unless the manifest notes why;
and the validation shards: each source's hold its documents and tokens, of that source only,
and no held-out document is in a training shard. It prints every problem found and exits 1 if
there is any, else prints a summary and exits 0.

`lineage(manifest, offset, length)` names the documents (source, id, url) behind tokens
[offset, offset + length) of the training token stream, the shards in manifest order (as
pretrain/data.py's TokenStream reads them); `source=` one source's validation stream instead. A
training sample of pretrain/data.py's PackedSamples is
`lineage(manifest, samples.window(i) * seq_len, seq_len + 1)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dataprep.shards import IndexedShard, sha256_file, shard_lineage, shard_prefix, stream_shards


def _load(manifest) -> tuple[dict, Path]:
    path = Path(manifest)
    return json.loads(path.read_text()), path.parent


def _check_shard(root: Path, entry: dict, manifest: dict, per_source: Counter, held_out: set | None = None,
                 ids: set | None = None) -> list[str]:
    """The problems of one shard; counts its tokens per mixture source into `per_source`, its
    (source, id) pairs into `ids` when given, and reports the documents of `held_out` it holds."""
    name = entry["name"]
    prefix = shard_prefix(root, entry)
    problems = []
    missing = [entry[k] for k in ("bin", "idx") if not (root / entry[k]).is_file()]
    if missing:
        return [f"{name}: missing {', '.join(missing)}"]
    itemsize = np.dtype(manifest["dtype"]).itemsize
    size, want = (root / entry["bin"]).stat().st_size, entry["tokens"] * itemsize
    if size != want:
        problems.append(f"{name}: {entry['bin']} {'truncated' if size < want else 'grown'}: "
                        f"{size} bytes, the manifest's {entry['tokens']} tokens need {want}")
    elif sha256_file(root / entry["bin"]) != entry["bin_sha256"]:
        problems.append(f"{name}: {entry['bin']} altered: sha256 differs from the manifest's")
    if sha256_file(root / entry["idx"]) != entry["idx_sha256"]:
        problems.append(f"{name}: {entry['idx']} altered: sha256 differs from the manifest's")
    try:
        shard = IndexedShard(prefix)
    except (ValueError, OSError) as e:
        return problems + [f"{name}: inconsistent index: {e}"]
    if shard.dtype != np.dtype(manifest["dtype"]):
        problems.append(f"{name}: dtype {shard.dtype}, the manifest says {manifest['dtype']}")
    if len(shard) != entry["documents"] or shard.num_tokens != entry["tokens"]:
        problems.append(f"{name}: index holds {len(shard)} documents, {shard.num_tokens} tokens; "
                        f"the manifest says {entry['documents']}, {entry['tokens']}")
    if len(shard):
        starts = np.concatenate([[0], np.cumsum(shard.sizes[:-1], dtype=np.int64)])
        if not np.array_equal(shard.pointers, starts * shard.dtype.itemsize):
            problems.append(f"{name}: inconsistent index: sequence pointers are not contiguous")
        elif shard.sizes.min() < 1 or np.any(shard.tokens[starts + shard.sizes - 1] != manifest["tokenizer"]["eod_id"]):
            problems.append(f"{name}: a sequence does not end in the end-of-document id")
    docs = shard_lineage(root, entry)
    if not docs.is_file():
        return problems + [f"{name}: missing {docs.name}"]
    rows = pq.read_table(docs, columns=["tokens", "mixture_source", "id"])
    if rows.num_rows != len(shard) or not np.array_equal(rows.column("tokens").to_numpy(), shard.sizes):
        problems.append(f"{name}: {docs.name} does not match the index ({rows.num_rows} rows, "
                        f"{len(shard)} sequences)")
    sources, doc_ids = rows.column("mixture_source").to_pylist(), rows.column("id").to_pylist()
    for source, n in zip(sources, rows.column("tokens").to_pylist()):
        per_source[source] += n
    if ids is not None:
        ids.update(zip(sources, doc_ids))
    if held_out:
        leaked = sum(pair in held_out for pair in zip(sources, doc_ids))
        if leaked:
            problems.append(f"{name}: holds {leaked} document(s) held out for validation")
    return problems


def _check_validation(root: Path, manifest: dict) -> tuple[list[str], set]:
    """The problems of the validation shards, and the (source, id) of every held-out document."""
    problems, held = [], set()
    for source, entry in manifest.get("validation", {}).get("sources", {}).items():
        counted: Counter = Counter()
        for shard in entry["shards"]:
            problems += _check_shard(root, shard, manifest, counted, ids=held)
        docs, tokens = (sum(s[k] for s in entry["shards"]) for k in ("documents", "tokens"))
        if (docs, tokens) != (entry["documents"], entry["tokens"]):
            problems.append(f"validation {source}: its shards hold {docs} documents, {tokens} tokens; the "
                            f"manifest says {entry['documents']}, {entry['tokens']}")
        if set(counted) - {source}:
            problems.append(f"validation {source}: its shards hold documents of {sorted(set(counted) - {source})}")
    return problems, held


def verify(manifest) -> list[str]:
    """Every problem found in the shard set of `manifest` (a path); empty when all is well."""
    m, root = _load(manifest)
    problems = []
    tok = root / m["tokenizer"]["path"]
    if not tok.is_file():
        problems.append(f"tokenizer: missing {tok.name}")
    elif sha256_file(tok) != m["tokenizer"]["sha256"]:
        problems.append(f"tokenizer: {tok.name} altered: sha256 differs from the manifest's")
    validation_problems, held_out = _check_validation(root, m)
    per_source: Counter = Counter()
    for entry in m["shards"]:
        problems += _check_shard(root, entry, m, per_source, held_out)
    problems += validation_problems
    if sum(s["tokens"] for s in m["shards"]) != m["total_tokens"]:
        problems.append("manifest: shard token counts do not add up to total_tokens")
    if sum(s["documents"] for s in m["shards"]) != m["total_documents"]:
        problems.append("manifest: shard document counts do not add up to total_documents")
    sources = m.get("sources", {})
    total = m["total_tokens"]
    if sources and abs(sum(s["target_weight"] for s in sources.values()) - 1) > 1e-4:
        problems.append("weights: target weights do not sum to 1")
    tolerance = m.get("mixture", {}).get("tolerance", 0.01)
    for name, s in sources.items():
        if s["tokens"] != per_source.get(name, 0) and not any("missing" in p or "inconsistent" in p for p in problems):
            problems.append(f"weights: source {name}: the shards hold {per_source.get(name, 0)} tokens "
                            f"of it, the manifest says {s['tokens']}")
        achieved = s["tokens"] / total if total else 0.0
        if abs(achieved - s["achieved_weight"]) > 1e-5:
            problems.append(f"weights: source {name}: achieved_weight {s['achieved_weight']} but its "
                            f"tokens are {achieved:.6f} of the total")
        if abs(achieved - s["target_weight"]) > tolerance and "note" not in s:
            problems.append(f"weights: source {name}: achieved {achieved:.2%}, target "
                            f"{s['target_weight']:.2%}, beyond the tolerance {tolerance:.2%} and unexplained")
    unknown = set(per_source) - set(sources)
    if sources and unknown:
        problems.append(f"weights: the shards hold sources the manifest does not list: {sorted(unknown)}")
    return problems


def lineage(manifest, offset: int, length: int = 1, source: str | None = None) -> list[dict]:
    """The documents behind tokens [offset, offset + length) of the manifest's training token
    stream (or, with `source`, of that source's validation stream), in stream order: each its
    lineage row (mixture_source, id, url, source file, copy, tokens) with the shard's name and the
    document's start in the stream (`stream_offset`)."""
    m, root = _load(manifest)
    entries = stream_shards(m, source)
    sizes = [s["tokens"] for s in entries]
    bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    if length < 1 or not 0 <= offset or offset + length > bounds[-1]:
        raise IndexError(f"tokens [{offset}, {offset + length}) are not inside the stream's {bounds[-1]} tokens")
    end = offset + length
    out = []
    i = int(np.searchsorted(bounds, offset, side="right")) - 1
    while i < len(sizes) and bounds[i] < end:
        rows = pq.read_table(shard_lineage(root, entries[i])).to_pylist()
        for row in rows:
            start = int(bounds[i]) + row["offset"]
            if start < end and start + row["tokens"] > offset:
                out.append({"shard": entries[i]["name"], "stream_offset": start, **row})
        i += 1
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataprep.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", help="manifest.json of a shard set")
    args = parser.parse_args(argv)
    if not Path(args.manifest).is_file():
        print(f"no manifest at {args.manifest}", file=sys.stderr)
        return 2
    problems = verify(args.manifest)
    for p in problems:
        print(f"FAIL {p}")
    m, _ = _load(args.manifest)
    if problems:
        print(f"{len(problems)} problem(s) in {args.manifest}")
        return 1
    print(f"OK {len(m['shards'])} shards, {m['total_documents']} documents, {m['total_tokens']} tokens "
          f"({args.manifest})")
    for name, s in m.get("sources", {}).items():
        epochs = f", {s['achieved_epochs']:.3f} epochs" if "achieved_epochs" in s else ""
        print(f"  {name}: target {s['target_weight']:.2%}, achieved {s['achieved_weight']:.2%}{epochs}")
    held = m.get("validation")
    if held:
        print(f"  validation: {held['total_documents']} documents, {held['total_tokens']} tokens held out ("
              + ", ".join(f"{n} {v['documents']}" for n, v in held["sources"].items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())

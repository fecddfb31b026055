"""manifest.json, the one description of a shard set that tools and the trainer rely on: the
tokenizer, the token dtype, each mixture source's target and achieved weight, epochs, documents
and tokens, every shard with its counts and checksums, and the config that made it
(`python -m dataprep.verify` checks a shard set against it). Written here and nowhere else."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from tokenizers import Tokenizer

from dataprep.config import DataprepConfig
from dataprep.layout import CorpusLayout
from dataprep.mixture import MixturePlan
from dataprep.shards import sha256_file
from dataprep.stats import format_rows
from dataprep.tasks import write_json


def write_manifest(layout: CorpusLayout, cfg: DataprepConfig, tok: Tokenizer, dtype: np.dtype, mix: MixturePlan,
                   sources: dict[str, dict], shards: list[dict], shard_set: str, validation: dict | None) -> dict:
    """Write output_dir/manifest.json for the training `shards` (as ShardWriter lists them, their
    paths relative to output_dir), written with the tokenizer `tok` as the mixture `mix` orders;
    `sources`: each source's entry; `shard_set`: the folder of the set; `validation`: the held-out
    documents' section (None: none held out). The file is replaced in one rename. Returns it."""
    t, m = cfg.tokenizer, cfg.mixture
    _, anchor, epochs = m.size()
    manifest = {
        "format": "megatron-mmidx",
        "version": 1,
        "dtype": np.dtype(dtype).name,
        "tokenizer": {
            "path": layout.relative(layout.tokenizer),
            "sha256": sha256_file(layout.tokenizer),
            "vocab_size": tok.get_vocab_size(),
            "eod_token": t.eod_token,
            "eod_id": tok.token_to_id(t.eod_token),
        },
        # Documents are stored whole, each ending in eod_id; the trainer cuts the stream into
        # windows of its own sequence length, so the shards fit any.
        "sequence_length": None,
        "total_documents": sum(s["documents"] for s in shards),
        "total_tokens": sum(s["tokens"] for s in shards),
        "mixture": {
            "total_tokens_target": int(round(mix.total_target)),
            "anchor": anchor, "anchor_epochs": epochs, "seed": m.seed, "tolerance": m.tolerance,
            "order": "seeded shuffle of every document copy across sources",
        },
        "sources": sources,
        "shard_set": shard_set,
        "shards": shards,
        "config": asdict(cfg),
    }
    if validation is not None:
        manifest["validation"] = validation
    write_json(layout.manifest, manifest)
    return manifest


def mixture_table(manifest: dict) -> str:
    """The manifest's sources as a table: documents, tokens, epochs, target and achieved weights,
    and the documents and tokens held out for validation."""
    held = manifest.get("validation", {}).get("sources", {})
    rows = [("source", "docs", "tokens", "epochs", "target", "achieved", "val docs", "val tokens")]
    for name, s in manifest["sources"].items():
        v = held.get(name, {})
        rows.append((name, str(s["documents"]), str(s["tokens"]), f"{s['achieved_epochs']:.3f}",
                     f"{s['target_weight']:.2%}", f"{s['achieved_weight']:.2%}", str(v.get("documents", "-")),
                     str(v.get("tokens", "-"))))
    notes = [f"{name}: {s['note']}" for name, s in manifest["sources"].items() if "note" in s]
    notes += [f"{name} validation: {v['note']}" for name, v in held.items() if "note" in v]
    return "\n".join([format_rows(rows)] + notes)

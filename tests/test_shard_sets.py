"""Shard sets are replaced atomically: a run writes its set beside the one manifest.json names,
replaces the manifest, then removes the old set; killed at any of those steps, it leaves a set that
`python -m dataprep.verify` accepts. And writing a set holds no string per document."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import CORPUS_OVERRIDES, REPO
from dataprep import mixture
from dataprep.documents import write_table
from dataprep.layout import CorpusLayout
from dataprep.shards import ShardWriter
from dataprep.source_tokens import SourceTokens
from dataprep.stages import holdout as holdout_stage
from dataprep.stages import shards as shards_stage
from dataprep.stages.tokenize import TOKENS_SCHEMA, TokenizedFile
from dataprep.verify import verify
from pretrain.data import TokenStream

# The corpus job's stages in this process, without Ray: on a finished corpus every task is done,
# so only the shards stage works (Ray would only start for a task left to run).
STAGES = """
import sys
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from dataprep.__main__ import CONF_DIR
from dataprep.layout import CorpusLayout
from dataprep.pipeline import run_stages
from dataprep.stages import StageInputs
with initialize_config_dir(CONF_DIR, version_base=None):
    cfg = OmegaConf.to_object(compose("dataprep", overrides=sys.argv[1:]))
run_stages(CorpusLayout(cfg.output_dir), StageInputs.of(cfg))
"""
POINTS = range(1, 7)  # dataprep/stages/shards.py: kill_point


def _start(out, exit_at=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(shards_stage.EXIT_AT, None)
    if exit_at is not None:
        env[shards_stage.EXIT_AT] = str(exit_at)
    return subprocess.Popen([sys.executable, "-c", STAGES, f"output_dir={out}", *CORPUS_OVERRIDES], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc):
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def _content(path):
    """What a manifest's shards hold, wherever their set lives: names, sizes and checksums."""
    m = json.loads(path.read_text())
    entries = m["shards"] + [e for v in m["validation"]["sources"].values() for e in v["shards"]]
    return [(e["name"], e["tokens"], e["bin_sha256"], e["idx_sha256"]) for e in entries]


@pytest.mark.slow
def test_a_kill_at_any_step_leaves_a_set_verify_accepts(corpus, tmp_path):
    copies = {k: tmp_path / f"killed_at_{k}" for k in POINTS}
    for copy in copies.values():
        shutil.copytree(corpus, copy)
    before = json.loads((corpus / "manifest.json").read_text())
    old_set = before["shard_set"]
    runs = {k: _start(copy, exit_at=k) for k, copy in copies.items()}  # side by side: 2 cores, 6 runs
    for k, proc in runs.items():
        code, out = _finish(proc)
        assert code == 86, (k, out[-3000:])
        manifest = copies[k] / "manifest.json"
        assert verify(manifest) == [], k
        assert TokenStream(manifest).num_tokens == before["total_tokens"]  # data.manifest=... still trains
        named = json.loads(manifest.read_text())["shard_set"]
        assert (named == old_set) == (k < 5), k  # the manifest moves at step 5, never before
        assert _content(manifest) == _content(corpus / "manifest.json")
    # The next run ends with one set, the same content, whatever the killed run left.
    reruns = {k: _start(copies[k]) for k in (4, 6)}  # an unpublished set left; an old set half removed
    for k, proc in reruns.items():
        code, out = _finish(proc)
        assert code == 0, (k, out[-3000:])
        layout = CorpusLayout(copies[k])
        assert verify(layout.manifest) == [] and _content(layout.manifest) == _content(corpus / "manifest.json")
        assert [p.name for p in layout.shard_sets()] == [json.loads(layout.manifest.read_text())["shard_set"].split("/")[-1]]
        assert not list(layout.shard_sets()[0].glob("*.tmp")) and not layout.shard_files()


def _source(tmp_path, n_docs, url_chars=200):
    """A tokenized source of n_docs tiny documents with long ids and urls."""
    folder = tmp_path / "tokenize"
    with ShardWriter(folder, "task_00000", np.uint16, shard_tokens=1 << 40) as w:
        for i in range(n_docs):
            w.add_document(np.array([1 + i % 50, 2, 0]))
    n = np.arange(n_docs)
    write_table(pa.table({"id": [f"id-{i:012d}-{'x' * 40}" for i in n], "url": [f"https://example.org/{i}/{'p' * url_chars}" for i in n],
                          "source": ["file.jsonl.gz"] * n_docs, "tokens": np.full(n_docs, 3)}, schema=TOKENS_SCHEMA),
                folder / "task.parquet")
    return SourceTokens({"task": TokenizedFile(str(folder / "task_00000_00000"), str(folder / "task.parquet"))})


def test_writing_a_set_holds_numbers_not_strings_per_document(tmp_path):
    """30,000 documents with 500-character ids and urls, twice each, in one shard: their metadata
    and lineage rows held whole are ~45 MB of Python objects (the earlier writer's peak: 44 MiB); the
    writer holds a batch of lineage rows at a time."""
    import tracemalloc

    n = 30_000
    tracemalloc.start()
    src = _source(tmp_path, n, url_chars=400)
    split = holdout_stage.Split(src, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    src.write_metadata(tmp_path / "metadata")
    mix = mixture.plan({"web": src.lengths}, {"web": 1.0}, anchor="web", anchor_epochs=2.0)
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    written = shards_stage.write_training(tmp_path / "set", mix, {"web": split}, np.dtype("<u2"), 1 << 40)
    peak = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    assert written[0]["documents"] == 2 * n
    lineage = pq.read_table(tmp_path / "set" / "shard_00000.docs.parquet")
    assert lineage.num_rows == 2 * n and sorted(lineage.column("copy").to_pylist()) == [0] * n + [1] * n
    row = lineage.slice(123, 1).to_pylist()[0]
    doc = int(row["id"][3:15])
    assert row["url"] == f"https://example.org/{doc}/{'p' * 400}" and row["source"] == "file.jsonl.gz"
    assert peak < 12 * 2**20, f"{peak / 2**20:.1f} MiB"

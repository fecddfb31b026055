import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CCP_SHARED_DATA", REPO.parent / "shared" / "data"))


def run_module(module: str, *overrides: str, timeout: int = 600, check: bool = True,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module> <overrides>` from the repository root, capturing its output."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "CCP_SHARED_DATA": str(SHARED_DATA), **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {overrides} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


CORPUS_OVERRIDES = ("shards.shard_tokens=200000", "validation.seed=8")


def damaged_jsonl(shared_data, folder):
    """A real JSON-lines sample with a line cut short, a non-UTF-8 line and a JSON value that is no
    object planted among its documents; returns the path and the sample's own rows."""
    lines = gzip.decompress((shared_data / "text" / "dolma_cc_en_head-0091.jsonl.gz").read_bytes()).splitlines(keepends=True)
    rows = [json.loads(line) for line in lines]
    planted = lines[:3] + [lines[3][:40] + b"\n", b'{"id": "x", "text": "caf\xe9"}\n', b"[1, 2]\n"] + lines[3:]
    path = folder / "damaged.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(planted)))
    return path, rows


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "warc").is_dir():
        pytest.fail(f"sample data not found at {SHARED_DATA} (set CCP_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, shared_data) -> Path:
    """The corpus job run once on the sample WARCs; returns its output_dir. Validation seed 8 holds
    out one of two near-duplicate crawl pages that dedup keeps (tests/test_holdout.py)."""
    out = tmp_path_factory.mktemp("corpus")
    run_module("dataprep", f"output_dir={out}", *CORPUS_OVERRIDES)
    return out


@pytest.fixture(scope="session")
def micro_sweep(tmp_path_factory, corpus) -> Path:
    """A 3-size scaling sweep through `python -m launch -m`, a few steps each, one rank;
    returns the sweep folder (runs 0_scale_1, 1_scale_2, 2_scale_3)."""
    sweep = tmp_path_factory.mktemp("sweep")
    run_module("launch", "-m", "+experiment=scaling", "model=scale_1,scale_2,scale_3",
               f"data.manifest={corpus / 'manifest.json'}", f"hydra.sweep.dir={sweep}",
               "cluster.nproc=1", "train.max_steps=4", "train.micro_batch_size=4",
               "train.eval_every_steps=2", "train.eval_batches=1", "optim.warmup_steps=1")
    return sweep

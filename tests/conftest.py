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

"""Dedup on a simulated 2-node Ray cluster finds the same clusters as on one node."""

import pyarrow.parquet as pq
import pytest
import ray
from ray.cluster_utils import Cluster

from dataprep.config import DedupConfig
from test_dedup import run_dedup, small_corpus, snapshot


@pytest.mark.slow
def test_two_nodes_give_the_same_clusters_as_one(tmp_path):
    docs = small_corpus(tmp_path / "in", n_files=4, per_file=40)
    cfg = DedupConfig(partitions=4)
    # One CPU per node: with 4 tasks per stage, both nodes work.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        two = run_dedup(tmp_path / "two", docs, cfg)
        cluster.remove_node(worker)
        one = run_dedup(tmp_path / "one", docs, cfg)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert two["near_duplicates"] >= 12 and two["exact_duplicates"] >= 16
    assert {k: v for k, v in two.items() if k not in ("seconds", "stage_wall_seconds")} == \
           {k: v for k, v in one.items() if k not in ("seconds", "stage_wall_seconds")}
    # The same decisions, and every file byte for byte.
    assert snapshot(tmp_path / "two") == snapshot(tmp_path / "one")
    dropped = pq.read_table(tmp_path / "two" / "out" / "dropped" / "f0.parquet")
    assert set(dropped["drop_reason"].to_pylist()) <= {"exact_duplicate", "near_duplicate"}

"""Connected components of the near-duplicate edges, over node partitions (dataprep/dedup_stages.py
runs them after the lsh stage): the alternating large-star / small-star algorithm
(dedup.large_star, dedup.small_star), each step one stage whose task d reads the records
(node, nbr) of the nodes of partition d (fmix64(node) % partitions) and writes the new edges,
split by partition for the next step. No task holds more than one partition's records; the rounds
end when a large-star and the small-star after it change nothing, and the edges are then stars:
each component's smallest node joined to every other."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataprep import dedup
from dataprep.dedup_files import PartitionedWriter, read_columns
from dataprep.fingerprint import Fingerprint
from dataprep.shingling import fmix64
from dataprep.tasks import TaskRunner

log = logging.getLogger("dataprep")

# The alternating algorithm needs O(log^2 n) rounds for n nodes (Kiveris et al. 2014); far fewer
# in practice. More than this means a bug, not a big graph.
MAX_COMPONENT_ROUNDS = 100


def _write_records(node: np.ndarray, nbr: np.ndarray, outs: list[str]) -> None:
    """Records (node, nbr), each to the file of its node's partition."""
    table = pa.table({"node": node, "nbr": nbr})
    with PartitionedWriter(outs, table.schema) as out:
        out.write(table, (fmix64(node) % np.uint64(len(outs))).astype(np.int64))


def _both_ways(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([a, b]), np.concatenate([b, a])


def scatter_edges_task(edge_path: str, outs: list[str]) -> dict:
    """The first step: one lsh partition's edges, as records from both ends."""
    t0 = time.perf_counter()
    a, b = read_columns([edge_path], ("a", "b"))
    _write_records(*_both_ways(a, b), outs)
    return {"edges": len(a), "seconds": time.perf_counter() - t0}


STAR_STEPS = {"large-star": dedup.large_star, "small-star": dedup.small_star}


def star_task(step: str, in_paths: list[str], outs: list[str]) -> dict:
    """One large-star or small-star step over the records of one node partition."""
    t0 = time.perf_counter()
    node, nbr = read_columns(in_paths, ("node", "nbr"))
    records = len(node)
    v, m, changed = STAR_STEPS[step](node, nbr)
    del node, nbr
    # The small-star reads each edge from its larger end only, the large-star from both.
    _write_records(*((v, m) if step == "large-star" else _both_ways(v, m)), outs)
    # A large-star writes one edge for each distinct edge whose smaller end is in this partition:
    # summed over the partitions, the distinct edges it read.
    return {"records": records, "edges_out": len(v), "changed": changed, "seconds": time.perf_counter() - t0}


def connected_components(edges: dict[str, str], work: Path, partitions: int, stage=None) -> dict:
    """Runs the connected-components steps over edge files (columns a, b; task name -> path) in
    `partitions` node partitions, each step's files and markers under work/<step>/. stage(name,
    stage_dir, fn, tasks) runs a stage (default: a TaskRunner). Returns the partitions, the number
    of rounds, the number of distinct edges, and last_step(partition): the files of the final
    stars' records (node, nbr) of that partition's nodes, each star's edges from both ends."""
    made_as = Fingerprint({"partitions": partitions})
    stage = stage or (lambda name, stage_dir, fn, tasks: TaskRunner(name, stage_dir).run(fn, tasks, made_as))
    parts = [f"{p:05d}" for p in range(partitions)]
    step_dir = lambda k: Path(work) / f"{k:03d}"
    outs = lambda k, src: [str(step_dir(k) / src / f"{d}.parquet") for d in parts]
    ins = lambda k, sources, d: [str(step_dir(k) / src / f"{d}.parquet") for src in sources]
    stage("components: edges", step_dir(0), scatter_edges_task, {src: (path, outs(0, src)) for src, path in edges.items()})
    sources, k, distinct = list(edges), 0, 0
    for rnd in range(1, MAX_COMPONENT_ROUNDS + 1):
        changed = 0
        for step in STAR_STEPS:
            k += 1
            done = stage(f"components: round {rnd} {step}", step_dir(k), star_task,
                         {d: (step, ins(k - 1, sources, d), outs(k, d)) for d in parts})
            changed += sum(r["changed"] for r in done.values())
            sources = parts
            if k == 1:
                distinct = sum(r["edges_out"] for r in done.values())
        log.info("dedup: connected components, round %d: %d changes", rnd, changed)
        if not changed:
            return {"parts": parts, "rounds": rnd, "edges": distinct, "last_step": lambda d, k=k: ins(k, parts, d)}
    raise RuntimeError(f"connected components did not converge in {MAX_COMPONENT_ROUNDS} rounds")

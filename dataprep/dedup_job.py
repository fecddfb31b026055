"""`python -m dataprep.dedup_job input_dir=DIR output_dir=OUT [dedup.*=...]`: deduplicate an
existing corpus on its own, on local Ray or RAY_ADDRESS.

In: a folder of documents, JSON lines (.jsonl, .jsonl.gz, .json.gz) or Parquet, each with `id`
and `text` (other fields, e.g. `url` and `quality_score`, ride along).
Out:
  OUT/documents/<file>.parquet  the same documents, all fields, minus the duplicates
  OUT/dropped/<file>.parquet    the duplicates, with drop_reason and duplicate_of (survivor's id)
  OUT/kept_ids.txt              the kept ids, one a line, in input order
  OUT/stats.json                {"stages": {"input": JSON lines in, documents out, lines
                                dropped by reason (bad_json), "dedup": documents in, out, exact
                                and near duplicates, clusters, largest cluster, ...}}
  OUT/work/                     the stages' files and markers: a rerun resumes from them, and
                                redoes what other settings or input files make otherwise
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List

import hydra
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from dataprep.config import DedupConfig, RayConfig, check_rerun
from dataprep.dedup_stages import Deduplicator
from dataprep.documents import DOCUMENT_ROW_GROUP, TableWriter, open_parquet
from dataprep.fingerprint import Fingerprint, combine, file_identity
from dataprep.readers import JSONL_DROP_REASONS, list_inputs, read_jsonl, task_name
from dataprep.stats import merge
from dataprep.tasks import Reruns, TaskRunner, console_logging, ray_session, write_json

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
JSONL_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.json.gz")
log = logging.getLogger("dataprep")


@dataclass
class DedupJobConfig:
    input_dir: str = MISSING
    output_dir: str = "outputs/dedup"
    # Files of input_dir to read (fnmatch); each file is one task.
    patterns: List[str] = field(default_factory=lambda: [*JSONL_PATTERNS, "*.parquet"])
    dedup: DedupConfig = field(default_factory=DedupConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    # A rerun over work/ made from other settings or input files: auto redoes what they shape
    # (one log line names them), strict stops, naming them.
    rerun: str = "auto"

    def __post_init__(self) -> None:
        check_rerun(self.rerun)


def register() -> None:
    ConfigStore.instance().store(name="dedup_job_schema", node=DedupJobConfig)


def _jsonl_batches(path: str, dropped: dict[str, int] | None = None) -> Iterator[list]:
    """The lines of a JSON-lines file, parsed, DOCUMENT_ROW_GROUP at a time; bad lines are counted
    in `dropped` and logged (without `dropped`: a first pass, silent)."""
    rows = []
    for _, row in read_jsonl(path, dropped, quiet=dropped is None):
        rows.append(row)
        if len(rows) == DOCUMENT_ROW_GROUP:
            yield rows
            rows = []
    if rows:
        yield rows


def jsonl_schema(path: str) -> pa.Schema:
    """The schema of every line of a JSON-lines file: each field any line has (nested ones too),
    of the type its values share (integers and reals widen to reals; a field that is null
    everywhere stays null). Read batch by batch: memory stays that of one batch."""
    schemas = [pa.schema(list(pa.array(rows).type)) for rows in _jsonl_batches(path)]
    if not schemas:
        return pa.schema([("id", pa.string()), ("text", pa.string())])
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"{path}: a field's values differ in type between lines ({e})") from e


def jsonl_to_parquet_task(path: str, out: str) -> dict:
    """JSON lines -> Parquet, every field kept (fields missing from some lines become nulls); a
    line that is no document (not UTF-8, not JSON) is dropped and counted (bad_json).

    Two passes of DOCUMENT_ROW_GROUP lines each, so a file of any size costs the memory of one
    batch: the first finds the schema of all lines, the second writes each batch in it."""
    t0 = time.perf_counter()
    schema = jsonl_schema(path)
    _check_columns(path, schema)
    dropped = dict.fromkeys(JSONL_DROP_REASONS, 0)
    with TableWriter(out, schema, DOCUMENT_ROW_GROUP, use_dictionary=False) as writer:
        for rows in _jsonl_batches(path, dropped):
            writer.write(pa.Table.from_struct_array(pa.array(rows, type=pa.struct(list(schema)))))
    return {"docs_in": writer.rows + sum(dropped.values()), "docs_out": writer.rows, "dropped": dropped,
            "seconds": time.perf_counter() - t0}


def _check_columns(path: str, schema: pa.Schema) -> None:
    missing = [c for c in ("id", "text") if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: no field {', '.join(missing)} (fields: {schema.names})")


def run(cfg: DedupJobConfig) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.output_dir).resolve()
    files = [Path(p) for p in list_inputs(cfg.input_dir, cfg.patterns)]
    for p in files:
        if p.suffix == ".parquet":
            _check_columns(str(p), pq.read_schema(p))
    names = [task_name(p) for p in files]
    work = out / "work"
    reruns = Reruns(cfg.rerun)
    deduplicator = Deduplicator(cfg.dedup, work, reruns=reruns)
    made_from = {n: Fingerprint(inputs={"file": file_identity(p)}) for n, p in zip(names, files)}
    # Parquet is read in place; JSON lines are converted once, so later stages read columns fast.
    jsonl = {n: (str(p), str(work / "input" / f"{n}.parquet")) for n, p in zip(names, files) if p.suffix != ".parquet"}
    read = TaskRunner("input", work / "input", reruns).run(jsonl_to_parquet_task, jsonl, made_from)
    docs = {n: jsonl[n][1] if n in jsonl else str(p) for n, p in zip(names, files)}
    kept = {n: str(out / "documents" / f"{n}.parquet") for n in names}
    stats = deduplicator.run(docs, kept, {n: str(out / "dropped" / f"{n}.parquet") for n in names},
                             {"input": combine(made_from)})

    tmp = out / "kept_ids.txt.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for n in names:
            for batch in open_parquet(kept[n]).iter_batches(columns=["id"]):
                f.writelines(f"{i}\n" for i in pc.cast(batch.column(0), pa.string()).to_pylist())
    os.replace(tmp, out / "kept_ids.txt")
    # "input": the JSON-lines files' lines that were no documents (Parquet files are read as they are)
    summary = {"stages": {"input": merge(read.values()), "dedup": stats}, "input_files": [str(p) for p in files],
               "documents": stats["docs_out"], "seconds": round(time.perf_counter() - t0, 3)}
    write_json(out / "stats.json", summary)
    log.info("%d of %d documents kept: %s, %s", stats["docs_out"], stats["docs_in"], out / "documents",
             out / "kept_ids.txt")
    return summary


register()


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="dedup")
def main(cfg) -> None:
    console_logging()
    config: DedupJobConfig = OmegaConf.to_object(cfg)
    with ray_session(config.ray.address, config.ray.num_cpus, config.ray.object_store_memory):
        run(config)


if __name__ == "__main__":
    main()

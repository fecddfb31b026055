"""What made an output: the settings and inputs that shape it, kept in its completion marker so a
rerun can tell a finished task from one made otherwise (dataprep/tasks.py: Reruns).

A Fingerprint holds
  settings  the config keys that shape the output (dotted, as on the command line) and their values;
            keys that do not (Ray's CPUs, memory budgets, logging) are left out by the stage that
            builds it, so changing them redoes nothing
  inputs    the identity of each input file it reads: a local file's absolute path, size and
            modification time; a remote file's URL alone (asking each of 100,000 remote archives
            for its size and version would cost a request apiece on every rerun, and Common
            Crawl's files never change: give a changed remote file a new name). Not a content
            hash: that would read the whole crawl on every rerun; a local file rewritten with the
            same size inside its filesystem's mtime resolution goes unnoticed
  upstream  the digests of the outputs it is made from (an earlier stage's tasks, a classifier),
            so a change anywhere upstream reaches every output made from it

and its digest is a SHA-256 of all three. Each stage says what shapes its outputs in its
`fingerprints(inputs)` (dataprep/stages/).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping


def _json(value: Any) -> Any:
    """`value` as JSON gives it back (tuples become lists, int dict keys strings), so that a
    fingerprint compares equal to its own stored copy."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True)
class Fingerprint:
    settings: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    upstream: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("settings", "inputs", "upstream"):
            object.__setattr__(self, name, _json(dict(getattr(self, name))))

    @property
    def digest(self) -> str:
        body = json.dumps([self.settings, self.inputs, self.upstream], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def to_json(self) -> dict:
        return {"digest": self.digest, "settings": self.settings, "inputs": self.inputs, "upstream": self.upstream}

    def plus(self, settings: Mapping[str, Any]) -> "Fingerprint":
        """This fingerprint with more settings."""
        return Fingerprint({**self.settings, **settings}, self.inputs, self.upstream)

    def changes(self, before: Mapping[str, Any] | None) -> list[str]:
        """What differs from a stored fingerprint (to_json), one phrase each; the config keys that
        changed come first, each with its old and new value."""
        if not before:
            return ["made before completion markers recorded their settings"]
        out = []
        for kind, now in (("settings", self.settings), ("inputs", self.inputs), ("upstream", self.upstream)):
            then = before.get(kind, {})
            for key in sorted(now.keys() | then.keys()):
                if now.get(key) == then.get(key):
                    continue
                if kind == "settings":
                    out.append(f"{key}: {_shown(then, key)} -> {_shown(now, key)}")
                elif kind == "inputs":
                    out.append(f"{key} (input {'added' if key not in then else 'gone' if key not in now else 'changed'})")
                else:
                    out.append(f"{key} (redone upstream)")
        return out


def _shown(values: Mapping[str, Any], key: str) -> str:
    return json.dumps(values[key]) if key in values else "(unset)"


def combine(parts: Mapping[str, Fingerprint]) -> str:
    """One digest for many outputs (every task of a stage): it changes when any of them does."""
    body = json.dumps({name: fp.digest for name, fp in parts.items()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def config_items(prefix: str, config: Any, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The dotted config keys under `prefix` of a config dataclass (or dict) and their values,
    nested ones flattened (filters.c4.min_sentences, mixture.sources.books.weight); only `keys`
    of it when given."""
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    out: dict[str, Any] = {}
    for key in values if keys is None else keys:
        value = values[key]
        if isinstance(value, dict) and value:
            out.update(config_items(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def file_identity(path: str | Path) -> dict[str, Any]:
    """Which file `path` is, as of now: its absolute path, size and modification time (local), or
    its URL (remote: see the module doc)."""
    local = str(path).removeprefix("file://")
    if "://" in local:
        return {"path": str(path)}
    st = os.stat(local)
    return {"path": str(Path(local).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def files_identity(paths: Iterable[str | Path]) -> dict[str, Any]:
    """file_identity of each file, by its (absolute) path."""
    identities = [file_identity(p) for p in paths]
    return {i["path"]: i for i in identities}

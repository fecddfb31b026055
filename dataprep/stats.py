"""Per-stage document counts: in, out, dropped by reason, bytes, seconds."""

from __future__ import annotations

from collections import Counter
from typing import Iterable


def stage_stats(reasons: Iterable[str] = ()) -> dict:
    """A stage's counts; `reasons`: drop reasons listed even when nothing is dropped for them (the
    ones a reader of stats.json looks for: a 0 says the check ran)."""
    return {"docs_in": 0, "docs_out": 0, "dropped": dict.fromkeys(reasons, 0), "bytes_in": 0, "bytes_out": 0,
            "seconds": 0.0}


def drop(stats: dict, reason: str) -> None:
    stats["dropped"][reason] = stats["dropped"].get(reason, 0) + 1


def merge(parts: Iterable[dict]) -> dict:
    total = stage_stats()
    base = set(total)
    dropped: Counter = Counter()
    for p in parts:
        for key in ("docs_in", "docs_out", "bytes_in", "bytes_out", "seconds"):
            total[key] += p.get(key, 0)
        dropped.update(p.get("dropped", {}))
        for key, value in p.items():  # a stage's own counters (tokens, charsets, ...): summed too
            if key not in base and isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    total["dropped"] = dict(sorted(dropped.items()))
    total["seconds"] = round(total["seconds"], 3)
    return total


def megabytes(s: dict) -> list[float | str]:
    """A stage entry's MB in and out, "-" where it counts no bytes (holdout)."""
    return [round(s[k] / 1e6, 2) if k in s else "-" for k in ("bytes_in", "bytes_out")]


def table(stages: dict[str, dict]) -> str:
    rows = [("stage", "docs in", "docs out", "MB in", "MB out", "seconds", "dropped by reason")]
    for name, s in stages.items():
        reasons = ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "-"
        mb = [v if isinstance(v, str) else f"{v:.2f}" for v in megabytes(s)]
        rows.append((name, str(s["docs_in"]), str(s["docs_out"]), *mb, f"{s['seconds']:.1f}", reasons))
    return format_rows(rows, ragged_last=True)


def format_rows(rows: list[tuple[str, ...]], ragged_last: bool = False) -> str:
    """Rows as aligned text: the first column left-aligned, the others right-aligned; with
    `ragged_last`, the last column (free text) is left as it is."""
    aligned = len(rows[0]) - 1 if ragged_last else len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(aligned)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:aligned], widths[1:])]
        lines.append("  ".join(cells + list(r[aligned:])))
    return "\n".join(lines)

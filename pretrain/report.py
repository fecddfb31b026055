"""run_dir/report.html: a training run as charts against tokens trained on, from run_dir/metrics.jsonl
(and run_dir/eval.jsonl when present), self-contained like the corpus job's (dataprep/charts.py).

  loss          training loss, validation loss, and validation loss per source (`val_loss/<source>`)
  lr            the learning rate schedule
  grad norm     the global gradient norm
  throughput    tokens/s, and MFU where the device's peak is known
  evaluations   each task and metric of eval.jsonl (rows {step, task, metric, value, n})

Tokens are consumed_samples x model.seq_len (run_dir/config.yaml). Rank 0 writes the report when
training ends (a report that cannot be made is a warning); `python -m pretrain.report RUN_DIR`
makes it again.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from dataprep.charts import HtmlReport, figure, rebuild_command, write_or_warn

log = logging.getLogger("pretrain")
REPORT = "report.html"
VAL_PREFIX = "val_loss/"
SOURCE_COLORS = ["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a line cut short by a crash (the last) is left out."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("report: %s: a line that is not JSON, skipped", path)
    return [r for r in rows if isinstance(r, dict)]


def tokens_per_sample(run_dir: Path) -> int | None:
    """model.seq_len of the run's saved config (pretrain/resume.py writes it), if there is one."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    saved = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
    return (saved.get("model") or {}).get("seq_len")


def _series(rows: list[dict], key: str, x_of) -> tuple[list[float], list[float]]:
    pairs = [(x_of(r), r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def build(run_dir: str | Path) -> Path:
    """Write run_dir/report.html from run_dir/metrics.jsonl (and eval.jsonl); its path."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    by_step = {r["step"]: r for r in rows if "step" in r}  # a step logged twice: the last row
    rows = [by_step[s] for s in sorted(by_step)]
    seq_len = tokens_per_sample(run_dir)
    per_step = {r["step"]: r["consumed_samples"] for r in rows if r.get("consumed_samples")}
    if seq_len and per_step:
        samples_per_step = per_step[max(per_step)] / max(per_step)
        x_of_step, x_label = (lambda step: step * samples_per_step * seq_len), "tokens trained on"
    else:
        x_of_step, x_label = (lambda step: step), "step"
    x_of = lambda r: x_of_step(r["step"])  # noqa: E731

    last = rows[-1] if rows else {}
    r = HtmlReport("Training report", f"{run_dir.resolve()}: {len(rows)} logged steps, last step "
                                      f"{last.get('step', '-')}" + (f", {x_of(last):,.0f} tokens" if rows and seq_len else ""))
    r.heading("Loss")
    if rows:
        fig, ax = figure(10, 4.2)
        ax.plot(*_series(rows, "loss", x_of), label="training loss", color="#4878a8")
        ax.plot(*_series(rows, "val_loss", x_of), "o-", label="validation loss", color="#c0504d")
        per_source = sorted({k for row in rows for k in row if k.startswith(VAL_PREFIX)})
        for i, key in enumerate(per_source):
            ax.plot(*_series(rows, key, x_of), ".--", label=f"validation: {key[len(VAL_PREFIX):]}",
                    color=SOURCE_COLORS[i % len(SOURCE_COLORS)])
        ax.set_xlabel(x_label)
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.legend()
        r.chart(fig, "training and validation loss")
        r.table(["", "step", "loss", "val_loss"],
                [(name, row["step"], row.get("loss"), row.get("val_loss")) for name, row in
                 (("first", rows[0]), ("last", rows[-1]))])
    else:
        r.note("metrics.jsonl has no rows yet")

    charts = [("lr", "learning rate", "#8064a2"), ("grad_norm", "gradient norm", "#6a9f58"),
              ("tokens_per_s", "tokens/s", "#4878a8"), ("mfu", "MFU", "#c0504d")]
    shown = [(key, label, color) for key, label, color in charts if _series(rows, key, x_of)[1]]
    if shown:
        r.heading("Optimization and throughput")
        fig, axes = figure(11, 3.0, panels=len(shown), cols=2)
        for ax, (key, label, color) in zip(axes, shown):
            x, y = _series(rows, key, x_of)
            ax.plot(x, [100 * v for v in y] if key == "mfu" else y, color=color)
            ax.set_title(label + (" (%)" if key == "mfu" else ""))
            ax.set_xlabel(x_label)
        r.chart(fig, "learning rate, gradient norm, tokens/s and MFU")
    if rows and "mfu" not in {k for k, _, _ in shown}:
        r.note("MFU: not measured (the device's peak FLOP/s is unknown, as on CPU; metrics.peak_tflops sets it)")

    eval_path = run_dir / "eval.jsonl"
    evals = read_jsonl(eval_path) if eval_path.is_file() else []
    if evals:
        r.heading("Evaluations")
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for row in evals:
            groups[str(row.get("task")), str(row.get("metric"))].append(row)
        fig, axes = figure(11, 3.2, panels=len(groups), cols=3)
        for ax, ((task, metric), points) in zip(axes, sorted(groups.items())):
            points.sort(key=lambda p: p["step"])
            ax.plot([x_of_step(p["step"]) for p in points], [p["value"] for p in points], "o-")
            ax.set_title(f"{task}: {metric}")
            ax.set_xlabel(x_label)
        r.chart(fig, "evaluation metrics")
        r.table(["task", "metric", "step", "value", "n"],
                [(task, metric, p["step"], p["value"], p.get("n")) for (task, metric), ps in sorted(groups.items())
                 for p in ps[-1:]])
    return r.write(run_dir / REPORT)


def write_report(run_dir: str | Path, rank: int = 0) -> Path | None:
    """On rank 0 (the ranks share run_dir): build(), or a warning when the report cannot be made."""
    return write_or_warn(build, run_dir, log) if rank == 0 else None


if __name__ == "__main__":
    rebuild_command(build, "python -m pretrain.report",
                    "Make RUN_DIR/report.html again from its metrics.jsonl and eval.jsonl.", "RUN_DIR")

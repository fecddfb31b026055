"""The reports a person reads: output_dir/report.html of the corpus job and run_dir/report.html of
a training run, self-contained, every chart rendering (in chromium when installed); rebuilt by
`python -m dataprep.report DIR` and `python -m pretrain.report RUN_DIR`; a report that cannot be
made is a warning, never a failed job."""

import json
import logging

from conftest import run_module
from dataprep import report as corpus_report
from pretrain import report as training_report
from report_images import rendered_charts


def test_corpus_job_leaves_a_report_that_renders_and_rebuilds(corpus):
    path = corpus / "report.html"
    assert rendered_charts(path) == [
        "documents and bytes after each stage", "documents dropped by stage and reason",
        "quality score histogram with the keep rule", "share of each identified language",
        "cluster-size distribution", "mixture: target and achieved share of tokens, with epochs"]
    html = path.read_text()
    manifest = json.loads((corpus / "manifest.json").read_text())
    for name in [*manifest["sources"], "lambada", "wikitext2_test"]:
        assert f"<td>{name}</td>" in html, name
    for reason, n in json.loads((corpus / "stats.json").read_text())["stages"]["dedup"]["dropped"].items():
        assert f"{reason} {n}" in html
    before = path.read_bytes()
    path.unlink()
    proc = run_module("dataprep.report", str(corpus), timeout=120)
    assert proc.stdout.strip() == str(path) and path.read_bytes() == before


def test_a_report_that_cannot_be_made_is_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert corpus_report.write_report(tmp_path) is None
        assert training_report.write_report(tmp_path) is None
    assert caplog.text.count("report: not written") == 2 and not (tmp_path / "report.html").exists()


def _training_run(run_dir, steps=40, every=10, batch=16, seq_len=64):
    """A run directory as training leaves it (config.yaml, metrics.jsonl rows with per-source
    validation losses) and an evaluation's eval.jsonl, the last metrics line cut by a crash."""
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"model:\n  seq_len: {seq_len}\ntrain:\n  max_steps: {steps}\n")
    rows = []
    for step in range(1, steps + 1, 3):
        row = {"step": step, "loss": 8.0 / step ** 0.2, "lr": 1e-3 * min(1.0, step / 10), "grad_norm": 1.0 / step,
               "tokens_per_s": 5000.0 + step, "mfu": None, "consumed_samples": step * batch, "seconds": 0.1}
        if step % every == 1:
            row.update({"val_loss": row["loss"] + 0.1, "val_loss/crawl": row["loss"] + 0.2, "val_loss/books": row["loss"]})
        rows.append(row)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 41, "lo')
    evals = [{"step": s, "task": task, "metric": metric, "value": v / s, "n": n}
             for s in (11, 21, 31) for task, metric, v, n in (("lambada", "accuracy", 0.3, 500),
                                                             ("lambada", "perplexity", 900.0, 500),
                                                             ("wikitext2", "word_perplexity", 3000.0, 62))]
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    return rows[-1]


def test_training_report_from_metrics_and_evaluations(tmp_path):
    run_dir = tmp_path / "run"
    last = _training_run(run_dir)
    proc = run_module("pretrain.report", str(run_dir), timeout=120)
    assert proc.stdout.strip() == str(run_dir / "report.html")
    assert rendered_charts(run_dir / "report.html") == [
        "training and validation loss", "learning rate, gradient norm, tokens/s and MFU", "evaluation metrics"]
    html = (run_dir / "report.html").read_text()
    assert f"last step {last['step']}, {last['consumed_samples'] * 64:,} tokens" in html
    assert "MFU: not measured" in html  # no peak FLOP/s on CPU: said, not drawn as zero
    for task, metric, value in (("lambada", "accuracy", 0.3 / 31), ("wikitext2", "word_perplexity", 3000.0 / 31)):
        assert f"<td>{task}</td><td class=text>{metric}</td><td>31</td><td>{value:,.4g}</td>" in html

"""output_dir/report.html: what the corpus job did, as charts and tables from its stats.json and
manifest.json (dataprep/charts.py makes the page self-contained).

  funnel        documents and MB of the crawl after each stage, and every drop reason
  quality       the classifier's score histogram with the keep rule drawn on it
  languages     the share of each identified language
  dedup         how many groups of exact duplicates and clusters of near ones have each size
  decontam      per evaluation set and per source, what shared n-grams with it
  mixture       each source's target and achieved share of the tokens, and its epochs

The corpus job writes it at its end (a report that cannot be made is a warning, not a failure);
`python -m dataprep.report DIR` makes it again from DIR's files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from dataprep.charts import HtmlReport, figure, rebuild_command, write_or_warn
from dataprep.stats import megabytes

log = logging.getLogger("dataprep")
REPORT = "report.html"
CRAWL_STAGES = ("extract", "language", "filter", "quality", "dedup")
TOP_REASONS = 25
TOP_LANGUAGES = 12


def funnel(r: HtmlReport, stats: dict) -> None:
    stages = stats.get("stages", {})
    steps = [("input records", stages["extract"]["docs_in"], stages["extract"]["bytes_in"])] if "extract" in stages else []
    steps += [(name, stages[name]["docs_out"], stages[name]["bytes_out"]) for name in CRAWL_STAGES if name in stages]
    crawl = next((name for name, s in stats.get("mixture", {}).get("sources", {}).items() if s.get("kind") == "crawl"), None)
    decontam = stages.get("decontam", {}).get("by_source", {}).get(crawl)
    if decontam:
        steps.append(("decontam", decontam["docs_out"], None))
    r.heading("Funnel: the crawl through the stages")
    if steps:
        fig, (docs, mb) = figure(11, 0.45 * len(steps) + 1.2, panels=2)
        labels = [s[0] for s in steps][::-1]
        docs.barh(labels, [s[1] for s in steps][::-1], color="#4878a8")
        docs.set_xlabel("documents")
        docs.set_xlim(0, max(s[1] for s in steps) * 1.15 or 1)
        for y, (_, n, _) in enumerate(steps[::-1]):
            docs.annotate(f"{n:,}", (n, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        mb.barh(labels, [(s[2] or 0) / 1e6 for s in steps][::-1], color="#6a9f58")
        mb.set_xlabel("MB of text (input records: raw payloads)")
        mb.set_yticklabels([])
        r.chart(fig, "documents and bytes after each stage")
    r.table(["stage", "docs in", "docs out", "MB in", "MB out", "seconds", "dropped by reason"],
            [(name, s["docs_in"], s["docs_out"], *megabytes(s),
              s["seconds"], ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items(), key=lambda kv: -kv[1])) or "-")
             for name, s in stages.items()])
    reasons = sorted(((n, f"{stage}: {reason}") for stage, s in stages.items() for reason, n in s["dropped"].items()),
                     reverse=True)
    if reasons:
        shown, rest = reasons[:TOP_REASONS], sum(n for n, _ in reasons[TOP_REASONS:])
        if rest:
            shown.append((rest, f"{len(reasons) - TOP_REASONS} other reasons"))
        fig, ax = figure(11, 0.28 * len(shown) + 1.0)
        ax.barh([label for _, label in shown][::-1], [n for n, _ in shown][::-1], color="#c0504d")
        ax.set_xlabel("documents dropped")
        r.chart(fig, "documents dropped by stage and reason")


def keep_probability(score: np.ndarray, selection: dict) -> np.ndarray | None:
    """P(keep | score) of the quality stage's rule: GPT-3's Pareto rule keeps when
    pareto(alpha) > 1 - score, and numpy's pareto(a) (Lomax) has P(X > x) = (1 + x)^-a."""
    if selection["mode"] == "pareto":
        return (2.0 - score) ** -selection["alpha"]
    if selection["mode"] == "threshold":
        return (score >= selection["threshold"]).astype(float)
    return None


def quality(r: HtmlReport, stats: dict) -> None:
    q = stats.get("stages", {}).get("quality")
    if not q or "histogram" not in q:
        return
    r.heading("Quality classifier")
    bins, counts = np.asarray(q["histogram_bins"]), np.asarray(q["histogram"])
    fig, ax = figure(9, 3.8)
    ax.bar(bins[:-1], counts, width=np.diff(bins), align="edge", color="#4878a8", edgecolor="white",
           label="documents scored")
    ax.set_xlabel("quality score (P(reference-like))")
    ax.set_ylabel("documents")
    sel = q["selection"]
    score = np.linspace(0, 1, 401)
    keep = keep_probability(score, sel)
    if keep is not None:
        rule = ax.twinx()
        rule.plot(score, keep, color="#c0504d", lw=2,
                  label=f"P(keep): pareto, alpha {sel['alpha']}" if sel["mode"] == "pareto"
                  else f"keep: score >= {sel['threshold']}")
        rule.set_ylim(0, 1.05)
        rule.set_ylabel("probability of being kept")
        rule.legend(loc="upper right")
    ax.legend(loc="center right")
    r.chart(fig, "quality score histogram with the keep rule")
    c = q.get("classifier", {})
    r.note(f"kept {q['docs_out']:,} of {q['docs_in']:,} (keep rate {q.get('keep_rate')}); classifier: "
           f"{c.get('how', '?')}; held-out precision {c.get('precision')}, recall {c.get('recall')}, "
           f"F1 {c.get('f1')}, ROC AUC {c.get('roc_auc')}")


def languages(r: HtmlReport, stats: dict) -> None:
    langs = stats.get("stages", {}).get("language", {}).get("languages")
    if not langs:
        return
    r.heading("Languages")
    total = sum(langs.values())
    ranked = sorted(langs.items(), key=lambda kv: -kv[1])
    shown = ranked[:TOP_LANGUAGES]
    if len(ranked) > TOP_LANGUAGES:
        shown.append((f"{len(ranked) - TOP_LANGUAGES} others", sum(n for _, n in ranked[TOP_LANGUAGES:])))
    fig, ax = figure(9, 0.3 * len(shown) + 1.0)
    ax.barh([str(k) for k, _ in shown][::-1], [100 * n / total for _, n in shown][::-1], color="#8064a2")
    ax.set_xlabel(f"% of the {total:,} documents identified")
    r.chart(fig, "share of each identified language")


def dedup(r: HtmlReport, stats: dict) -> None:
    d = stats.get("stages", {}).get("dedup")
    if not d:
        return
    r.heading("Deduplication")
    kinds = [("exact duplicate groups", d.get("exact_group_sizes")), ("near-duplicate clusters", d.get("cluster_sizes"))]
    recorded = [(label, sizes) for label, sizes in kinds if sizes]
    if recorded:
        fig, axes = figure(11, 3.2, panels=len(recorded))
        for ax, (label, sizes) in zip(axes, recorded):
            ax.bar(range(len(sizes)), list(sizes.values()), color="#4878a8", width=0.6)
            ax.set_xticks(range(len(sizes)), list(sizes))  # each size recorded, one bar apart
            ax.set_yscale("log")
            ax.set_xlabel(f"documents per group ({label})")
            ax.set_ylabel("groups")
        r.chart(fig, "cluster-size distribution")
    missing = [label for label, sizes in kinds if sizes is None]
    r.note(f"{d['docs_in']:,} documents in, {d.get('exact_duplicates', 0):,} exact and "
           f"{d.get('near_duplicates', 0):,} near duplicates dropped, {d.get('clusters', 0):,} near-duplicate clusters "
           f"(largest {d.get('largest_cluster', 0)})"
           + ("; no duplicate groups" if not recorded and not missing else "")
           + (f"; sizes not recorded for {', '.join(missing)}" if missing else ""))


def decontam(r: HtmlReport, stats: dict) -> None:
    d = stats.get("stages", {}).get("decontam")
    if not d:
        return
    r.heading("Decontamination")
    r.note(f"{d['ngram']}-grams of normalized words, mode {d['mode']}; index of {d['index']['rows']:,} n-grams, "
           f"{d['index']['bytes'] / 2**20:.1f} MiB; {d['contaminated']:,} of {d['docs_in']:,} documents shared one "
           f"with an evaluation set")
    r.table(["evaluation set", "examples", "indexed", "n-grams", "training documents", "examples hit",
             "first documents"],
            [(name, s["examples"], s["indexed_examples"], s["ngrams"], s["documents"], s["examples_hit"],
              ", ".join(s["document_ids"]) or "-") for name, s in d["sets"].items()])
    r.table(["source", "documents", "contaminated", "kept"],
            [(name, s["docs_in"], s["contaminated"], s["docs_out"]) for name, s in d["by_source"].items()])


def mixture(r: HtmlReport, manifest: dict | None) -> None:
    if not manifest:
        return
    r.heading("Mixture")
    sources = manifest["sources"]
    names = list(sources)
    x = np.arange(len(names))
    fig, ax = figure(9, 3.8)
    target = [100 * s["target_weight"] for s in sources.values()]
    achieved = [100 * s["achieved_weight"] for s in sources.values()]
    ax.bar(x - 0.2, target, 0.4, label="target", color="#bbbbbb")
    ax.bar(x + 0.2, achieved, 0.4, label="achieved", color="#4878a8")
    for i, s in enumerate(sources.values()):
        ax.annotate(f"{s['achieved_epochs']:.2f} epochs", (i + 0.2, achieved[i]), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylabel("% of training tokens")
    ax.legend()
    r.chart(fig, "mixture: target and achieved share of tokens, with epochs")
    r.table(["source", "kind", "documents", "tokens", "epochs", "target", "achieved"],
            [(n, s["kind"], s["documents"], s["tokens"], round(s["achieved_epochs"], 3),
              f"{s['target_weight']:.2%}", f"{s['achieved_weight']:.2%}") for n, s in sources.items()])
    r.note(f"{manifest['total_documents']:,} documents, {manifest['total_tokens']:,} tokens in "
           f"{len(manifest['shards'])} shards; tokenizer vocabulary {manifest['tokenizer']['vocab_size']:,}")


def build(output_dir: str | Path) -> Path:
    """Write output_dir/report.html from output_dir/stats.json (and manifest.json); its path."""
    root = Path(output_dir)
    stats = json.loads((root / "stats.json").read_text())
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    r = HtmlReport("Corpus report", f"{root.resolve()}: {stats.get('documents', '?')} documents, "
                                     f"{stats.get('tokens', '?')} tokens, {stats.get('seconds', '?')} s")
    for section in (funnel, quality, languages, dedup, decontam):
        section(r, stats)
    mixture(r, manifest)
    return r.write(root / REPORT)


def write_report(output_dir: str | Path) -> Path | None:
    """build(), or a warning when the report cannot be made."""
    return write_or_warn(build, output_dir, log)


if __name__ == "__main__":
    rebuild_command(build, "python -m dataprep.report",
                    "Make DIR/report.html again from a corpus job's stats.json and manifest.json.", "DIR")

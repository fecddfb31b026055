"""Scaling laws from a sweep of runs: L(N) = E + A / N^alpha, and L(C) = (C_c / C)^alpha_C.

    python -m launch -m +experiment=scaling data.manifest=...   # runs/scaling/<job>_<model>/
    python -m pretrain.scaling runs/scaling                     # -> scaling.json, scaling.png

Every subfolder of the sweep folder that holds a finished run (config.yaml, summary.json and a
validation loss in metrics.jsonl) is one point: N its non-embedding parameters (every parameter
but the token and position embeddings and the output layer, tied or not: Kaplan et al. 2020's
N), D the tokens it trained on (consumed samples x seq_len), C = 6·N·D its training compute
(Kaplan's estimate, attention FLOPs left out), L its last validation loss (nats per token).

- L(N) = E + A / N^alpha is fitted by least squares on L (a grid over E and alpha, then
  scipy's least_squares). At one token budget for all sizes, E also holds the loss that more
  data would still remove.
- L(C) = (C_c / C)^alpha_C, a straight line in log-log (least squares on log L).
- 95% intervals: a bootstrap over runs (runs drawn with replacement, the fit redone, the 2.5th
  and 97.5th percentiles); a draw with fewer distinct sizes than the fit has parameters is
  skipped. With fewer than 4 runs there is no interval (null).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

SCALING_JSON = "scaling.json"
SCALING_PNG = "scaling.png"
MIN_RUNS_FOR_CI = 4


# --- runs -----------------------------------------------------------------------------------

def non_embedding_params(mcfg) -> int:
    """Parameters of the model but its token and position embeddings and output layer."""
    import torch

    from pretrain.model import GPT

    with torch.device("meta"):  # shapes only; no memory, no init cost
        model = GPT(replace(mcfg, vocab_size=mcfg.vocab_size or 64))
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(("wte.", "wpe.", "lm_head.")))


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def read_run(run_dir: Path) -> Optional[dict]:
    """One finished run as a point of the fit (None when the folder holds no finished run)."""
    from pretrain import resume

    if not ((run_dir / resume.CONFIG_FILE).is_file() and (run_dir / "summary.json").is_file()):
        return None
    cfg = resume.load(run_dir / resume.CONFIG_FILE)
    summary = json.loads((run_dir / "summary.json").read_text())
    vals = [r for r in _records(run_dir) if r.get("val_loss") is not None]
    if not vals or summary.get("final_step", 0) < cfg.train.max_steps:
        return None
    n = non_embedding_params(cfg.model)
    seq = cfg.model.seq_len
    curve = [[6.0 * n * r["consumed_samples"] * seq, r["val_loss"]] for r in vals]
    last = vals[-1]
    tokens = last["consumed_samples"] * seq
    return {
        "run": run_dir.name,
        "n_layer": cfg.model.n_layer, "d_model": cfg.model.d_model, "n_head": cfg.model.n_head,
        "non_embedding_params": n,
        "tokens": tokens,
        "compute": 6.0 * n * tokens,
        "val_loss": last["val_loss"],
        "step": last["step"],
        "val_curve": curve,  # [compute, val_loss] at each evaluation
    }


def collect_runs(sweep_dir: str | Path) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep folder")
    runs = [r for p in sorted(sweep_dir.iterdir()) if p.is_dir() and (r := read_run(p))]
    return sorted(runs, key=lambda r: r["non_embedding_params"])


# --- fits -----------------------------------------------------------------------------------

def fit_offset_power_law(n: np.ndarray, loss: np.ndarray) -> dict:
    """Least-squares E, A, alpha of L = E + A / N^alpha (E >= 0, A > 0, alpha > 0)."""
    from scipy.optimize import least_squares

    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    ref = math.exp(np.log(n).mean())  # N in units of its geometric mean: a well-scaled problem
    x = np.log(n / ref)
    floor = float(loss.min())

    def predict(p):  # p = (E, log A', alpha) with L = E + exp(log A' - alpha x)
        return p[0] + np.exp(p[1] - p[2] * x)

    # Start from the best point of a grid over E and alpha (log A' solved in log space for each).
    e = np.linspace(0.0, floor * 0.999, 40)[:, None, None]
    alpha = np.linspace(0.01, 3.0, 60)[None, :, None]
    log_a = np.mean(np.log(loss - e) + alpha * x, axis=-1, keepdims=True)
    err = np.sum((e + np.exp(log_a - alpha * x) - loss) ** 2, axis=-1)
    i, j = np.unravel_index(np.argmin(err), err.shape)
    start = (float(e[i, 0, 0]), float(log_a[i, j, 0]), float(alpha[0, j, 0]))
    def jacobian(p):
        power = np.exp(p[1] - p[2] * x)
        return np.stack([np.ones_like(x), power, -x * power], axis=1)

    fit = least_squares(lambda p: predict(p) - loss, start, jac=jacobian,
                        bounds=([0.0, -np.inf, 1e-4], [floor, np.inf, 10.0]), x_scale="jac")
    e, a, alpha = (float(v) for v in fit.x)
    return {"E": e, "A": math.exp(a) * ref ** alpha, "alpha": alpha,
            "rmse": float(np.sqrt(np.mean((predict(fit.x) - loss) ** 2)))}


def offset_power_law(n, p: dict):
    return p["E"] + p["A"] / np.asarray(n, dtype=float) ** p["alpha"]


def fit_power_law(c: np.ndarray, loss: np.ndarray) -> dict:
    """C_c, alpha_C of L = (C_c / C)^alpha_C: least squares on log L against log C. (C_c is
    None when alpha_C is too close to 0 for it to be a float.)"""
    lc, ll = np.log(np.asarray(c, dtype=float)), np.log(np.asarray(loss, dtype=float))
    slope, intercept = (float(v) for v in np.polyfit(lc, ll, 1))
    alpha = -slope
    log_c_c = intercept / alpha if alpha else math.inf
    pred = np.exp(intercept + slope * lc)
    return {"C_c": math.exp(log_c_c) if abs(log_c_c) < 700 else None, "alpha_C": alpha,
            "rmse": float(np.sqrt(np.mean((pred - np.exp(ll)) ** 2))), "_line": (intercept, slope)}


def bootstrap(x: np.ndarray, loss: np.ndarray, fit, keys: tuple[str, ...], min_distinct: int,
              resamples: int, seed: int) -> tuple[Optional[dict], list[dict]]:
    """(95% percentile intervals of `keys`, the fits of the draws) over runs drawn with
    replacement; draws with fewer than `min_distinct` distinct x are skipped."""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    if len(x) < MIN_RUNS_FOR_CI:
        return None, []
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(resamples):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) < min_distinct:
            continue
        fits.append(fit(x[idx], loss[idx]))
    if not fits:
        return None, []
    ci = {}
    for k in keys:
        values = [f[k] for f in fits if f[k] is not None]
        ci[k] = [float(np.percentile(values, q)) for q in (2.5, 97.5)] if values else None
    return ci, fits


def analyse(runs: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    sizes = {r["non_embedding_params"] for r in runs}
    if len(sizes) < 3:
        raise ValueError(f"fitting E, A and alpha needs finished runs of at least 3 sizes; found {len(sizes)}")
    n = np.array([r["non_embedding_params"] for r in runs], dtype=float)
    c = np.array([r["compute"] for r in runs], dtype=float)
    loss = np.array([r["val_loss"] for r in runs], dtype=float)
    fit_n = fit_offset_power_law(n, loss)
    ci_n, draws_n = bootstrap(n, loss, fit_offset_power_law, ("E", "A", "alpha"), 3, resamples, seed)
    fit_c = fit_power_law(c, loss)
    ci_c, _ = bootstrap(c, loss, fit_power_law, ("C_c", "alpha_C"), 2, resamples, seed)
    return {
        "loss_vs_params": {"form": "L(N) = E + A / N^alpha", **fit_n, "ci95": ci_n},
        "loss_vs_compute": {"form": "L(C) = (C_c / C)^alpha_C", **fit_c, "ci95": ci_c},
        "bootstrap": {"resamples": resamples if ci_n else 0, "used": len(draws_n), "seed": seed,
                      "method": "runs drawn with replacement, fit redone; 2.5th and 97.5th percentiles; "
                                "draws with fewer than 3 distinct sizes skipped"},
        "_draws_n": draws_n,
    }


# --- plot -----------------------------------------------------------------------------------

def plot(runs: list[dict], result: dict, path: Path) -> Path:
    """Log-log: validation loss against N (points, fit, 95% band) and against C (each run's
    validation curve, the final points, the power-law fit)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    n = np.array([r["non_embedding_params"] for r in runs], dtype=float)
    c = np.array([r["compute"] for r in runs], dtype=float)
    loss = np.array([r["val_loss"] for r in runs], dtype=float)
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)

    pn = result["loss_vs_params"]
    grid = np.logspace(np.log10(n.min()) - 0.15, np.log10(n.max()) + 0.15, 100)
    draws = result.get("_draws_n") or []
    if draws:
        curves = np.array([offset_power_law(grid, d) for d in draws])
        left.fill_between(grid, np.percentile(curves, 2.5, axis=0), np.percentile(curves, 97.5, axis=0),
                          color="tab:blue", alpha=0.15, lw=0, label="95% bootstrap band")
    ci = pn["ci95"]
    alpha_text = f"alpha = {pn['alpha']:.3f}" + (f" [{ci['alpha'][0]:.3f}, {ci['alpha'][1]:.3f}]" if ci else "")
    left.plot(grid, offset_power_law(grid, pn), color="tab:blue",
              label=f"E + A/N^alpha: E = {pn['E']:.2f}, {alpha_text}")
    left.scatter(n, loss, color="black", zorder=3, label="runs (last validation loss)")
    left.set(xscale="log", yscale="log", xlabel="non-embedding parameters N", ylabel="validation loss (nats/token)",
             title="L(N)")

    pc = result["loss_vs_compute"]
    for r in runs:
        curve = np.array(r["val_curve"])
        right.plot(curve[:, 0], curve[:, 1], color="0.6", lw=1)
    cgrid = np.logspace(np.log10(c.min()) - 0.15, np.log10(c.max()) + 0.15, 100)
    ci = pc["ci95"]
    text = f"alpha_C = {pc['alpha_C']:.3f}" + (f" [{ci['alpha_C'][0]:.3f}, {ci['alpha_C'][1]:.3f}]" if ci else "")
    intercept, slope = pc["_line"]
    right.plot(cgrid, np.exp(intercept + slope * np.log(cgrid)), color="tab:red", label=f"(C_c/C)^alpha_C: {text}")
    right.scatter(c, loss, color="black", zorder=3, label="runs (final)")
    right.plot([], [], color="0.6", lw=1, label="validation curves")
    right.set(xscale="log", yscale="log", xlabel="training compute C = 6ND (FLOPs)", title="L(C)")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # losses span little: 6.6, not 6.6 x 10^0
    for ax in (left, right):
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


# --- command line ---------------------------------------------------------------------------

def run(sweep_dir: str | Path, out: Optional[Path] = None, resamples: int = 1000, seed: int = 0) -> dict:
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir
    runs = collect_runs(sweep_dir)
    result = analyse(runs, resamples, seed)
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, result, out / SCALING_PNG)
    result.pop("_draws_n")
    result["loss_vs_compute"].pop("_line")
    doc = {
        "sweep_dir": str(sweep_dir),
        "compute": "C = 6 * N * D; N non-embedding parameters, D training tokens",
        "runs": runs,
        **result,
        "plot": SCALING_PNG,
    }
    (out / SCALING_JSON).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _interval(ci: Optional[dict], key: str, fmt: str) -> str:
    return f" [{format(ci[key][0], fmt)}, {format(ci[key][1], fmt)}]" if ci and ci.get(key) else ""


def summary(doc: dict) -> str:
    lines = [f"{'run':<16} {'N':>10} {'tokens':>10} {'C (FLOPs)':>10} {'val_loss':>9}"]
    for r in doc["runs"]:
        lines.append(f"{r['run']:<16} {r['non_embedding_params']:>10,} {r['tokens']:>10,} "
                     f"{r['compute']:>10.3g} {r['val_loss']:>9.4f}")
    pn, pc = doc["loss_vs_params"], doc["loss_vs_compute"]
    lines.append(f"L(N) = E + A / N^alpha: E {pn['E']:.3f}{_interval(pn['ci95'], 'E', '.3f')}, "
                 f"A {pn['A']:.4g}{_interval(pn['ci95'], 'A', '.4g')}, "
                 f"alpha {pn['alpha']:.3f}{_interval(pn['ci95'], 'alpha', '.3f')} (rmse {pn['rmse']:.4f})")
    lines.append(f"L(C) = (C_c / C)^alpha_C: alpha_C {pc['alpha_C']:.4f}{_interval(pc['ci95'], 'alpha_C', '.4f')}, "
                 f"C_c {pc['C_c'] if pc['C_c'] is None else format(pc['C_c'], '.3g')} (rmse {pc['rmse']:.4f})")
    lines.append(f"95% intervals: {doc['bootstrap']['used']} bootstrap draws over {len(doc['runs'])} runs"
                 if pn["ci95"] else f"no intervals: {len(doc['runs'])} runs (at least {MIN_RUNS_FOR_CI} needed)")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="folder whose subfolders are runs (python -m launch -m ...)")
    parser.add_argument("--out", type=Path, help="where scaling.json and scaling.png go (default: sweep_dir)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        doc = run(args.sweep_dir, args.out, args.bootstrap, args.seed)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"scaling: {e}")
    print(summary(doc))
    out = args.out or Path(args.sweep_dir)
    print(f"wrote {out / SCALING_JSON}, {out / SCALING_PNG}", flush=True)


if __name__ == "__main__":
    main()

"""Scaling laws (pretrain/scaling.py): the fits recover known constants from noisy synthetic
losses; a micro sweep through `python -m launch -m` leaves runs that `python -m pretrain.scaling`
turns into scaling.json and a plot."""

import json

import numpy as np
import pytest
import torch

from conftest import run_module
from pretrain import scaling
from pretrain.model import GPT, ModelConfig


def test_offset_power_law_recovers_known_constants():
    n = np.logspace(5, 8, 8)
    e, a, alpha = 1.8, 60.0, 0.3
    exact = e + a / n ** alpha
    fit = scaling.fit_offset_power_law(n, exact)
    assert fit["E"] == pytest.approx(e, rel=1e-4)
    assert fit["A"] == pytest.approx(a, rel=1e-3)
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-4)

    noisy = exact + np.random.default_rng(0).normal(0.0, 0.01, n.size)
    fit = scaling.fit_offset_power_law(n, noisy)
    ci, draws = scaling.bootstrap(n, noisy, scaling.fit_offset_power_law, ("E", "A", "alpha"), 3, 300, seed=1)
    assert abs(fit["alpha"] - alpha) < 0.05 and abs(fit["E"] - e) < 0.1
    assert len(draws) > 250
    for key, true in (("E", e), ("A", a), ("alpha", alpha)):
        assert ci[key][0] <= true <= ci[key][1], (key, ci[key])
    assert ci["alpha"][1] - ci["alpha"][0] < 0.3


def test_compute_power_law_recovers_known_constants():
    c = np.logspace(15, 20, 6)
    c_c, alpha_c = 1e30, 0.05
    loss = (c_c / c) ** alpha_c * np.exp(np.random.default_rng(0).normal(0.0, 0.002, c.size))
    fit = scaling.fit_power_law(c, loss)
    assert fit["alpha_C"] == pytest.approx(alpha_c, abs=0.003)
    assert np.log10(fit["C_c"]) == pytest.approx(30, abs=1.5)


def test_too_few_sizes_is_refused():
    runs = [{"non_embedding_params": n, "compute": 6.0 * n * 1000, "val_loss": 5.0} for n in (10, 10, 20)]
    with pytest.raises(ValueError, match="at least 3 sizes"):
        scaling.analyse(runs)


def test_non_embedding_parameters_leave_out_embeddings_and_output_layer():
    cfg = ModelConfig(n_layer=3, n_head=4, d_model=96, seq_len=128, vocab_size=1000, tie_embeddings=False)
    model = GPT(cfg)
    blocks = sum(p.numel() for p in model.blocks.parameters()) + sum(p.numel() for p in model.ln_f.parameters())
    assert scaling.non_embedding_params(cfg) == blocks
    assert scaling.non_embedding_params(ModelConfig(n_layer=3, n_head=4, d_model=96, vocab_size=None)) == blocks


@pytest.mark.slow
def test_micro_sweep_gives_scaling_json_and_plot(micro_sweep, tmp_path):
    runs = sorted(p.name for p in micro_sweep.iterdir() if p.is_dir())
    assert runs == ["0_scale_1", "1_scale_2", "2_scale_3"]
    proc = run_module("pretrain.scaling", str(micro_sweep), "--out", str(tmp_path), "--bootstrap", "50")
    doc = json.loads((tmp_path / "scaling.json").read_text())
    png = (tmp_path / "scaling.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000

    sizes = []
    for name, (layers, d, heads) in zip(runs, [(2, 64, 4), (3, 96, 4), (4, 128, 4)]):
        with torch.device("meta"):
            model = GPT(ModelConfig(n_layer=layers, d_model=d, n_head=heads, vocab_size=64))
        sizes.append(sum(p.numel() for p in model.blocks.parameters()) + model.ln_f.weight.numel())
    assert [r["run"] for r in doc["runs"]] == runs
    assert [r["non_embedding_params"] for r in doc["runs"]] == sizes
    tokens = 4 * 4 * 128  # steps x global batch (4 x 1 rank) x seq_len
    for r in doc["runs"]:
        metrics = [json.loads(l) for l in (micro_sweep / r["run"] / "metrics.jsonl").read_text().splitlines()]
        assert r["tokens"] == tokens and r["compute"] == pytest.approx(6 * r["non_embedding_params"] * tokens)
        assert r["val_loss"] == metrics[-1]["val_loss"] and r["step"] == 4
        assert [v for _, v in r["val_curve"]] == [m["val_loss"] for m in metrics if "val_loss" in m]
    for key in ("E", "A", "alpha", "rmse", "ci95"):
        assert key in doc["loss_vs_params"]
    assert doc["loss_vs_params"]["ci95"] is None  # 3 runs: a 3-parameter fit has no spread to show
    assert {"C_c", "alpha_C", "ci95"} <= set(doc["loss_vs_compute"])
    assert f"alpha {doc['loss_vs_params']['alpha']:.3f}" in proc.stdout


def test_run_dir_is_refused_under_multirun(tmp_path):
    proc = run_module("launch", "-m", "model=tiny", f"run_dir={tmp_path / 'x'}", f"hydra.sweep.dir={tmp_path}",
                      "cluster.dry_run=true", check=False, timeout=120)
    assert proc.returncode != 0
    assert "hydra.sweep.dir" in proc.stderr


def test_the_ladder_spans_ten_times_in_five_sizes():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from conftest import REPO
    from pretrain.config import register

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        sweep = compose(config_name="pretrain", overrides=["+experiment=scaling"], return_hydra_config=True)
        models = sweep.hydra.sweeper.params.model.split(",")
        sizes = [scaling.non_embedding_params(OmegaConf.to_object(compose(
            config_name="pretrain", overrides=["+experiment=scaling", f"model={m}"])).model) for m in models]
    assert len(models) >= 5 and sizes == sorted(sizes) and sizes[-1] >= 10 * sizes[0]
    assert sweep.train.max_steps == 100 and list(sweep.eval.tasks) == []

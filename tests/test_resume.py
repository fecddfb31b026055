"""Continuing a run from its directory alone; exact resume under ZeRO-3; export of its shards."""

import json

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, run_module
from pretrain import resume
from pretrain.config import register

register()


def _compose(overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return OmegaConf.to_object(compose("pretrain", list(overrides)))


@pytest.fixture()
def saved_run(tmp_path):
    """A run directory as training leaves it (config.yaml, checkpoints/), without training."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = _compose([f"run_dir={run_dir}", "train.max_steps=40", "train.micro_batch_size=2", "data.seed=7"])
    (run_dir / "config.yaml").write_text(resume.to_yaml(cfg))
    return run_dir


def _apply(overrides):
    return resume.apply(_compose(overrides), overrides)


def test_resume_from_a_run_dir_takes_its_saved_config_with_overrides_on_top(saved_run):
    overrides = [f"resume={saved_run}", "train.max_steps=80", "cluster.nproc=1", "zero=stage3",
                 "model.activation_checkpointing=true"]
    cfg = _apply(overrides)
    assert cfg.run_dir == str(saved_run) and cfg.resume == str(saved_run)
    assert cfg.train.micro_batch_size == 2 and cfg.data.seed == 7  # from the run, not the defaults
    assert cfg.train.max_steps == 80 and cfg.cluster.nproc == 1 and cfg.zero.stage == 3
    assert cfg.model.activation_checkpointing
    # The schedule stays the one the run started on: 40 steps long, not the new max_steps.
    assert cfg.optim.lr_decay_steps == 40


@pytest.mark.parametrize("override, key", [("model.d_model=256", "model.d_model"),
                                           ("model=125m", "model.n_layer"),
                                           ("model.style=gpt2", "model.position"),
                                           ("data.seed=8", "data.seed"),
                                           ("optim.lr_decay_steps=80", "optim.lr_decay_steps")])
def test_overrides_that_break_exact_continuation_are_refused(saved_run, override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as e:
        _apply([f"resume={saved_run}", override])
    assert "exact continuation" in str(e.value)


def test_other_flags_are_left_alone(saved_run):
    cfg = _compose(["resume=auto", "train.max_steps=5"])
    assert resume.apply(cfg, ["train.max_steps=5"]) is cfg
    cfg = _compose([f"resume={saved_run / 'checkpoints'}"])  # a checkpoint folder, not a run dir
    assert resume.apply(cfg, [f"resume={saved_run / 'checkpoints'}"]) is cfg


def test_checkpoints_this_run_cannot_continue_exactly_are_refused(saved_run):
    from pretrain.data import BatchLayout
    from pretrain.resume import check_resumable

    cfg = _compose(["zero=stage2"])
    info = {"step": 4, "global_batch": 8, "world_size": 2, "zero_stage": 2, "precision": "fp32",
            "data_fingerprint": "abc"}
    where = saved_run / "checkpoints" / "step_00000004"
    assert check_resumable(cfg, info, where, BatchLayout(4, 1, 2), "abc") is False  # as saved
    assert check_resumable(cfg, info, where, BatchLayout(8, 1, 1), "abc") is True  # universal
    assert check_resumable(cfg, info, where, BatchLayout(4, 2, 1), "abc") is True
    with pytest.raises(ValueError, match="global batch 8"):
        check_resumable(cfg, info, where, BatchLayout(4, 1, 1), "abc")
    with pytest.raises(ValueError, match="other shards"):
        check_resumable(cfg, info, where, BatchLayout(4, 1, 2), "def")
    zero0 = _compose(["zero=stage0"])
    info0 = {**info, "zero_stage": 0}
    assert check_resumable(zero0, info0, where, BatchLayout(8, 1, 1), "abc") is False  # whole states
    with pytest.raises(ValueError, match="universal format"):
        check_resumable(cfg, info0, where, BatchLayout(4, 1, 2), "abc")
    # ZeRO-3 changes world size through the universal format too, but not to stages 1-2.
    info3 = {**info, "zero_stage": 3}
    with pytest.raises(ValueError, match="between ZeRO-3 and stages 1-2"):
        check_resumable(cfg, info3, where, BatchLayout(4, 1, 2), "abc")
    zero3 = _compose(["zero=stage3"])
    assert check_resumable(zero3, info3, where, BatchLayout(4, 1, 2), "abc") is False
    assert check_resumable(zero3, info3, where, BatchLayout(8, 1, 1), "abc") is True


# --- ZeRO-3, 2 CPU ranks, fp32 ----------------------------------------------------------------

N = 4


def _args(corpus, run_dir, steps):
    return [f"data.manifest={corpus / 'manifest.json'}", f"run_dir={run_dir}", "zero=stage3",
            f"train.max_steps={steps}", f"optim.lr_decay_steps={2 * N}", f"checkpoint.every_steps={N // 2}",
            "train.micro_batch_size=4", "optim.warmup_steps=2", "data.seed=5", "train.log_every_steps=1"]


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def zero3_straight(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("zero3_straight")
    run_module("launch", *_args(corpus, run_dir, 2 * N))
    return run_dir


@pytest.mark.slow
def test_zero3_stop_and_resume_from_the_run_dir_equals_the_straight_run(zero3_straight, corpus, tmp_path):
    """2N steps straight vs N steps, stop, `resume=<run_dir> train.max_steps=3N/2` on the same 2
    ranks (turning on activation checkpointing, which must not change a number), then on 1 rank
    (micro batch 8, through the universal format) to 2N: per-step losses within 1e-5."""
    run_dir = tmp_path / "zero3_halves"
    run_module("launch", *_args(corpus, run_dir, N))
    refused = run_module("launch", f"resume={run_dir}", "model.n_layer=3", check=False, timeout=120)
    assert refused.returncode != 0 and "model.n_layer: 2" in refused.stdout + refused.stderr
    again = run_module("launch", f"resume={run_dir}", f"train.max_steps={N + N // 2}",
                       "model.activation_checkpointing=true")
    assert f"at step {N} " in again.stdout and "2 ranks, global batch 8, ZeRO-3" in again.stdout
    one = run_module("launch", f"resume={run_dir}", f"train.max_steps={2 * N}", "cluster.nproc=1",
                     "train.micro_batch_size=8")
    assert "written by 2 ranks, ZeRO-3, loaded through the universal format" in one.stdout
    resumed, straight = _metrics(run_dir), _metrics(zero3_straight)
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == list(range(1, 2 * N + 1))
    for a, b in zip(resumed, straight):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9), a["step"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
    assert resumed[-1]["val_loss"] == pytest.approx(straight[-1]["val_loss"], abs=1e-5)


@pytest.mark.slow
def test_export_of_zero3_shards_is_the_trained_model(zero3_straight, corpus, tmp_path):
    """The merged ZeRO-3 shards give the validation loss the run measured, and the Hugging Face
    folder gives the same logits as our model (atol 1e-4, fp32)."""
    transformers = pytest.importorskip("transformers")
    from pretrain import export
    from pretrain.data import Splits, TokenStream

    written = export.export(zero3_straight, tmp_path / "export")
    ours = export.load(written["model"])
    assert sorted(p.name for p in written["hf"].iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]

    # What evaluate() read at the last step: per source, its held-out windows 0..31 (4 batches x
    # 2 ranks x 4), or all of them when it has fewer; val_loss weighs them by the target weights.
    splits = Splits.of(TokenStream(corpus / "manifest.json"), ours.cfg.seq_len, 5, 0.05)
    measured = _metrics(zero3_straight)[-1]
    assert any(len(val) < 32 for val in splits.validation.values())  # a rank evaluates nothing of it
    mixture = 0.0
    for name, val in splits.validation.items():
        x, y = val.batch(range(min(len(val), 32)))
        with torch.no_grad():
            logits = ours(x)
            loss = float(F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1)))
        assert loss == pytest.approx(measured[f"val_loss/{name}"], abs=1e-4), name
        mixture += splits.weights[name] * loss
    assert mixture == pytest.approx(measured["val_loss"], abs=1e-4)

    hf = transformers.LlamaForCausalLM.from_pretrained(written["hf"], dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(x[:4]).logits
    assert torch.allclose(logits[:4], theirs, atol=1e-4), (logits[:4] - theirs).abs().max()
    tok = transformers.AutoTokenizer.from_pretrained(written["hf"])
    assert tok.decode(tok("hello world")["input_ids"]) == "hello world"


@pytest.mark.slow
def test_generate_samples_text_from_a_run_directory(zero3_straight):
    proc = run_module("pretrain.generate", str(zero3_straight), "--prompt", "The", "--max-new-tokens", "12",
                      "--num-samples", "2", "--seed", "1", timeout=300)
    samples = proc.stdout.split("--- sample ")[1:]
    assert len(samples) == 2 and all(s.split("\n", 1)[1].startswith("The") for s in samples)

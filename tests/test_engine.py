"""The DeepSpeed config the Hydra keys turn into (no engine is built here)."""

import math

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from pretrain.config import register
from pretrain.engine import ds_config, lr_lambda

register()


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return OmegaConf.to_object(compose("pretrain", list(overrides)))


def test_zero_offload_precision_accumulation_and_clipping_come_from_hydra():
    c = ds_config(_cfg("zero=stage3", "zero.offload_optimizer=true", "zero.offload_param=true",
                       "train.precision=bf16", "train.micro_batch_size=2", "train.grad_accum_steps=3",
                       "optim.grad_clip=0.5"), world_size=4)
    z = c["zero_optimization"]
    assert z["stage"] == 3 and z["offload_optimizer"] == {"device": "cpu"} and z["offload_param"] == {"device": "cpu"}
    assert c["bf16"] == {"enabled": True} and c["fp16"] == {"enabled": False}
    assert (c["train_micro_batch_size_per_gpu"], c["gradient_accumulation_steps"], c["train_batch_size"]) == (2, 3, 24)
    assert c["gradient_clipping"] == 0.5
    assert "checkpoint" not in c
    assert ds_config(_cfg(), 2, load_universal=True)["checkpoint"] == {"load_universal": True}


def test_raw_deepspeed_keys_merge_into_nested_blocks():
    c = ds_config(_cfg("zero=stage3", "+deepspeed.zero_optimization.stage3_prefetch_bucket_size=1000",
                       "+deepspeed.wall_clock_breakdown=true"), 2)
    assert c["zero_optimization"]["stage"] == 3  # kept
    assert c["zero_optimization"]["stage3_prefetch_bucket_size"] == 1000
    assert c["wall_clock_breakdown"] is True


@pytest.mark.parametrize("overrides, message", [
    (["train.precision=fp16", "cluster.accelerator=cpu"], "fp16 is not available on CPU"),
    (["zero=stage2", "zero.offload_param=true"], "offload_param needs zero.stage=3"),
    (["zero.stage=4"], "zero.stage must be"),
])
def test_impossible_combinations_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        ds_config(_cfg(*overrides), 2)


def test_schedule_warms_up_then_decays_over_its_own_length():
    cfg = _cfg("optim.lr=1.0", "optim.min_lr=0.1", "optim.warmup_steps=4", "optim.lr_decay_steps=20",
               "train.max_steps=10")
    f = lr_lambda(cfg)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # Halfway through the cosine (step 12 of 4..20), not at its end as max_steps=10 would put it.
    assert f(12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(20) == pytest.approx(0.1) and f(30) == pytest.approx(0.1)

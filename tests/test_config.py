"""Every shipped config composes, and a wrong key or type stops a job before any work."""


import re
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException

from conftest import REPO, run_module
from dataprep.config import DataprepConfig, register as register_dataprep
from pretrain.config import PretrainConfig, register as register_pretrain

CONF = REPO / "conf"
register_dataprep()
register_pretrain()


def _compose(name, overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_dataprep_config_composes_typed():
    cfg = OmegaConf.to_object(_compose("dataprep"))
    assert isinstance(cfg, DataprepConfig)
    assert cfg.output_dir == "outputs/corpus"
    assert cfg.ingest.input_dir.endswith("/warc")


@pytest.mark.parametrize("group", ["model", "zero", "cluster", "optim"])
def test_every_group_option_composes(group):
    options = _group_options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = OmegaConf.to_object(_compose("pretrain", [f"{group}={option}"]))
        assert isinstance(cfg, PretrainConfig)


def test_pretrain_defaults():
    cfg = OmegaConf.to_object(_compose("pretrain"))
    assert cfg.zero.stage == 2 and cfg.cluster.name == "local" and cfg.cluster.nproc == 2
    assert cfg.resume == "auto"
    m = OmegaConf.to_object(_compose("pretrain", ["model=125m"])).model
    assert (m.n_layer, m.d_model, m.n_head, m.seq_len) == (12, 768, 12, 2048)


def test_unknown_key_is_rejected_naming_it():
    with pytest.raises(ConfigCompositionException) as e:
        _compose("pretrain", ["bogus_key=1"])
    assert "bogus_key" in str(e.value)
    with pytest.raises(ConfigCompositionException) as e:
        _compose("pretrain", ["train.bogus_steps=1"])
    assert "bogus_steps" in str(e.value)


def test_wrong_type_is_rejected_naming_it():
    with pytest.raises(ConfigCompositionException) as e:
        _compose("pretrain", ["train.max_steps=abc"])
    assert "max_steps" in str(e.value) + str(e.value.__cause__)


def test_cli_fails_at_once_naming_the_key():
    proc = run_module("pretrain", "model=tiny", "bogus_key=1", check=False, timeout=60)
    assert proc.returncode != 0
    assert "bogus_key" in proc.stderr + proc.stdout
    proc = run_module("pretrain", "model=tiny", "train.max_steps=ten", check=False, timeout=60)
    assert proc.returncode != 0
    assert "train.max_steps" in proc.stderr + proc.stdout
    proc = run_module("dataprep", "filters.min_chars=many", check=False, timeout=60)
    assert proc.returncode != 0
    assert "filters.min_chars" in proc.stderr + proc.stdout


@pytest.mark.parametrize("override, message", [
    ("train.precision=fp8", "train.precision must be one of fp32, bf16, fp16"),
    ("train.micro_batch_size=0", "train.micro_batch_size must be >= 1"),
    ("train.log_every_steps=0", "train.log_every_steps must be >= 1"),
    ("zero.stage=4", "zero.stage must be one of 0, 1, 2, 3"),
    ("zero.offload_param=true", "zero.offload_param needs zero.stage=3"),
    ("data.val_fraction=1.5", "data.val_fraction must be in [0, 1)"),
    ("optim.betas=[0.9]", "optim.betas must be two numbers"),
    ("cluster.name=bogus", "cluster.name must be one of"),
])
def test_values_are_checked_by_the_schema_naming_the_key(override, message):
    """Every job builds its config through the schema, so a bad value stops each the same way."""
    with pytest.raises(ValueError, match=re.escape(message)):
        OmegaConf.to_object(_compose("pretrain", [override]))


def test_a_bad_value_stops_the_cli_before_any_work():
    for module in ("pretrain", "launch"):
        proc = run_module(module, "train.precision=fp8", check=False, timeout=60)
        assert proc.returncode != 0
        assert f"{module}: train.precision must be one of fp32, bf16, fp16, not 'fp8'" in proc.stderr
        assert "Traceback" not in proc.stderr

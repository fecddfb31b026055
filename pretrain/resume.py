"""Continuing a run: `resume=<run_dir>` reloads the run's saved config, and every resume checks
that nothing which decides what is trained, or in what order, has changed.

`python -m launch resume=runs/x train.max_steps=600` trains on with the config saved in
runs/x/config.yaml; the overrides given apply on top. Overrides that would break exact
continuation (the model's shape, the data order, the learning-rate schedule) are refused,
naming the key; the world size, micro batch (at the same global batch), ZeRO stage,
precision, checkpoint and logging cadence, and max_steps may change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from omegaconf import OmegaConf

from dataprep.overrides import override_key

from pretrain.checkpoint import Checkpointer, checkpoint_folder
from pretrain.config import PretrainConfig
from pretrain.data import BatchLayout
from pretrain.model import ModelConfig

CONFIG_FILE = "config.yaml"


class ContinuationError(ValueError):
    """A checkpoint this run cannot continue exactly (the message says why and what to do)."""

# Model keys that may change on resume: they change how, not what, is computed.
MODEL_FREE = {"activation_checkpointing"}
OTHER_FROZEN = ("data.seed", "data.val_fraction", "optim.lr", "optim.min_lr", "optim.warmup_steps",
                "optim.lr_decay_steps")


def saved_config(cfg: PretrainConfig) -> PretrainConfig:
    """The config as a run saves it: the schedule length made explicit, so that continuing with
    a larger train.max_steps keeps the schedule the run started on."""
    optim = dataclasses.replace(cfg.optim, lr_decay_steps=cfg.optim.lr_decay_steps or cfg.train.max_steps)
    return dataclasses.replace(cfg, optim=optim)


def to_yaml(cfg: PretrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(saved_config(cfg)), resolve=True)


def load(path: str | Path) -> PretrainConfig:
    """A saved config.yaml, checked against the schema."""
    merged = OmegaConf.merge(OmegaConf.structured(PretrainConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)


def frozen_values(cfg: PretrainConfig) -> dict[str, Any]:
    """The values that must match between a checkpoint and the run continuing it."""
    model = cfg.model.resolve()
    out = {f"model.{f.name}": getattr(model, f.name) for f in dataclasses.fields(ModelConfig)
           if f.name not in MODEL_FREE}
    resolved = saved_config(cfg)
    for key in OTHER_FROZEN:
        group, name = key.split(".")
        out[key] = getattr(getattr(resolved, group), name)
    return out


def check_continuation(saved: PretrainConfig, cfg: PretrainConfig, where: str) -> None:
    """Raise naming every key whose value differs from the run being continued."""
    old, new = frozen_values(saved), frozen_values(cfg)
    changed = [k for k in old if old[k] != new[k] and not (k == "model.vocab_size" and new[k] is None)]
    if changed:
        lines = "\n".join(f"  {k}: {old[k]!r} in {where}, {new[k]!r} now" for k in changed)
        hint = ""
        if changed == ["optim.lr_decay_steps"]:
            hint = (f"\nTo continue on the same schedule, pass optim.lr_decay_steps="
                    f"{old['optim.lr_decay_steps']} (it defaults to train.max_steps).")
        raise ContinuationError(
            "these settings differ from the run being continued and would break exact "
            f"continuation:\n{lines}\nStart a new run_dir to change them.{hint}"
        )


def _override_key(override: str) -> str | None:
    """The key an override sets (None: it deletes one, or it is Hydra's own)."""
    key = override_key(override)
    return None if "=" not in override or key.startswith("hydra") else key


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg[part] if isinstance(cfg, dict) else getattr(cfg, part)
    return cfg


def _set(cfg: Any, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        cfg = cfg[part] if isinstance(cfg, dict) else getattr(cfg, part)
    if isinstance(cfg, dict):
        cfg[last] = value
    else:
        setattr(cfg, last, value)


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / "checkpoints").is_dir()


def apply(cfg: PretrainConfig, overrides: Iterable[str]) -> PretrainConfig:
    """With `resume=<run_dir>`: the run's saved config, with the keys the command line set
    (`overrides`, Hydra's override strings, already applied to `cfg`) taken from `cfg`.
    Otherwise `cfg` unchanged. Used by `python -m pretrain` and by the launcher."""
    if cfg.resume in ("auto", "never") or not is_run_dir(cfg.resume):
        return cfg
    run_dir = Path(cfg.resume).resolve()
    saved = load(run_dir / CONFIG_FILE)
    out = dataclasses.replace(saved)  # a shallow copy; nested groups are replaced below
    for group in dataclasses.fields(PretrainConfig):
        value = getattr(saved, group.name)
        if dataclasses.is_dataclass(value):
            setattr(out, group.name, dataclasses.replace(value))
        elif isinstance(value, dict):
            setattr(out, group.name, dict(value))
    for override in overrides:
        key = _override_key(override)
        if key is None or key in ("resume", "run_dir"):
            continue
        # `zero=stage3` replaces the whole group; `train.max_steps=N` one key. Either way the
        # value Hydra composed for that key is the one the user asked for.
        _set(out, key, _get(cfg, key))
    given_run_dir = Path(cfg.run_dir).resolve()
    if any(_override_key(o) == "run_dir" for o in overrides) and given_run_dir != run_dir:
        raise ContinuationError(
            f"resume={cfg.resume} continues that run in place; run_dir={cfg.run_dir} differs. "
            "To start a new run from one of its checkpoints use "
            "resume=<run_dir>/checkpoints/step_N run_dir=<new run_dir>."
        )
    out.run_dir = str(run_dir)
    out.resume = str(run_dir)
    check_continuation(saved, out, str(run_dir / CONFIG_FILE))
    return out


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from: `folder/tag`, what its complete.json says, and
    whether it loads through DeepSpeed's universal format (another world size, stage or
    precision)."""

    folder: Path
    tag: str
    info: dict
    universal: bool

    @property
    def path(self) -> Path:
        return self.folder / self.tag

    @property
    def step(self) -> int:
        return int(self.info["step"])


def decide(cfg: PretrainConfig, ckpt: Checkpointer, layout: BatchLayout, fingerprint: str) -> Optional[ResumePoint]:
    """The one resume decision, made before any work: what to load (None: start fresh), from
    `resume` (auto | never | a run dir | a checkpoint folder), the run's checkpoints, and the
    data fingerprint. Raises ContinuationError for a checkpoint this run cannot continue
    exactly."""
    if cfg.resume == "auto":
        tag = ckpt.latest_tag()
        if not tag:
            return None
        folder = ckpt.dir
    elif cfg.resume == "never":
        if ckpt.latest_tag():
            raise RuntimeError(
                f"{cfg.run_dir} already has checkpoints; use resume=auto to continue it or a new run_dir"
            )
        return None
    else:
        step_dir = checkpoint_folder(cfg.resume)
        folder, tag = step_dir.parent, step_dir.name
    info = ckpt.info(folder, tag)
    universal = check_resumable(cfg, info, folder / tag, layout, fingerprint)
    return ResumePoint(folder, tag, info, universal)


def check_resumable(cfg: PretrainConfig, info: dict, where: Path, layout: BatchLayout,
                     fingerprint: str) -> bool:
    """Refuse a checkpoint this run cannot continue exactly; returns whether it must be loaded
    through DeepSpeed's universal format (another world size, ZeRO stage or precision)."""
    config_file = where / CONFIG_FILE
    if config_file.is_file():
        check_continuation(load(config_file), cfg, str(config_file))
    if info.get("data_fingerprint", fingerprint) != fingerprint:
        raise ContinuationError(
            f"data.manifest={cfg.data.manifest} holds other shards than the data {where} was trained "
            "on; continuing would not read the same samples. Start a new run_dir."
        )
    if info.get("global_batch", layout.global_batch) != layout.global_batch:
        raise ContinuationError(
            f"checkpoint {where} was trained with global batch {info['global_batch']} "
            f"(micro batch x grad accumulation x ranks); this run has {layout.micro_batch_size} x "
            f"{layout.grad_accum_steps} x {layout.world_size} = {layout.global_batch}. Set "
            "train.micro_batch_size / train.grad_accum_steps so the product stays the same."
        )
    saved = (info.get("world_size", layout.world_size), info.get("zero_stage", cfg.zero.stage),
             info.get("precision", cfg.train.precision))
    now = (layout.world_size, cfg.zero.stage, cfg.train.precision)
    if saved == now:
        return False
    what = (f"checkpoint {where} (ZeRO-{saved[1]}, {saved[2]}, {saved[0]} ranks) cannot continue as "
            f"ZeRO-{now[1]}, {now[2]}, {now[0]} ranks: ")
    if saved[1] == 0 or now[1] == 0:
        if saved[1] == now[1] == 0 and saved[2] == now[2] == "fp32":
            return False  # ZeRO-0 fp32 keeps whole optimizer states: any world size loads them
        raise ContinuationError(what + "changing world size, stage or precision goes through "
                                "DeepSpeed's universal format, which needs ZeRO stage 1-3 on both sides.")
    if (saved[1] == 3) != (now[1] == 3):
        raise ContinuationError(what + "DeepSpeed's universal format does not carry a checkpoint "
                                "between ZeRO-3 and stages 1-2; keep the stage.")
    return True

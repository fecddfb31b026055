"""Checkpoints that are complete or absent.

Each checkpoint is written by all ranks into `checkpoints/.tmp-step_N/`, then rank 0 renames
it to `checkpoints/step_N/` and only then moves `checkpoints/latest` (a one-line file naming
the tag, the convention DeepSpeed's loader reads). A crash at any point leaves `latest` on the
previous complete checkpoint; leftover `.tmp-*` folders are removed at the next start.

A checkpoint folder holds DeepSpeed's files (model, optimizer shards, LR schedule, client
state), `rng_rankNNNNN.json` per rank, `config.yaml` (the run's resolved config) and
`complete.json` (step, data position, world size, ZeRO stage: readable without unpickling).
Resuming on another world size or ZeRO stage first converts it, once, into DeepSpeed's
universal format under `step_N/universal/`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
COMPLETE = "complete.json"
UNIVERSAL = "universal"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict[str, Any]:
    """This process's random generators, as JSON (loading it can run no code)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


# The scripts DeepSpeed copies beside its checkpoints, removed after each save.
RECOVERY_SCRIPTS = ("zero_to_fp32.py", "zero_to_torch.py")


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds an object that loading would have to construct by running code."""


@contextlib.contextmanager
def weights_only_loading(what: str | Path):
    """Every torch.load inside (ours, DeepSpeed's engine, its universal converter, zero_to_fp32)
    runs with weights_only=True: torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides the
    weights_only=False DeepSpeed passes, and torch's safe globals admit the few DeepSpeed
    classes its files hold. Anything else in a file (a pickled callable) is refused."""
    from pretrain import engine as deepspeed_engine

    deepspeed_engine.deepspeed_env()
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        with torch.serialization.safe_globals(deepspeed_engine.checkpoint_classes()):
            yield
    except pickle.UnpicklingError as e:
        detail = str(e).split("\n")
        unsafe = next((line.strip() for line in detail if "GLOBAL" in line), detail[0])
        raise UnsafeCheckpointError(
            f"refused to load {what}: a file in it holds an object outside the tensors and the "
            f"DeepSpeed classes a checkpoint holds ({unsafe}); unpickling it could run code. "
            "Load only checkpoints whose files you trust."
        ) from None
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def checkpoint_folder(path: str | Path) -> Path:
    """The step_N folder that `path` (run dir, checkpoints folder, or step folder) stands for."""
    p = Path(path)
    if (p / "checkpoints" / "latest").is_file():
        p = p / "checkpoints"
    if (p / "latest").is_file():
        p = p / (p / "latest").read_text().strip()
    if not (p / COMPLETE).is_file():
        raise FileNotFoundError(f"{path}: not a run directory or a complete checkpoint")
    return p


class Checkpointer:
    def __init__(self, directory: str | Path, keep_last: int, rank: int):
        self.dir = Path(directory)
        self.keep_last = keep_last
        self.rank = rank

    # --- finding ---------------------------------------------------------------------------
    def latest_tag(self) -> Optional[str]:
        """The tag `latest` names, if that checkpoint is complete."""
        pointer = self.dir / "latest"
        if not pointer.is_file():
            return None
        tag = pointer.read_text().strip()
        if not (self.dir / tag / COMPLETE).is_file():
            raise RuntimeError(f"{pointer} names {tag}, which is not a complete checkpoint")
        return tag

    def clean_partial(self) -> None:
        """Remove checkpoints whose writing never finished (rank 0, before training starts)."""
        if self.rank == 0 and self.dir.is_dir():
            for p in self.dir.glob(TMP_PREFIX + "*"):
                log.warning("removing incomplete checkpoint %s", p)
                shutil.rmtree(p, ignore_errors=True)
        _barrier()

    # --- writing ---------------------------------------------------------------------------
    def save(self, engine, step: int, client_state: dict[str, Any], config_yaml: str = "",
             sleep_s: float = 0.0) -> Path:
        """All ranks: write checkpoint `step`; `client_state` (JSON-able) also goes to
        complete.json. `sleep_s` (a test hook) pauses each rank once its files are written."""
        tag = tag_for(step)
        tmp = TMP_PREFIX + tag
        if self.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.dir / tmp, ignore_errors=True)
        _barrier()
        engine.save_checkpoint(str(self.dir), tag=tmp, client_state=client_state, save_latest=False)
        (self.dir / tmp / f"rng_rank{self.rank:05d}.json").write_text(json.dumps(rng_state()))
        if self.rank == 0 and config_yaml:
            (self.dir / tmp / "config.yaml").write_text(config_yaml)
        if sleep_s:
            log.warning("debug.sleep_in_save_s: sleeping %.1f s inside the save of %s", sleep_s, tag)
            time.sleep(sleep_s)
        _barrier()
        if self.rank == 0:
            info = {"step": step, "tag": tag, **client_state}
            (self.dir / tmp / COMPLETE).write_text(json.dumps(info, indent=1) + "\n")
            final = self.dir / tag
            if final.exists():
                shutil.rmtree(final)
            os.rename(self.dir / tmp, final)
            pointer_tmp = self.dir / "latest.tmp"
            pointer_tmp.write_text(tag + "\n")
            os.replace(pointer_tmp, self.dir / "latest")
            for script in RECOVERY_SCRIPTS:  # they load with weights_only=False: python -m pretrain.export instead
                (self.dir / script).unlink(missing_ok=True)
            self._prune()
        _barrier()
        return self.dir / tag

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        done = sorted(p for p in self.dir.glob("step_*") if (p / COMPLETE).is_file())
        for p in done[: -self.keep_last]:
            shutil.rmtree(p, ignore_errors=True)

    # --- reading ---------------------------------------------------------------------------
    @staticmethod
    def info(directory: Path, tag: str) -> dict[str, Any]:
        """What complete.json says about a checkpoint (step, world size, ZeRO stage, ...)."""
        path = Path(directory) / tag / COMPLETE
        if not path.is_file():
            raise FileNotFoundError(f"{path.parent} is not a complete checkpoint (no {COMPLETE})")
        return json.loads(path.read_text())

    def prepare_universal(self, directory: Path, tag: str) -> None:
        """All ranks: make sure `directory/tag/universal` exists (rank 0 converts it once,
        atomically), so that another world size or ZeRO stage can load the checkpoint."""
        from pretrain import engine as deepspeed_engine

        final = Path(directory) / tag / UNIVERSAL
        if self.rank == 0 and not final.is_dir():
            tmp = final.with_name(TMP_PREFIX + UNIVERSAL)
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("converting %s to DeepSpeed's universal checkpoint format", final.parent)
            with weights_only_loading(final.parent):
                deepspeed_engine.to_universal(final.parent, tmp)
            (final.parent / "latest_universal").unlink(missing_ok=True)  # DeepSpeed's pointer
            os.rename(tmp, final)
        _barrier()

    def load(self, engine, directory: Path, tag: str, universal: bool = False) -> dict[str, Any]:
        """Load model, optimizer and LR schedule into `engine`; returns the client state.
        `universal`: from the universal copy (the engine was built with load_universal)."""
        load_dir, load_tag = (Path(directory) / tag, UNIVERSAL) if universal else (directory, tag)
        with weights_only_loading(Path(directory) / tag):
            path, client_state = engine.load_checkpoint(
                str(load_dir), tag=load_tag, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {directory / tag}")
        rng_file = directory / tag / f"rng_rank{self.rank:05d}.json"
        if rng_file.is_file():
            set_rng_state(json.loads(rng_file.read_text()))
        return client_state

"""`python -m torch.distributed.run ... tests/device_guard.py [pretrain overrides]`: one training
rank under two test instruments, for tests/test_device_guard.py.

1. A stand-in accelerator. The engine is made to report the device `fpga:0` (a device type
   torch names but nothing here serves) instead of `cpu`. A torch function mode runs every tensor put on
   that device on the CPU, but marks it, marks whatever is computed from a marked tensor, and
   makes marked tensors report `fpga:0` as their device; moving one to the CPU unmarks it.
   A tensor created without a device (a host tensor) stays unmarked.
2. A guard around torch.distributed's collectives. A collective called from our code (a frame
   under pretrain/) with an unmarked tensor fails the rank, as a CPU tensor fails in a NCCL
   group. Every collective and every device-to-host read (`item`, `tolist`, `float`, ...) of a
   marked tensor from our code is recorded with the number of optimizer steps done, in
   run_dir/guard_rank{R}.json.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

REPO = Path(__file__).resolve().parents[1]
OURS = str(REPO / "pretrain") + os.sep
# A device type torch knows by name but no backend of this machine serves: standing for a GPU.
FAKE = torch.device("fpga", 0)
CPU = torch.device("cpu")
MARK = "_on_fake_device"

state = {"micro_steps": 0, "accum": 1, "collectives": [], "reads": [], "violations": []}


def marked(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, MARK, False)


def _mark(t):
    if isinstance(t, torch.Tensor):
        setattr(t, MARK, True)
    return t


def _is_fake(device) -> bool:
    return device is not None and torch.device(device).type == FAKE.type


def _our_caller() -> str | None:
    """file:line of the nearest frame that is ours (pretrain/), skipping torch and this file."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(OURS):
            return f"{Path(name).name}:{frame.f_lineno}"
        if not (name == __file__ or f"{os.sep}torch{os.sep}" in name):
            return None
        frame = frame.f_back
    return None


def _steps_done() -> int:
    return state["micro_steps"] // state["accum"]


READS = {"item", "tolist", "__float__", "__int__", "__bool__", "numpy", "__index__"}
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "zeros_like", "ones_like",
             "empty_like", "full_like", "rand", "randn", "randint", "linspace"}


class FakeDevice(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name == "__get__" and getattr(func, "__self__", None) is torch.Tensor.device:
            return FAKE if marked(args[0]) else func(*args, **kwargs)
        if name in READS and marked(args[0]) and (where := _our_caller()):
            state["reads"].append({"step": _steps_done(), "what": name, "where": where})
        target = "keep"
        if name in ("to", "cuda", "cpu") and isinstance(args[0], torch.Tensor):
            device = kwargs.get("device")
            for a in args[1:]:
                if isinstance(a, (str, torch.device)):
                    device = a
                elif isinstance(a, torch.Tensor):
                    device = FAKE if marked(a) else a.device
            if name == "cpu" or (device is not None and not _is_fake(device)):
                target = "host"
            elif _is_fake(device):
                target = "device"
        elif name in FACTORIES and "device" in kwargs:
            target = "device" if _is_fake(kwargs["device"]) else "host"
        elif name in FACTORIES and name.endswith("_like"):
            target = "device" if marked(args[0]) else "host"
        if target == "device":
            kwargs = {k: (CPU if k == "device" else v) for k, v in kwargs.items()}
            args = tuple(CPU if isinstance(a, (str, torch.device)) and _is_fake(a) else a for a in args)
        out = func(*args, **kwargs)
        if target == "device":
            return tree_map(_mark, out)
        if target == "host":
            if isinstance(out, torch.Tensor) and marked(out):
                out = out.clone()  # `.to(cpu)` of a CPU tensor is itself; the copy is the host one
            return out
        if name not in READS and any(marked(a) for a in tree_flatten((args, kwargs))[0]):
            tree_map(_mark, out)
        return out


def guard(name: str, collective):
    def guarded(*args, **kwargs):
        where = _our_caller()
        if where:
            tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
            state["collectives"].append({"step": _steps_done(), "what": name, "where": where})
            host = [t for t in tensors if not marked(t)]
            if host:
                message = f"{name} from {where} got a tensor on the host, not on the engine's device {FAKE}"
                state["violations"].append(message)
                _dump()
                raise RuntimeError(message)
        return collective(*args, **kwargs)

    return guarded


COLLECTIVES = ("all_reduce", "reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter",
               "reduce_scatter_tensor", "all_to_all_single", "gather", "scatter", "barrier",
               "all_gather_object", "broadcast_object_list", "gather_object")


def _dump() -> None:
    run_dir = state.get("run_dir")
    if run_dir:
        rank = os.environ.get("RANK", "0")
        Path(run_dir, f"guard_rank{rank}.json").write_text(json.dumps(state, default=str))


def install() -> None:
    for name in COLLECTIVES:
        setattr(dist, name, guard(name, getattr(dist, name)))

    from pretrain import engine as engine_module

    build_engine = engine_module.build_engine

    def counted(model, cfg, world_size, load_universal=False):
        engine = build_engine(model, cfg, world_size, load_universal=load_universal)
        state["accum"], state["run_dir"] = cfg.train.grad_accum_steps, cfg.run_dir
        step = engine.step

        def step_and_count(*a, **k):
            state["micro_steps"] += 1
            return step(*a, **k)

        engine.step = step_and_count
        return engine

    engine_module.build_engine = counted
    engine_module.device_of = lambda engine: FAKE
    atexit.register(_dump)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    install()
    from pretrain.__main__ import main

    with FakeDevice():
        main()
    _dump()

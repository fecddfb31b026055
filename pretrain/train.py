"""The training loop: one process of a (possibly multi-process) DeepSpeed run."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist

from pretrain import engine as ds
from pretrain import resume
from pretrain.checkpoint import Checkpointer, checkpoint_folder
from pretrain.config import PretrainConfig
from pretrain.data import BatchLayout, PackedSamples, TokenStream, data_fingerprint
from pretrain.metrics import MetricsLog, memory_gb, peak_tflops
from pretrain.model import GPT, ModelConfig

log = logging.getLogger("pretrain")


def _setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[%(asctime)s rank{rank}] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )


def _exit_with_launcher() -> None:
    """A rank whose launcher died (torchrun killed) stops instead of training on as an orphan
    that would keep writing checkpoints next to a restarted run."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                log.error("launcher (pid %d) is gone; exiting", parent)
                os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _reduce(values: list[float], op=None) -> list[float]:
    """Element-wise mean (op None) or max (op MAX) of `values` over the ranks."""
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        if op is None:
            t /= dist.get_world_size()
    return t.tolist()


def resolve_model(cfg: PretrainConfig, vocab_size: int) -> ModelConfig:
    m = cfg.model
    if m.vocab_size is None:
        return replace(m, vocab_size=vocab_size)
    if m.vocab_size < vocab_size:
        raise ValueError(
            f"model.vocab_size={m.vocab_size} is smaller than the tokenizer's {vocab_size} tokens"
        )
    return m


@torch.no_grad()
def evaluate(engine, samples: PackedSamples, cfg: PretrainConfig, rank: int, world: int) -> float:
    engine.eval()
    layout = BatchLayout(cfg.train.micro_batch_size, 1, world)
    losses = []
    for b in range(cfg.train.eval_batches):
        idx = [i % len(samples) for i in layout.indices(b, 0, rank)]
        x, y = samples.batch(idx)
        _, loss = engine(x.to(engine.device), y.to(engine.device))
        losses.append(float(loss))
    engine.train()
    return _reduce([sum(losses) / len(losses)])[0]


def train_step(engine, samples: PackedSamples, layout: BatchLayout, step: int, rank: int) -> tuple[float, list[int]]:
    """One optimizer step (all micro batches) on this rank: (its mean loss, the sample indices)."""
    losses, read = [], []
    for micro in range(layout.grad_accum_steps):
        indices = layout.indices(step, micro, rank)
        x, y = samples.batch(indices)
        _, loss = engine(x.to(engine.device), y.to(engine.device))
        engine.backward(loss)
        engine.step()
        losses.append(loss.detach())
        read.extend(indices)
    return float(torch.stack(losses).float().mean()), read


def find_checkpoint(cfg: PretrainConfig, ckpt: Checkpointer) -> Optional[tuple[Path, str]]:
    """(checkpoints folder, tag) to continue from, or None to start fresh."""
    if cfg.resume == "auto":
        tag = ckpt.latest_tag()
        return (ckpt.dir, tag) if tag else None
    if cfg.resume == "never":
        if ckpt.latest_tag():
            raise RuntimeError(
                f"{cfg.run_dir} already has checkpoints; use resume=auto to continue it or a new run_dir"
            )
        return None
    step_dir = checkpoint_folder(cfg.resume)
    return step_dir.parent, step_dir.name


def check_resumable(cfg: PretrainConfig, info: dict, where: Path, layout: BatchLayout,
                    fingerprint: str) -> bool:
    """Refuse a checkpoint this run cannot continue exactly; returns whether it must be loaded
    through DeepSpeed's universal format (another world size, ZeRO stage or precision)."""
    config_file = where / resume.CONFIG_FILE
    if config_file.is_file():
        resume.check_continuation(resume.load(config_file), cfg, str(config_file))
    if info.get("data_fingerprint", fingerprint) != fingerprint:
        raise resume.ContinuationError(
            f"data.manifest={cfg.data.manifest} holds other shards than the data {where} was trained "
            "on; continuing would not read the same samples. Start a new run_dir."
        )
    if info.get("global_batch", layout.global_batch) != layout.global_batch:
        raise resume.ContinuationError(
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
        raise resume.ContinuationError(what + "changing world size, stage or precision goes through "
                                       "DeepSpeed's universal format, which needs ZeRO stage 1-3 on both sides.")
    if (saved[1] == 3) != (now[1] == 3):
        raise resume.ContinuationError(what + "DeepSpeed's universal format does not carry a checkpoint "
                                       "between ZeRO-3 and stages 1-2; keep the stage.")
    return True


def run(cfg: PretrainConfig, on_checkpoint: Optional[Callable[[int, Path, dict], None]] = None) -> dict:
    """Train until cfg.train.max_steps; returns a summary (rank 0's view).

    on_checkpoint(step, path, metrics) runs on every rank after each complete checkpoint
    (launch/ray_cluster.py reports it to Ray Train)."""
    rank = int(os.environ.get("RANK", "0"))
    _setup_logging(rank)
    # DeepSpeed's ZeRO calls a collective that torch deprecated, once per step per rank.
    warnings.filterwarnings("ignore", message=r"`torch.distributed.\w+` is deprecated", category=FutureWarning)
    if "TORCHELASTIC_RUN_ID" in os.environ:
        _exit_with_launcher()
    ds.init_distributed(cfg)
    rank, world = dist.get_rank(), dist.get_world_size()
    run_dir = Path(cfg.run_dir)
    ckpt = Checkpointer(run_dir / "checkpoints", cfg.checkpoint.keep_last, rank)

    stream = TokenStream(cfg.data.manifest)
    fingerprint = data_fingerprint(stream.manifest)
    mcfg = resolve_model(cfg, stream.vocab_size)
    layout = BatchLayout(cfg.train.micro_batch_size, cfg.train.grad_accum_steps, world)

    # Which checkpoint (if any) to continue from, and whether it can be, decided before any work.
    resume_from = find_checkpoint(cfg, ckpt)
    info, universal = {}, False
    if resume_from:
        info = ckpt.info(*resume_from)
        universal = check_resumable(cfg, info, resume_from[0] / resume_from[1], layout, fingerprint)

    config_yaml = resume.to_yaml(cfg)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / resume.CONFIG_FILE).write_text(config_yaml)
    ckpt.clean_partial()
    if universal:
        ckpt.prepare_universal(*resume_from)

    train_set = PackedSamples(stream, mcfg.seq_len, cfg.data.seed, "train", cfg.data.val_fraction)
    val_set = (
        PackedSamples(stream, mcfg.seq_len, cfg.data.seed, "val", cfg.data.val_fraction)
        if cfg.data.val_fraction > 0
        else None
    )

    torch.manual_seed(cfg.train.seed)
    model = GPT(mcfg)
    flops_per_token = model.flops_per_token()
    n_params = model.num_params()
    engine = ds.build_engine(model, cfg, world, load_universal=universal)
    lr_at = ds.lr_lambda(cfg)

    start_step = 0
    if resume_from:
        ckpt.load(engine, *resume_from, universal=universal)
        if universal:
            ds.repair_universal_load(engine, cfg)
        start_step = int(info["step"])
        consumed = info.get("consumed_samples", start_step * layout.global_batch)
        assert consumed == start_step * layout.global_batch, (consumed, start_step)
        log.info("resumed from %s at step %d (%d samples consumed)%s", resume_from[0] / resume_from[1],
                 start_step, consumed,
                 f"; written by {info['world_size']} ranks, ZeRO-{info['zero_stage']}, loaded through the "
                 "universal format" if universal else "")

    metrics = MetricsLog(run_dir, rank == 0, start_step, tensorboard=cfg.metrics.tensorboard)
    sample_log = _SampleLog(run_dir, rank, start_step) if cfg.debug.record_samples else None
    peak = peak_tflops(cfg.metrics.peak_tflops)
    seq_tokens = layout.global_batch * mcfg.seq_len
    log.info(
        "model: %.2fM parameters (%s: %d layers, d_model %d, %d heads, vocab %d) | data: %d tokens, "
        "%d train samples of %d | %d ranks, global batch %d, ZeRO-%d, %s%s",
        n_params / 1e6, mcfg.style, mcfg.n_layer, mcfg.d_model, mcfg.n_head, mcfg.vocab_size,
        stream.num_tokens, len(train_set), mcfg.seq_len, world, layout.global_batch, cfg.zero.stage,
        cfg.train.precision, ", activation checkpointing" if mcfg.activation_checkpointing else "",
    )

    max_steps = cfg.train.max_steps
    summary = {"run_dir": str(run_dir), "start_step": start_step, "max_steps": max_steps}
    bar = _progress_bar(cfg, rank, start_step, max_steps)
    with bar, (_redirect_logging() if not bar.disable else contextlib.nullcontext()):
        for step in range(start_step, max_steps):
            t0 = time.perf_counter()
            local_loss, read = train_step(engine, train_set, layout, step, rank)
            loss_value = _reduce([local_loss])[0]
            seconds = time.perf_counter() - t0
            done = step + 1
            if sample_log:
                sample_log.write(done, world, read)
            record = {
                "step": done,
                "loss": loss_value,
                "lr": cfg.optim.lr * lr_at(step),
                "grad_norm": _grad_norm(engine),
                "tokens_per_s": seq_tokens / seconds,
                "mfu": (flops_per_token * seq_tokens / seconds) / (peak * 1e12 * world) if peak else None,
                "consumed_samples": done * layout.global_batch,
                "seconds": seconds,
            }
            if val_set is not None and (
                done == max_steps
                or (cfg.train.eval_every_steps and done % cfg.train.eval_every_steps == 0)
            ):
                record["val_loss"] = evaluate(engine, val_set, cfg, rank, world)
                record["val_ppl"] = math.exp(min(record["val_loss"], 80.0))
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{record['lr']:.2e}",
                            tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
            if done % cfg.train.log_every_steps == 0 or done == max_steps or "val_loss" in record:
                record.update(memory_gb(_reduce))
                metrics.write(record)
                log.info(
                    "step %d/%d  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s%s  mem %.2f GB%s", done, max_steps,
                    loss_value, record["lr"], record["grad_norm"] or float("nan"), record["tokens_per_s"],
                    f"  mfu {record['mfu']:.1%}" if record["mfu"] is not None else "",
                    record.get("cuda_max_allocated_gb") or record["rss_gb"],
                    f"  val_loss {record['val_loss']:.4f} ppl {record['val_ppl']:.1f}" if "val_loss" in record else "",
                )
            summary.setdefault("first_loss", loss_value)
            summary["last_loss"] = loss_value
            if "val_loss" in record:
                summary["val_loss"] = record["val_loss"]
            every = cfg.checkpoint.every_steps
            if (every > 0 and done % every == 0) or (done == max_steps and cfg.checkpoint.at_end):
                path = ckpt.save(
                    engine,
                    done,
                    {
                        "step": done,
                        "consumed_samples": done * layout.global_batch,
                        "global_batch": layout.global_batch,
                        "world_size": world,
                        "zero_stage": cfg.zero.stage,
                        "precision": cfg.train.precision,
                        "data_seed": cfg.data.seed,
                        "data_fingerprint": fingerprint,
                    },
                    config_yaml=config_yaml,
                    sleep_s=cfg.debug.sleep_in_save_s if cfg.debug.sleep_in_save_step in (0, done) else 0.0,
                )
                log.info("checkpoint %s", path)
                if on_checkpoint:
                    on_checkpoint(done, path, record)

    metrics.close()
    if rank == 0:
        summary["final_step"] = max(start_step, max_steps)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ds.shutdown()
    return summary


def _grad_norm(engine):
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    return float(norm)


def _progress_bar(cfg: PretrainConfig, rank: int, start: int, total: int):
    from tqdm import tqdm

    # disable=None: tqdm shows the bar only when its stream (stderr) is a terminal.
    disable = None if rank == 0 and cfg.train.progress_bar else True
    return tqdm(total=total, initial=start, disable=disable, unit="step", dynamic_ncols=True, leave=True)


def _redirect_logging():
    """Log lines printed above the progress bar instead of through it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


class _SampleLog:
    """debug.record_samples: the global sample indices each rank trained on, one line per step
    in run_dir/samples/rank_R.jsonl (steps after the checkpoint resumed from are dropped)."""

    def __init__(self, run_dir: Path, rank: int, start_step: int):
        folder = run_dir / "samples"
        if rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
            for path in folder.glob("rank_*.jsonl"):
                kept = [l for l in path.read_text().splitlines() if l and json.loads(l)["step"] <= start_step]
                path.write_text("".join(l + "\n" for l in kept))
        if dist.is_initialized():
            dist.barrier()
        self.path, self.rank = folder / f"rank_{rank}.jsonl", rank

    def write(self, step: int, world: int, indices: list[int]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "rank": self.rank, "world_size": world,
                                "indices": [int(i) for i in indices]}) + "\n")

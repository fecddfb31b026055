"""The training loop: one process of a (possibly multi-process) DeepSpeed run."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from pretrain import engine as ds
from pretrain.checkpoint import Checkpointer
from pretrain.config import PretrainConfig
from pretrain.data import BatchLayout, PackedSamples, TokenStream
from pretrain.metrics import MetricsLog, peak_tflops
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


def _mean_across_ranks(value: torch.Tensor) -> float:
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


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
        losses.append(loss.float())
    engine.train()
    return _mean_across_ranks(torch.stack(losses).mean())


def run(cfg: PretrainConfig) -> dict:
    """Train until cfg.train.max_steps; returns a summary (rank 0's view)."""
    rank = int(os.environ.get("RANK", "0"))
    _setup_logging(rank)
    if "TORCHELASTIC_RUN_ID" in os.environ:
        _exit_with_launcher()
    ds.init_distributed(cfg)
    rank, world = dist.get_rank(), dist.get_world_size()
    run_dir = Path(cfg.run_dir)
    ckpt = Checkpointer(run_dir / "checkpoints", cfg.checkpoint.keep_last, rank)

    # Which checkpoint (if any) to continue from, decided before any work.
    resume_from = None
    if cfg.resume == "auto":
        tag = ckpt.latest_tag()
        resume_from = (ckpt.dir, tag) if tag else None
    elif cfg.resume == "never":
        if ckpt.latest_tag():
            raise RuntimeError(
                f"{run_dir} already has checkpoints; use resume=auto to continue it or a new run_dir"
            )
    else:
        path = Path(cfg.resume)
        if (path / "latest").is_file():
            resume_from = (path, (path / "latest").read_text().strip())
        elif path.is_dir():
            resume_from = (path.parent, path.name)
        else:
            raise FileNotFoundError(f"resume={cfg.resume}: no such checkpoint")

    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    ckpt.clean_partial()

    stream = TokenStream(cfg.data.manifest)
    mcfg = resolve_model(cfg, stream.vocab_size)
    train_set = PackedSamples(stream, mcfg.seq_len, cfg.data.seed, "train", cfg.data.val_fraction)
    val_set = (
        PackedSamples(stream, mcfg.seq_len, cfg.data.seed, "val", cfg.data.val_fraction)
        if cfg.data.val_fraction > 0
        else None
    )
    layout = BatchLayout(cfg.train.micro_batch_size, cfg.train.grad_accum_steps, world)

    torch.manual_seed(cfg.train.seed)
    model = GPT(mcfg)
    flops_per_token = model.flops_per_token()
    n_params = model.num_params()
    engine = ds.build_engine(model, cfg, world)
    lr_at = ds.lr_lambda(cfg)

    start_step = 0
    if resume_from:
        state = ckpt.load(engine, *resume_from)
        if state.get("world_size") != world or state.get("global_batch") != layout.global_batch:
            raise RuntimeError(
                f"checkpoint {resume_from[1]} was written by {state.get('world_size')} ranks with "
                f"global batch {state.get('global_batch')}; this run has {world} ranks and global "
                f"batch {layout.global_batch}. Resuming on another world size is not supported yet."
            )
        start_step = int(state["step"])
        assert state["consumed_samples"] == start_step * layout.global_batch
        log.info("resumed from %s at step %d (%d samples consumed)",
                 resume_from[0] / resume_from[1], start_step, state["consumed_samples"])

    metrics = MetricsLog(run_dir / "metrics.jsonl", rank == 0, start_step)
    peak = peak_tflops(cfg.metrics.peak_tflops)
    seq_tokens = layout.global_batch * mcfg.seq_len
    log.info(
        "model: %.2fM parameters, %d layers, d_model %d, vocab %d | data: %d tokens, %d train "
        "samples of %d | %d ranks, global batch %d, ZeRO-%d, %s",
        n_params / 1e6, mcfg.n_layer, mcfg.d_model, mcfg.vocab_size, stream.num_tokens,
        len(train_set), mcfg.seq_len, world, layout.global_batch, cfg.zero.stage,
        cfg.train.precision,
    )

    max_steps = cfg.train.max_steps
    summary = {"run_dir": str(run_dir), "start_step": start_step, "max_steps": max_steps}
    device = engine.device
    for step in range(start_step, max_steps):
        t0 = time.perf_counter()
        losses = []
        for micro in range(cfg.train.grad_accum_steps):
            x, y = train_set.batch(layout.indices(step, micro, rank))
            _, loss = engine(x.to(device), y.to(device))
            engine.backward(loss)
            engine.step()
            losses.append(loss.detach().float())
        loss_value = _mean_across_ranks(torch.stack(losses).mean())
        seconds = time.perf_counter() - t0
        done = step + 1
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
        if done % cfg.train.log_every_steps == 0 or done == max_steps or "val_loss" in record:
            metrics.write(record)
            log.info(
                "step %d/%d  loss %.4f  lr %.2e  %.0f tok/s%s", done, max_steps, loss_value,
                record["lr"], record["tokens_per_s"],
                f"  val_loss {record['val_loss']:.4f}" if "val_loss" in record else "",
            )
        summary.setdefault("first_loss", loss_value)
        summary["last_loss"] = loss_value
        if done % cfg.checkpoint.every_steps == 0 or done == max_steps:
            path = ckpt.save(
                engine,
                done,
                {
                    "step": done,
                    "consumed_samples": done * layout.global_batch,
                    "global_batch": layout.global_batch,
                    "world_size": world,
                    "data_seed": cfg.data.seed,
                },
            )
            log.info("checkpoint %s", path)

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

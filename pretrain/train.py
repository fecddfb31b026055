"""The training loop: one process of a (possibly multi-process) DeepSpeed run.

`build` makes everything a run needs (process group, data, model, engine, the checkpoint to
continue from); `train_step` is one optimizer step; `loop` runs the steps and logs, evaluates
and saves at their cadence. Per step nothing leaves the device: losses accumulate there, and
they are reduced over the ranks and read on the host only at the steps that log
(`train.log_every_steps`), evaluate or save.
"""

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist

from pretrain import engine as deepspeed_engine
from pretrain import resume
from pretrain.checkpoint import Checkpointer
from pretrain.comm import Collectives
from pretrain.config import PretrainConfig
from pretrain.data import BatchLayout, PackedSamples, Splits, TokenStream, data_fingerprint
from pretrain.loader import MicroBatch, Prefetcher
from pretrain.metrics import MetricsLog, memory_gb, peak_tflops, per_source_losses
from pretrain.model import GPT, ModelConfig
from pretrain.progress import SampleLog, StepFile, progress_bar, redirect_logging

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


def resolve_model(cfg: PretrainConfig, vocab_size: int) -> ModelConfig:
    m = cfg.model
    if m.vocab_size is None:
        return replace(m, vocab_size=vocab_size)
    if m.vocab_size < vocab_size:
        raise ValueError(
            f"model.vocab_size={m.vocab_size} is smaller than the tokenizer's {vocab_size} tokens"
        )
    return m


@dataclass
class Run:
    """What `build` makes: one rank's share of a training run."""

    cfg: PretrainConfig
    rank: int
    world: int
    layout: BatchLayout
    train_set: PackedSamples
    validation: dict[str, PackedSamples]  # by mixture source ("": windows held out of the training stream)
    val_weights: dict[str, float]  # each validation set's share of val_loss
    engine: object
    device: torch.device
    comm: Collectives
    ckpt: Checkpointer
    start_step: int
    fingerprint: str
    config_yaml: str
    flops_per_token: int
    seq_len: int
    evaluator: Optional[object] = None  # pretrain.evaluate.Evaluator when eval.every_steps > 0


def build(cfg: PretrainConfig) -> Run:
    rank = int(os.environ.get("RANK", "0"))
    _setup_logging(rank)
    # DeepSpeed's ZeRO calls a collective that torch deprecated, once per step per rank.
    warnings.filterwarnings("ignore", message=r"`torch.distributed.\w+` is deprecated", category=FutureWarning)
    if "TORCHELASTIC_RUN_ID" in os.environ:
        _exit_with_launcher()
    deepspeed_engine.init_distributed(cfg)
    rank, world = dist.get_rank(), dist.get_world_size()
    run_dir = Path(cfg.run_dir)
    ckpt = Checkpointer(run_dir / "checkpoints", cfg.checkpoint.keep_last, rank)

    stream = TokenStream(cfg.data.manifest)
    fingerprint = data_fingerprint(stream.manifest)
    mcfg = resolve_model(cfg, stream.vocab_size)
    layout = BatchLayout(cfg.train.micro_batch_size, cfg.train.grad_accum_steps, world)
    # Which checkpoint (if any) to continue from, and whether it can be, decided before any work.
    point = resume.decide(cfg, ckpt, layout, fingerprint)

    config_yaml = resume.to_yaml(cfg)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / resume.CONFIG_FILE).write_text(config_yaml)
    ckpt.clean_partial()
    if point and point.universal:
        ckpt.prepare_universal(point.folder, point.tag)

    splits = Splits.of(stream, mcfg.seq_len, cfg.data.seed, cfg.data.val_fraction)

    torch.manual_seed(cfg.train.seed)
    model = GPT(mcfg)
    engine = deepspeed_engine.build_engine(model, cfg, world, load_universal=bool(point and point.universal))
    device = deepspeed_engine.device_of(engine)
    start_step = 0
    if point:
        ckpt.load(engine, point.folder, point.tag, universal=point.universal)
        if point.universal:
            deepspeed_engine.repair_universal_load(engine, cfg)
        start_step = point.step
        consumed = point.info.get("consumed_samples", start_step * layout.global_batch)
        assert consumed == start_step * layout.global_batch, (consumed, start_step)
        log.info("resumed from %s at step %d (%d samples consumed)%s", point.path, start_step, consumed,
                 f"; written by {point.info['world_size']} ranks, ZeRO-{point.info['zero_stage']}, loaded "
                 "through the universal format" if point.universal else "")
    log.info(
        "model: %.2fM parameters (%s: %d layers, d_model %d, %d heads, vocab %d) | data: %d tokens, "
        "%d train samples of %d | %d ranks, global batch %d, ZeRO-%d, %s%s | device %s",
        model.num_params() / 1e6, mcfg.style, mcfg.n_layer, mcfg.d_model, mcfg.n_head, mcfg.vocab_size,
        stream.num_tokens, len(splits.train), mcfg.seq_len, world, layout.global_batch, cfg.zero.stage,
        cfg.train.precision, ", activation checkpointing" if mcfg.activation_checkpointing else "", device,
    )
    log.info("%s", splits.how)
    evaluator = None
    if cfg.eval.every_steps > 0 and cfg.eval.tasks:  # zero-shot tasks, tokenized once
        from pretrain import evaluate as zero_shot

        tokenizer, eod_id = zero_shot.load_tokenizer(cfg.data.manifest)
        evaluator = zero_shot.Evaluator(cfg.eval, tokenizer, seq_len=mcfg.seq_len, eod_id=eod_id, rank=rank,
                                        world=world)
    return Run(cfg, rank, world, layout, splits.train, splits.validation, splits.weights, engine, device,
               Collectives(device), ckpt, start_step, fingerprint, config_yaml, model.flops_per_token(), mcfg.seq_len,
               evaluator)


def train_step(engine, batches: Iterator[MicroBatch], accum: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """One optimizer step (all micro batches) on this rank: (its mean loss as a device tensor,
    the sample indices read). Nothing here waits for the device."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    read: list[int] = []
    for _ in range(accum):
        batch = next(batches)
        _, loss = engine(batch.inputs, batch.targets)
        engine.backward(loss)
        engine.step()
        loss_sum += loss.detach()
        read.extend(batch.indices)
    return loss_sum / accum, read


@torch.no_grad()
def evaluate(r: Run) -> dict[str, float]:
    """Validation losses: `val_loss/<source>`, the mean loss of each source's first
    `train.eval_batches` x micro batch x ranks held-out windows (each once; all of them when it
    has fewer), and `val_loss`, their mean weighted by the mixture's target weights. The losses
    add up on the device and are reduced and read once, together."""
    names = list(r.validation)
    b, stride = r.cfg.train.micro_batch_size, r.cfg.train.micro_batch_size * r.world
    sums = torch.zeros(len(names), dtype=torch.float64, device=r.device)
    counts = []
    r.engine.eval()
    for k, name in enumerate(names):
        samples = r.validation[name]
        n = min(len(samples), r.cfg.train.eval_batches * stride)
        counts.append(n)
        # Every rank makes the same number of forward passes (ZeRO-3 gathers parameters in each);
        # a rank past the end reads window 0 and adds it with weight 0.
        for first in range(r.rank * b, math.ceil(n / stride) * stride, stride):
            indices = [i for i in range(first, first + b) if i < n]
            x, y = samples.batch(indices or [0])
            _, loss = r.engine(x.to(r.device), y.to(r.device))
            sums[k] += loss.detach() * len(indices)
    r.engine.train()
    losses = {name: total / n for name, total, n in zip(names, r.comm.sum(sums).tolist(), counts)}
    out = {"val_loss": sum(r.val_weights[name] * loss for name, loss in losses.items())}
    out.update({f"val_loss/{name}": loss for name, loss in losses.items() if name})
    return out


class _Interval:
    """What accumulates between two logged steps: the losses (on the device), steps, time."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.steps, self.t0 = 0, time.perf_counter()

    def add(self, step_loss: torch.Tensor) -> None:
        self.loss += step_loss
        self.steps += 1


def _record(r: Run, done: int, interval: _Interval, lr_at: Callable[[int], float], peak: Optional[float]) -> dict:
    """The metrics of a log step: one reduction over the ranks, then the host reads them."""
    loss = r.comm.mean(interval.loss / interval.steps).item()  # waits for the device: times are real
    seconds = (time.perf_counter() - interval.t0) / interval.steps
    tokens_per_s = r.layout.global_batch * r.seq_len / seconds
    norm = r.engine.get_global_grad_norm()
    record = {
        "step": done,
        "loss": loss,
        "lr": r.cfg.optim.lr * lr_at(done - 1),
        "grad_norm": None if norm is None else float(norm),
        "tokens_per_s": tokens_per_s,
        "mfu": r.flops_per_token * tokens_per_s / (peak * 1e12 * r.world) if peak else None,
        "consumed_samples": done * r.layout.global_batch,
        "seconds": seconds,
    }
    record.update(memory_gb(r.comm))
    return record


def loop(r: Run, on_checkpoint: Optional[Callable[[int, Path, dict], None]] = None) -> dict:
    cfg, max_steps = r.cfg, r.cfg.train.max_steps
    run_dir = Path(cfg.run_dir)
    metrics = MetricsLog(run_dir, r.rank == 0, r.start_step, tensorboard=cfg.metrics.tensorboard)
    sample_log = SampleLog(run_dir, r.rank, r.start_step) if cfg.debug.record_samples else None
    eval_log = None
    if r.evaluator is not None and r.rank == 0:
        from pretrain.evaluate import EvalLog

        eval_log = EvalLog(run_dir, tensorboard=cfg.metrics.tensorboard, resume_step=r.start_step)
    peak = peak_tflops(cfg.metrics.peak_tflops, cfg.train.precision)
    lr_at = deepspeed_engine.lr_lambda(cfg)
    summary = {"run_dir": str(run_dir), "start_step": r.start_step, "max_steps": max_steps}
    bar = progress_bar(cfg, r.rank, r.start_step, max_steps)
    prefetch = Prefetcher(r.train_set, r.layout, r.rank, r.start_step, max_steps, r.device, cfg.data.prefetch)
    interval = _Interval(r.device)
    progress = StepFile(run_dir, max_steps) if r.rank == 0 else None
    with prefetch, bar, (redirect_logging() if not bar.disable else contextlib.nullcontext()):
        batches = iter(prefetch)
        for step in range(r.start_step, max_steps):
            step_loss, read = train_step(r.engine, batches, r.layout.grad_accum_steps, r.device)
            interval.add(step_loss)
            done = step + 1
            if progress:
                progress.write(done)
            if sample_log:
                sample_log.write(done, r.world, read)
            bar.update(1)
            every = cfg.checkpoint.every_steps
            save = (every > 0 and done % every == 0) or (done == max_steps and cfg.checkpoint.at_end)
            evaluate_now = bool(r.validation) and (
                done == max_steps or (cfg.train.eval_every_steps and done % cfg.train.eval_every_steps == 0))
            zero_shot_now = r.evaluator is not None and _zero_shot_due(cfg, done, max_steps)
            if not (save or evaluate_now or zero_shot_now or done == r.start_step + 1 or done == max_steps
                    or done % cfg.train.log_every_steps == 0):
                continue
            record = _record(r, done, interval, lr_at, peak)
            if evaluate_now:
                record.update(evaluate(r))
                record["val_ppl"] = math.exp(min(record["val_loss"], 80.0))
                summary.update({k: v for k, v in record.items() if k.startswith("val_loss")})
            metrics.write(record)
            _log_line(record, max_steps, bar)
            if zero_shot_now:
                rows = r.evaluator.run(r.engine, done, reduce_sum=r.comm.sum, device=r.device)
                if eval_log is not None:
                    eval_log.write(rows)
                log.info("zero-shot at step %d: %s", done,
                         ", ".join(f"{x['task']} {x['metric']} {x['value']:.4g}" for x in rows))
            summary.setdefault("first_loss", record["loss"])
            summary["last_loss"] = record["loss"]
            if save:
                t_save = time.perf_counter()
                path = r.ckpt.save(
                    r.engine, done,
                    {"step": done, "consumed_samples": done * r.layout.global_batch,
                     "global_batch": r.layout.global_batch, "world_size": r.world, "zero_stage": cfg.zero.stage,
                     "precision": cfg.train.precision, "data_seed": cfg.data.seed,
                     "data_fingerprint": r.fingerprint},
                    config_yaml=r.config_yaml,
                    sleep_s=cfg.debug.sleep_in_save_s if cfg.debug.sleep_in_save_step in (0, done) else 0.0,
                )
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if r.rank == 0 else 0
                log.info("checkpoint %s (%.1f s, %.1f MB)", path, time.perf_counter() - t_save, size / 1e6)
                if on_checkpoint:
                    on_checkpoint(done, path, record)
            interval = _Interval(r.device)  # evaluation and saving are not training time
    metrics.close()
    if eval_log is not None:
        eval_log.close()
    if progress:
        progress.close()
    if r.rank == 0:
        summary["final_step"] = max(r.start_step, max_steps)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(cfg: PretrainConfig, on_checkpoint: Optional[Callable[[int, Path, dict], None]] = None) -> dict:
    """Train until cfg.train.max_steps; returns a summary (rank 0's view).

    on_checkpoint(step, path, metrics) runs on every rank after each complete checkpoint
    (launch/ray_cluster.py reports it to Ray Train)."""
    r = build(cfg)
    summary = loop(r, on_checkpoint)
    deepspeed_engine.shutdown()
    from pretrain.report import write_report  # matplotlib, imported once training is over

    write_report(cfg.run_dir, r.rank)
    return summary


def _zero_shot_due(cfg: PretrainConfig, done: int, max_steps: int) -> bool:
    from pretrain.evaluate import due

    return due(cfg.eval, done, max_steps)


def _log_line(record: dict, max_steps: int, bar) -> None:
    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}",
                    refresh=False)
    log.info(
        "step %d/%d  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s%s  mem %.2f GB%s", record["step"], max_steps,
        record["loss"], record["lr"], record["grad_norm"] or float("nan"), record["tokens_per_s"],
        f"  mfu {record['mfu']:.1%}" if record["mfu"] is not None else "",
        record.get("cuda_max_allocated_gb") or record["rss_gb"],
        f"  val_loss {record['val_loss']:.4f} ppl {record['val_ppl']:.1f}{per_source_losses(record)}" if "val_loss" in record else "",
    )

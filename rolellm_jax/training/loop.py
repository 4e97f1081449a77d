"""The training loop: one jitted step per batch, metrics, checkpoints, a NaN stop, a progress bar."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax

from rolellm_jax.data.packing import PackedBatches, to_global_arrays
from rolellm_jax.errors import OOM_HINT, is_oom
from rolellm_jax.training.checkpoint_store import CheckpointStore
from rolellm_jax.training.flops import peak_flops_per_device
from rolellm_jax.training.run_config import RunConfig
from rolellm_jax.training.run_log import MetricsLog
from rolellm_jax.training.train_step import TrainError, TrainProgram


def train_loop(
    cfg: RunConfig,
    program: TrainProgram,
    batches: PackedBatches,
    store: CheckpointStore,
    mesh: Any,
    start: int,
    state: Any,
    frozen: Any,
    *,
    meta_base: dict[str, Any],
) -> tuple[Any, float, float]:
    """Steps ``start`` .. ``train.steps``: (final state, first loss, last loss of these steps).
    Checkpoints go through ``store``."""
    flops_token = program.flops_per_token()
    peak = cfg.logging.peak_flops or peak_flops_per_device(mesh.devices.flat[0])
    tokens_per_step = cfg.train.global_batch_size * cfg.data.seq_len
    metrics_log = MetricsLog(Path(cfg.train.output_dir), start_step=start, tensorboard=cfg.logging.tensorboard)
    step_fn = program.jitted_step()
    progress = ProgressBar(cfg, start)
    first_loss = last_loss = float("nan")
    try:
        for step in range(start, cfg.train.steps):
            batch = to_global_arrays(batches.batch(step), mesh, program.batch_sharding)
            t0 = time.perf_counter()
            state, metrics = _run_step(step_fn, state, frozen, batch)
            seconds = time.perf_counter() - t0
            done = step + 1
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                store.wait()
                good = store.latest_complete
                raise TrainError(
                    f"loss is {loss} at step {done}: stopped; last good checkpoint: "
                    f"{good if good else 'none (no checkpoint was saved yet)'}"
                )
            first_loss = loss if step == start else first_loss
            last_loss = loss
            tokens_per_s = tokens_per_step / seconds
            record = {
                "loss": loss,
                "grad_norm": float(metrics["grad_norm"]),
                "lr": float(metrics["lr"]),
                "loss_tokens": int(metrics["loss_tokens"]),
                "tokens_per_s": tokens_per_s,
                "mfu": flops_token * tokens_per_s / (peak * mesh.size) if peak else None,
                "step_seconds": seconds,
            }
            if done % cfg.logging.every == 0 or done == cfg.train.steps:
                metrics_log.write(done, record)
            progress.update(done, record)
            if store.due(done) or done == cfg.train.steps:
                store.save(
                    done, state, {**meta_base, "step": done, "data_position": done, "data_shards": batches.shards}
                )
    finally:
        progress.close()
        metrics_log.close()
        store.close()
    return state, first_loss, last_loss


def _run_step(step_fn, state, frozen, batch):
    try:
        state, metrics = step_fn(state, frozen, batch)
        return state, jax.device_get(metrics)
    except Exception as err:  # noqa: BLE001
        if is_oom(err):
            raise TrainError(f"out of memory in the train step (compile or run): {OOM_HINT}") from None
        raise


class ProgressBar:
    """tqdm bar with step, loss, tokens/s, MFU, lr and grad norm (process 0 only)."""

    def __init__(self, cfg: RunConfig, start: int):
        from tqdm import tqdm

        enabled = cfg.logging.progress and jax.process_index() == 0
        self.bar = tqdm(total=cfg.train.steps, initial=start, desc="train", disable=not enabled, dynamic_ncols=True)

    def update(self, done: int, m: dict[str, Any]) -> None:
        self.bar.n = done
        mfu = f"{100 * m['mfu']:.1f}%" if m["mfu"] is not None else "n/a"
        self.bar.set_postfix_str(
            f"loss {m['loss']:.4f} | {m['tokens_per_s']:,.0f} tok/s | MFU {mfu} | lr {m['lr']:.2e} "
            f"| gnorm {m['grad_norm']:.3f}",
            refresh=True,
        )

    def close(self) -> None:
        self.bar.close()

"""The RoCIT run: set up the mesh, data and program, restore or initialise, train, export.

The command line is rolellm_jax/train.py.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
from etils import epath

from rolellm_jax.checkpoints.chatglm import chatglm_model_config, is_chatglm_config
from rolellm_jax.checkpoints.hf_read import read_hf_checkpoint, read_hf_config
from rolellm_jax.checkpoints.model_folder import is_model_checkpoint, load_model_checkpoint, save_model_checkpoint
from rolellm_jax.checkpoints.tokenizer import TokenizerError, load_tokenizer, train_tokenizer
from rolellm_jax.data.chat_format import export_chat_template
from rolellm_jax.data.examples import load_examples
from rolellm_jax.data.packing import PackedBatches, to_global_arrays
from rolellm_jax.errors import OOM_HINT, is_oom
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.parallel.sharding import make_mesh
from rolellm_jax.parallel.storage import is_url, storage_path
from rolellm_jax.training.checkpoint_store import CheckpointStore
from rolellm_jax.training.flops import flops_per_token, matmul_params, peak_flops_per_device
from rolellm_jax.training.run_config import RunConfig, model_config_of
from rolellm_jax.training.run_log import MetricsLog, plot_loss_curve, read_metrics
from rolellm_jax.training.train_step import TrainError, TrainProgram

log = logging.getLogger("rolellm_jax.train")


@dataclasses.dataclass
class RunResult:
    first_loss: float
    last_loss: float
    steps_run: int
    checkpoint_dir: epath.Path  # these three may be bucket URLs
    export_dir: epath.Path | None
    loss_curve: epath.Path | None
    metrics: Path


# ---------------------------------------------------------------- tokenizer and model
def _tokenizer_and_model_config(cfg: RunConfig, examples: list) -> tuple[Any, ModelConfig, Path | None]:
    """(tokenizer, model config, tokenizer folder to ship with the export)."""
    runtime = {f: getattr(cfg.model, f) for f in ModelConfig.RUNTIME_FIELDS}
    if cfg.model.init:  # the checkpoint's architecture wins over the preset's
        init = storage_path(cfg.model.init)
        if is_model_checkpoint(init):
            model_cfg = ModelConfig.load(init / "rolellm_config.json").replace(**runtime)
        elif is_url(init):  # Hugging Face folders are read with local-file libraries
            raise TrainError(
                f"model.init={init}: no rolellm_config.json there; a bucket must hold our checkpoint "
                "(python -m rolellm_jax.convert hf-to-jax --hf HF_FOLDER --out URL)"
            )
        else:
            hf = read_hf_config(init)
            source = str(init / "config.json")
            arch = chatglm_model_config(hf, source) if is_chatglm_config(hf) else ModelConfig.from_hf_config(hf, source)
            model_cfg = arch.replace(**runtime)
        tokenizer_dir = storage_path(cfg.model.tokenizer or init)
        tokenizer = load_tokenizer(tokenizer_dir)
        if len(tokenizer) > model_cfg.vocab_size:  # ids past the embedding table would be clamped, silently
            raise TrainError(
                f"tokenizer {tokenizer_dir} has {len(tokenizer)} tokens but model.init={init} has vocab_size="
                f"{model_cfg.vocab_size}: use the model's own tokenizer"
            )
        return tokenizer, model_cfg, tokenizer_dir
    if cfg.model.tokenizer:
        tokenizer_dir = storage_path(cfg.model.tokenizer)
        tokenizer = load_tokenizer(tokenizer_dir)
    else:  # from scratch: a small tokenizer trained on this data (reused on resume)
        tokenizer_dir = Path(cfg.train.output_dir) / "tokenizer"
        if not (tokenizer_dir / "tokenizer.json").is_file():
            if jax.process_index() == 0:
                texts = [t for ex in examples for t in (ex.system, ex.question, ex.answer)]
                log.info(
                    "training a %d-token tokenizer on %d texts -> %s",
                    cfg.model.tokenizer_vocab_size,
                    len(texts),
                    tokenizer_dir,
                )
                try:
                    train_tokenizer(texts, cfg.model.tokenizer_vocab_size, tokenizer_dir)
                except TokenizerError as err:
                    raise TrainError(
                        f"{err}: raise --model.tokenizer_vocab_size (and --model.vocab_size with it)"
                    ) from None
            _sync("tokenizer")
        tokenizer = load_tokenizer(tokenizer_dir)
    model_cfg = model_config_of(cfg.model)
    if len(tokenizer) > model_cfg.vocab_size:
        raise TrainError(
            f"tokenizer {tokenizer_dir} has {len(tokenizer)} tokens but model.vocab_size={model_cfg.vocab_size}: "
            f"set --model.vocab_size={len(tokenizer)} or more"
        )
    model_cfg = model_cfg.replace(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer, model_cfg, tokenizer_dir


def _initial_params(cfg: RunConfig, program: TrainProgram) -> dict:
    if not cfg.model.init:
        return program.init_params(cfg.train.seed)
    init = storage_path(cfg.model.init)
    if is_model_checkpoint(init):  # restored straight onto the mesh, cast to param_dtype
        params, _ = load_model_checkpoint(init, abstract=program.abstract_params)
        return params
    params, _ = read_hf_checkpoint(init)  # host numpy, one tensor at a time from safetensors
    return program.place_params(params)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _identity(model_cfg: ModelConfig, cfg: RunConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: architecture and the trained tree's shape."""
    arch = {k: v for k, v in model_cfg.to_dict().items() if k not in ModelConfig.RUNTIME_FIELDS}
    lora = dataclasses.asdict(cfg.lora) if cfg.lora.enabled else None
    return {"model_config": arch, "lora": lora}


# ---------------------------------------------------------------- the run
def run(cfg: RunConfig, devices: list | None = None) -> RunResult:
    output_dir = Path(cfg.train.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(cfg.mesh, devices)
    examples, source_rows = load_examples(cfg.data)
    tokenizer, model_cfg, tokenizer_dir = _tokenizer_and_model_config(cfg, examples)
    batches = PackedBatches(
        cfg.data,
        tokenizer,
        model_cfg.family,
        cfg.train.global_batch_size,
        jax.process_index(),
        jax.process_count(),
        examples=examples,
        source_rows=source_rows,
    )
    program = TrainProgram.create(model_cfg, mesh, cfg.train, cfg.lora, cfg.data.seq_len)

    store = CheckpointStore(
        cfg.checkpoint_dir, every=cfg.checkpoint.every, keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save
    )
    identity = _identity(model_cfg, cfg)
    if not cfg.checkpoint.resume and store.steps():
        raise TrainError(
            f"{cfg.checkpoint_dir} already holds checkpoints {store.steps()} and checkpoint.resume=false: "
            "choose another train.output_dir / checkpoint.dir or allow resuming"
        )
    restored = store.restore_latest(program.abstract_state(), identity) if cfg.checkpoint.resume else None
    frozen = None
    if restored is not None:
        start, state, meta = restored
        log.info(
            "resumed from %s (step %d, data position %d)", cfg.checkpoint_dir / str(start), start, meta["data_position"]
        )
        if meta.get("data_shards", batches.shards) != batches.shards:
            log.warning(
                "the interrupted run dealt its data into %d shards, this one into %d: batches from step %d on differ "
                "from the ones it would have seen (pass --data.shards=%d to keep them)",
                meta["data_shards"],
                batches.shards,
                start,
                meta["data_shards"],
            )
        if cfg.lora.enabled:  # the frozen base is not in training checkpoints: rebuild it
            frozen = _initial_params(cfg, program)
    else:
        start = 0
        params = _initial_params(cfg, program)
        state, frozen = program.init_state(params, cfg.train.seed)
        del params

    n_matmul = matmul_params(program.abstract_params)
    flops_token = flops_per_token(model_cfg, n_matmul, cfg.data.seq_len)
    peak = cfg.logging.peak_flops or peak_flops_per_device(mesh.devices.flat[0])
    tokens_per_step = cfg.train.global_batch_size * cfg.data.seq_len
    log.info(
        "model: %s, %.2fM params (%.2fM in matmuls); mesh %s; %d steps of %d x %d tokens; "
        "data: %d packed rows on this process",
        model_cfg.family,
        sum(math.prod(x.shape) for x in jax.tree.leaves(program.abstract_params)) / 1e6,
        n_matmul / 1e6,
        dict(mesh.shape),
        cfg.train.steps,
        cfg.train.global_batch_size,
        cfg.data.seq_len,
        batches.num_rows,
    )
    if mesh.devices.flat[0].platform == "cpu" and "hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
        log.info(
            "on CPU, GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in the environment spares XLA most of its page "
            "faults: 10-20% faster steps (README, benchmarks/RESULTS.md)"
        )

    metrics_log = MetricsLog(output_dir, start_step=start, tensorboard=cfg.logging.tensorboard)
    meta_base = {"config": cfg.to_dict(), **identity}
    step_fn = program.jitted_step()
    first_loss = last_loss = float("nan")
    progress = ProgressBar(cfg, start)
    try:
        for step in range(start, cfg.train.steps):
            batch = to_global_arrays(batches.batch(step), mesh, program.batch_sharding)
            t0 = time.perf_counter()
            try:
                state, metrics = step_fn(state, frozen, batch)
                metrics = jax.device_get(metrics)
            except Exception as err:  # noqa: BLE001
                if is_oom(err):
                    raise TrainError(f"out of memory in the train step (compile or run): {OOM_HINT}") from None
                raise
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
            mfu = flops_token * tokens_per_s / (peak * mesh.size) if peak else None
            record = {
                "loss": loss,
                "grad_norm": float(metrics["grad_norm"]),
                "lr": float(metrics["lr"]),
                "loss_tokens": int(metrics["loss_tokens"]),
                "tokens_per_s": tokens_per_s,
                "mfu": mfu,
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

    curve = plot_loss_curve(
        metrics_log.path,
        cfg.checkpoint_dir.parent / "loss_curve.png",
        f"{model_cfg.family} RoCIT ({Path(cfg.data.source).name})",
    )
    export_dir = None
    if cfg.train.export:  # beside the checkpoints: a pod's shared bucket when they are there
        export_dir = cfg.checkpoint_dir.parent / "export"
        save_model_checkpoint(
            export_dir, program.full_params(state, frozen), model_cfg, tokenizer_dir=tokenizer_dir, overwrite=True
        )
        template = export_chat_template(tokenizer, model_cfg.family)  # the prompt format it was trained on
        if template and jax.process_index() == 0:  # travels on to the Hugging Face folder (jax-to-hf)
            (export_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    history = read_metrics(metrics_log.path)  # the whole run, across restarts
    if history:
        first_loss, last_loss = history[0]["loss"], history[-1]["loss"]
    return RunResult(
        first_loss, last_loss, max(cfg.train.steps - start, 0), cfg.checkpoint_dir, export_dir, curve, metrics_log.path
    )


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

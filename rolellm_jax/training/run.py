"""The RoCIT run: set up the mesh, data and program, restore or initialise, train, export.

The command line is rolellm_jax/train.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import jax
from etils import epath

from rolellm_jax.checkpoints.chatglm import chatglm_model_config, is_chatglm_config
from rolellm_jax.checkpoints.hf_read import read_hf_checkpoint, read_hf_config
from rolellm_jax.checkpoints.model_folder import (
    check_model_folder,
    is_model_checkpoint,
    load_model_checkpoint,
    save_model_checkpoint,
)
from rolellm_jax.checkpoints.tokenizer import TokenizerError, load_tokenizer, train_tokenizer
from rolellm_jax.data.chat_export import export_chat_template
from rolellm_jax.data.examples import load_examples
from rolellm_jax.data.packing import PackedBatches
from rolellm_jax.data.rolebench_source import show_datasets_progress
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.parallel.sharding import make_mesh
from rolellm_jax.parallel.storage import is_url, storage_path
from rolellm_jax.training import glibc_thp
from rolellm_jax.training.checkpoint_store import CheckpointMismatchError, CheckpointStore
from rolellm_jax.training.flops import matmul_params
from rolellm_jax.training.loop import train_loop
from rolellm_jax.training.memory_estimate import available_memory, check_state_fits, estimate_state, human_count
from rolellm_jax.training.run_config import RunConfig, changed_settings, model_config_of
from rolellm_jax.training.run_log import plot_loss_curve, read_metrics
from rolellm_jax.training.train_step import TrainError, TrainProgram

log = logging.getLogger("rolellm_jax.train")


@dataclasses.dataclass
class Setup:
    """What a run is made of, once the config is checked and the data read."""

    mesh: Any
    tokenizer: Any
    model_cfg: ModelConfig
    tokenizer_dir: Path | None
    batches: PackedBatches
    program: TrainProgram
    store: CheckpointStore
    identity: dict[str, Any]


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
def _init_model_config(cfg: RunConfig) -> ModelConfig | None:
    """model.init's architecture (it wins over the preset's) with the run's runtime fields; None from scratch."""
    if not cfg.model.init:
        return None
    runtime = {f: getattr(cfg.model, f) for f in ModelConfig.RUNTIME_FIELDS}
    init = storage_path(cfg.model.init)
    check_model_folder(cfg.model.init, "model.init")
    if is_model_checkpoint(init):
        return ModelConfig.load(init / "rolellm_config.json").replace(**runtime)
    if is_url(init):  # Hugging Face folders are read with local-file libraries
        raise TrainError(
            f"model.init={init}: no rolellm_config.json there; a bucket must hold our checkpoint "
            "(python -m rolellm_jax.convert hf-to-jax --hf HF_FOLDER --out URL)"
        )
    hf = read_hf_config(init)
    source = str(init / "config.json")
    arch = chatglm_model_config(hf, source) if is_chatglm_config(hf) else ModelConfig.from_hf_config(hf, source)
    return arch.replace(**runtime)


def _check_memory(cfg: RunConfig, model_cfg: ModelConfig, mesh: Any) -> None:
    """Log the model's size, and refuse a training state that cannot fit, before anything is allocated."""
    estimate = estimate_state(model_cfg, cfg.lora)
    log.info(
        "model: %s, %s parameters (%s trained); training state about %s",
        model_cfg.family,
        human_count(estimate.parameters),
        human_count(estimate.trainable),
        estimate.describe(),
    )
    if cfg.train.check_memory:
        local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
        available, where = available_memory(local)
        check_state_fits(estimate, available, where, jax.process_count())


def _tokenizer_and_model_config(cfg: RunConfig, examples: list) -> tuple[Any, ModelConfig, Path | None]:
    """(tokenizer, model config, tokenizer folder to ship with the export)."""
    if cfg.model.init:  # the checkpoint's architecture wins over the preset's
        model_cfg = _init_model_config(cfg)
        tokenizer_dir = storage_path(cfg.model.tokenizer or cfg.model.init)
        tokenizer = load_tokenizer(tokenizer_dir)
        if len(tokenizer) > model_cfg.vocab_size:  # ids past the embedding table would be clamped, silently
            raise TrainError(
                f"tokenizer {tokenizer_dir} has {len(tokenizer)} tokens but model.init={cfg.model.init} has "
                f"vocab_size={model_cfg.vocab_size}: use the model's own tokenizer"
            )
        return tokenizer, model_cfg, tokenizer_dir
    if cfg.model.tokenizer:
        tokenizer_dir = storage_path(cfg.model.tokenizer)
        tokenizer = load_tokenizer(tokenizer_dir)
    else:  # from scratch: a small tokenizer trained on this data (reused on resume)
        tokenizer_dir = Path(cfg.train.output_dir) / "tokenizer"
        if not (tokenizer_dir / "tokenizer.json").is_file():
            if jax.process_index() == 0:
                texts = [t for ex in examples for t in ex.texts]
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


def _check_settings(cfg: RunConfig, folder: Any, meta: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint trained with other settings (lr, steps, data, ...) unless resume.allow_changes."""
    changes = changed_settings(meta.get("config") or {}, cfg.to_dict())
    if not changes:
        return
    listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)
    if not cfg.resume.allow_changes:
        raise CheckpointMismatchError(
            f"{folder}: trained with other settings than this run's: {listed} (checkpoint -> now); resume with "
            "them anyway with --resume.allow_changes=true, or start afresh in another --train.output_dir"
        )
    log.warning("resuming %s with changed settings (resume.allow_changes=true): %s", folder, listed)


# ---------------------------------------------------------------- the run
def run(cfg: RunConfig, devices: list | None = None) -> RunResult:
    setup = _setup(cfg, devices)
    start, state, frozen = _restore_or_init(cfg, setup)
    _log_plan(cfg, setup)
    metrics_path = Path(cfg.train.output_dir) / "metrics.jsonl"
    meta_base = {"config": cfg.to_dict(), **setup.identity}
    state, first_loss, last_loss = train_loop(
        cfg,
        setup.program,
        setup.batches,
        setup.store,
        setup.mesh,
        start,
        state,
        frozen,
        meta_base=meta_base,
    )
    data_name = Path(cfg.data.source if cfg.data.kinds else cfg.data.conversations or cfg.data.cards).name
    curve = plot_loss_curve(
        metrics_path, cfg.checkpoint_dir.parent / "loss_curve.png", f"{setup.model_cfg.family} RoCIT ({data_name})"
    )
    export_dir = _export(cfg, setup, state, frozen) if cfg.train.export else None
    history = read_metrics(metrics_path)  # the whole run, across restarts
    if history:
        first_loss, last_loss = history[0]["loss"], history[-1]["loss"]
    return RunResult(
        first_loss, last_loss, max(cfg.train.steps - start, 0), cfg.checkpoint_dir, export_dir, curve, metrics_path
    )


def _setup(cfg: RunConfig, devices: list | None) -> Setup:
    """Mesh, data, tokenizer, model config and program; nothing is written before the checks pass."""
    show_datasets_progress(cfg.logging.verbose)
    mesh = make_mesh(cfg.mesh, devices)
    _check_memory(cfg, _init_model_config(cfg) or model_config_of(cfg.model), mesh)  # before any write
    examples, source_rows = load_examples(cfg.data)  # a bad data source leaves no run folder behind either
    Path(cfg.train.output_dir).mkdir(parents=True, exist_ok=True)
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
    return Setup(mesh, tokenizer, model_cfg, tokenizer_dir, batches, program, store, _identity(model_cfg, cfg))


def _restore_or_init(cfg: RunConfig, setup: Setup) -> tuple[int, Any, Any]:
    """(start step, train state, frozen base) from the latest complete checkpoint, or freshly initialised."""
    store, program, batches = setup.store, setup.program, setup.batches
    if not cfg.checkpoint.resume and store.steps():
        raise TrainError(
            f"{cfg.checkpoint_dir} already holds checkpoints {store.steps()} and checkpoint.resume=false: "
            "choose another train.output_dir / checkpoint.dir or allow resuming"
        )
    restored = (
        store.restore_latest(
            program.abstract_state(), setup.identity, lambda folder, meta: _check_settings(cfg, folder, meta)
        )
        if cfg.checkpoint.resume
        else None
    )
    if restored is None:
        params = _initial_params(cfg, program)
        state, frozen = program.init_state(params, cfg.train.seed)
        return 0, state, frozen
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
    frozen = _initial_params(cfg, program) if cfg.lora.enabled else None  # the frozen base is not checkpointed
    return start, state, frozen


def _log_plan(cfg: RunConfig, setup: Setup) -> None:
    log.info(
        "%s parameters in matmuls; mesh %s; %d steps of %d x %d tokens; data: %d packed rows on this process",
        human_count(matmul_params(setup.program.abstract_params)),
        dict(setup.mesh.shape),
        cfg.train.steps,
        cfg.train.global_batch_size,
        cfg.data.seq_len,
        setup.batches.num_rows,
    )
    # the CLI's own re-run would have applied here but did not happen (a run started from a program)
    on_cpu = setup.mesh.devices.flat[0].platform == "cpu"
    if on_cpu and glibc_thp.why_not({**os.environ, "JAX_PLATFORMS": "cpu"}) is None:
        log.info(
            "on CPU, GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in the environment spares XLA most of its page "
            "faults: 10-50% faster steps (python -m rolellm_jax.train sets it itself; README)"
        )


def _export(cfg: RunConfig, setup: Setup, state: Any, frozen: Any) -> epath.Path:
    """The final model (LoRA merged) beside the checkpoints: a pod's shared bucket when they are there."""
    export_dir = cfg.checkpoint_dir.parent / "export"
    save_model_checkpoint(
        export_dir,
        setup.program.full_params(state, frozen),
        setup.model_cfg,
        tokenizer_dir=setup.tokenizer_dir,
        overwrite=True,
    )
    template = export_chat_template(setup.tokenizer, setup.model_cfg.family)  # the prompt format it was trained on
    if template and jax.process_index() == 0:  # travels on to the Hugging Face folder (jax-to-hf)
        (export_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    return export_dir

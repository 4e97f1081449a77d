"""Our model checkpoint folder and `load_model`.

A checkpoint is a folder (local, or a bucket URL such as gs://...: rolellm_jax/storage.py):
  rolellm_config.json   ModelConfig JSON (param_dtype = the dtype the tensors are stored in)
  params/               orbax PyTree of the pure-dict parameter tree (tensor_layout.py)
  tokenizer.json, ...   the tokenizer files, so AutoTokenizer.from_pretrained(folder) works

Saving host numpy arrays goes through a NumpyHandler that does not deep-copy them first, with
small tensorstore chunks and OCDBT data files, so a save needs little memory beyond the arrays.
Restoring goes against an abstract target: give `jax.ShapeDtypeStruct`s carrying shardings and
each process reads only its shards, cast to the requested dtype on the fly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rolellm_jax.checkpoints.hf_read import read_hf_checkpoint
from rolellm_jax.checkpoints.safetensors_io import CheckpointError
from rolellm_jax.checkpoints.tensor_layout import flatten, param_shapes
from rolellm_jax.checkpoints.tokenizer import copy_tokenizer_files
from rolellm_jax.errors import ConfigError
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.parallel.storage import is_url, storage_path

CONFIG_FILE = "rolellm_config.json"
PARAMS_DIR = "params"
_CHUNK_BYTES = 16 << 20  # tensorstore chunk: bounds the encode buffers during save
_OCDBT_FILE_BYTES = 32 << 20  # OCDBT flushes data files of this size instead of buffering more


def _checkpointer():
    import orbax.checkpoint as ocp
    from orbax.checkpoint import type_handlers
    from orbax.checkpoint._src.serialization import type_handler_registry as registry

    # The default NumpyHandler deep-copies every host array before an (async) save: twice the
    # memory for a converted checkpoint. Our saves are synchronous, so the copy buys nothing.
    handlers = [
        (ty, type_handlers.NumpyHandler(deepcopy_host_arrays=False) if ty is np.ndarray else handler)
        for ty, handler in registry._DEFAULT_TYPE_HANDLERS
    ]
    handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry.create_type_handler_registry(*handlers))
    return ocp.Checkpointer(handler)


def is_model_checkpoint(path: str | Path) -> bool:
    return (storage_path(path) / CONFIG_FILE).is_file()


def save_model_checkpoint(
    path: str | Path,
    params: dict,
    cfg: ModelConfig,
    tokenizer_dir: str | Path | None = None,
    overwrite: bool = False,
) -> None:
    """Write params (numpy or jax arrays, possibly sharded), the config and the tokenizer files."""
    import jax
    import orbax.checkpoint as ocp

    path = storage_path(path)
    _check_shapes(params, cfg, str(path))
    if (path / PARAMS_DIR).exists():
        if not overwrite:
            raise CheckpointError(f"{path / PARAMS_DIR}: already exists (pass overwrite=True / --overwrite)")
        if jax.process_index() == 0:
            (path / PARAMS_DIR).rmtree()
    path.mkdir(parents=True, exist_ok=True)
    save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=_CHUNK_BYTES), params)
    _checkpointer().save(
        path / PARAMS_DIR,
        args=ocp.args.PyTreeSave(params, save_args=save_args, ocdbt_target_data_file_size=_OCDBT_FILE_BYTES),
    )
    if jax.process_index() == 0:
        cfg.save(path / CONFIG_FILE)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, path)


def check_model_folder(path: str | Path, flag: str = "") -> None:
    """A one-line error for a model path that is no model folder: missing, a file, or a folder
    without rolellm_config.json / config.json (a training run's folder points at its export/)."""
    where = f"{flag}={path}" if flag else str(path)
    folder = storage_path(path)
    if is_url(folder) or is_model_checkpoint(folder) or (folder / "config.json").is_file():
        return
    if not folder.exists():
        raise CheckpointError(f"{where}: no such folder")
    if not folder.is_dir():
        raise CheckpointError(f"{where}: not a folder (a model is a folder with {CONFIG_FILE} or config.json)")
    hint = ""
    if is_model_checkpoint(folder / "export"):
        hint = f"; it looks like a training run's folder: its model is {folder / 'export'}"
    raise CheckpointError(f"{where}: neither our checkpoint ({CONFIG_FILE}) nor an HF folder (config.json){hint}")


def load_model_checkpoint(path: str | Path, abstract: dict | None = None) -> tuple[dict, ModelConfig]:
    """(params, cfg) of our checkpoint.

    `abstract`: None restores host numpy arrays in the stored dtype (conversion); a tree of
    `jax.ShapeDtypeStruct` (with `.sharding`) restores jax arrays placed and cast as described.
    """
    import orbax.checkpoint as ocp

    path = storage_path(path)
    if not is_model_checkpoint(path):
        raise CheckpointError(f"{path}: no {CONFIG_FILE} (not a rolellm_jax checkpoint)")
    cfg = _load_config(path)
    if not (path / PARAMS_DIR).is_dir():
        raise CheckpointError(f"{path / PARAMS_DIR}: missing (checkpoint incomplete)")
    checkpointer = _checkpointer()
    stored = checkpointer.metadata(path / PARAMS_DIR).item_metadata.tree
    _check_shapes(stored, cfg, str(path / PARAMS_DIR))
    if abstract is None:
        target = _map_dict(lambda m: np.empty(0, m.dtype), stored)
        restore_args = _map_dict(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), stored)
    else:
        _check_shapes(abstract, cfg, "abstract target")
        target = abstract
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
    params = checkpointer.restore(
        path / PARAMS_DIR, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args)
    )
    return params, cfg


def _load_config(path: Path) -> ModelConfig:
    try:
        return ModelConfig.load(path / CONFIG_FILE)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path / CONFIG_FILE}:{err.lineno}: invalid JSON ({err.msg})") from None


def _map_dict(fn, tree: dict) -> dict:
    return {k: _map_dict(fn, v) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def _check_shapes(tree: dict, cfg: ModelConfig, source: str) -> None:
    """Refuse a parameter tree that is not exactly the one `cfg` describes (names both shapes)."""
    want = flatten(param_shapes(cfg))
    have = {k: tuple(v.shape) for k, v in flatten(tree).items()}
    for key in sorted(set(want) | set(have)):
        name = "/".join(key)
        if key not in have:
            raise CheckpointError(f"{source}: missing parameter {name}")
        if key not in want:
            raise CheckpointError(f"{source}: unexpected parameter {name}")
        if have[key] != tuple(want[key]):
            raise CheckpointError(f"{source}: parameter {name} has shape {list(have[key])}, expected {list(want[key])}")


def load_model(path: str | Path, *, mesh: Any = None, **runtime_overrides) -> tuple[Any, ModelConfig]:
    """(model, cfg) from our checkpoint or a Hugging Face folder.

    `runtime_overrides` set ModelConfig runtime fields (param_dtype, dtype, scan_layers,
    remat_policy, attention_impl); parameters are cast to param_dtype while they are read. With
    `mesh` (sharding.make_mesh), every parameter is placed by its logical axis names through
    sharding.LOGICAL_RULES; without, on the first device.
    """
    import jax
    from flax import nnx

    from rolellm_jax.models import build_model
    from rolellm_jax.parallel import sharding

    unknown = sorted(set(runtime_overrides) - set(ModelConfig.RUNTIME_FIELDS))
    if unknown:
        raise ConfigError(f"load_model: {unknown} are not runtime fields {list(ModelConfig.RUNTIME_FIELDS)}")
    try:  # the values too (dtype="bf16" fails here, not on the first call), before any tensor is read
        ModelConfig().replace(**runtime_overrides)
    except ConfigError as err:
        raise ConfigError(f"load_model: {err}") from None
    check_model_folder(path)
    if is_model_checkpoint(path):
        hf_params, cfg = None, _load_config(storage_path(path))
    elif not is_url(path) and (Path(path) / "config.json").is_file():
        hf_params, cfg = read_hf_checkpoint(path)
    else:
        raise CheckpointError(
            f"{path}: neither our checkpoint ({CONFIG_FILE}) nor an HF folder (config.json)"
            + ("; a bucket URL must hold our checkpoint (convert hf-to-jax --out URL)" if is_url(path) else "")
        )
    cfg = cfg.replace(**runtime_overrides)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0))))
    if mesh is not None:
        shardings = nnx.to_pure_dict(sharding.param_shardings(state, mesh))
    else:
        single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: single, nnx.to_pure_dict(state))
    target = jax.tree.map(
        lambda var, where: jax.ShapeDtypeStruct(var.shape, np.dtype(cfg.param_dtype), sharding=where),
        nnx.to_pure_dict(state),
        shardings,
    )
    if hf_params is None:
        params, _ = load_model_checkpoint(path, abstract=target)
    else:  # one leaf at a time, so host memory holds the numpy tree plus one cast copy
        params = jax.tree.map(lambda a, t: jax.device_put(a.astype(t.dtype, copy=False), t.sharding), hf_params, target)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state), cfg

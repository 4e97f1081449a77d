"""Hugging Face safetensors folders, read tensor by tensor and written in shards, with numpy only.

Reading: `SafetensorsFolder` indexes a folder (single `model.safetensors` or shards listed in
`model.safetensors.index.json`) and hands out one tensor at a time as a numpy array (bf16 via
ml_dtypes). Each read opens the file afresh: safetensors memory-maps the file and every page a
read touched stays in the process's resident set until the handle closes, so a long-lived
handle would double peak memory during conversion.

Writing: `save_sharded` plans shards from tensor sizes first (so file names carry the final
shard count), then materialises one shard at a time from a callback.

torch is never imported; pickle (`.bin`) checkpoints are refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy for safetensors' numpy backend)
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from data_gen.files import usual_mode
from rolellm_jax.errors import UserError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.bin", "*.pt", "*.pth", "*.ckpt")
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


class CheckpointError(UserError, ValueError):
    """A checkpoint folder or tensor we cannot use; the message is one line naming the culprit."""


def parse_size(size: str | int) -> int:
    """'5GB' / '500MB' / '2KiB' / 1234 -> bytes (decimal units like transformers, binary with 'i')."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", size, re.IGNORECASE)
    if not match:
        raise CheckpointError(f"max shard size {size!r}: expected a number with an optional unit like 5GB or 200MB")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** "_KMGT".index(unit.upper() or "_"))


class SafetensorsFolder:
    """Tensor names, shapes and dtypes of an HF checkpoint folder; tensors read one at a time."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CheckpointError(f"{self.folder}: not a directory")
        index = self.folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise CheckpointError(f"{index}: not a safetensors index ({err})") from None
            files = sorted(set(weight_map.values()))
        elif (self.folder / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            files = sorted(p.name for p in self.folder.glob("*.safetensors"))
        if not files:
            pickles = sorted({p.name for pattern in PICKLE_PATTERNS for p in self.folder.glob(pattern)})
            if pickles:
                raise CheckpointError(
                    f"{self.folder}: only pickle weights ({', '.join(pickles[:3])}); refusing to unpickle "
                    "(it can run arbitrary code): convert them to safetensors first (README: Conversion)"
                )
            raise CheckpointError(f"{self.folder}: no *.safetensors weights found")
        self._file_of: dict[str, Path] = {}
        self._info: dict[str, tuple[tuple[int, ...], str]] = {}
        for name in files:
            path = self.folder / name
            if not path.is_file():
                raise CheckpointError(f"{index}: lists {name}, which is missing")
            try:
                with safe_open(path, framework="numpy") as handle:
                    for key in handle.keys():
                        piece = handle.get_slice(key)
                        dtype = piece.get_dtype()
                        self._file_of[key] = path
                        self._info[key] = (tuple(piece.get_shape()), _DTYPES.get(dtype, dtype))
            except (SafetensorError, OSError) as err:
                raise CheckpointError(f"{path}: unreadable safetensors file ({err})") from None

    def names(self) -> list[str]:
        return sorted(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info[self._require(name)][0]

    def dtype(self, name: str) -> str:
        return self._info[self._require(name)][1]

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in set(self._file_of.values()))

    def read(self, name: str, shape: Sequence[int] | None = None) -> np.ndarray:
        """The tensor `name`; with `shape`, refuse any other shape (names both)."""
        self._require(name)
        if shape is not None and self.shape(name) != tuple(shape):
            raise CheckpointError(
                f"{self.folder}: tensor {name} has shape {list(self.shape(name))}, expected {list(shape)}"
            )
        with safe_open(self._file_of[name], framework="numpy") as handle:  # fresh handle: see module doc
            return handle.get_tensor(name)

    def _require(self, name: str) -> str:
        if name not in self._file_of:
            raise CheckpointError(f"{self.folder}: missing tensor {name}")
        return name


def save_sharded(
    out_dir: str | Path,
    tensors: Sequence[tuple[str, tuple[int, ...], np.dtype]],
    materialise: Callable[[str], np.ndarray],
    max_shard_bytes: int,
) -> list[str]:
    """Write tensors (name, shape, dtype) as HF safetensors shards + index; returns the file names.

    `materialise(name)` is called once per tensor while its shard is written, so at most one
    shard of new arrays is alive at a time. One shard is written as `model.safetensors` with no
    index, as transformers does.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = [[]]
    shard_bytes = 0
    sizes = {name: int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for name, shape, dtype in tensors}
    for name, _, _ in tensors:
        if shards[-1] and shard_bytes + sizes[name] > max_shard_bytes:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(name)
        shard_bytes += sizes[name]
    if len(shards) == 1:
        file_names = [SINGLE_FILE]
    else:
        file_names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for stale in [*out_dir.glob("model*.safetensors"), out_dir / INDEX_FILE]:
        stale.unlink(missing_ok=True)  # a previous export with another shard count
    weight_map = {}
    for file_name, names in zip(file_names, shards):
        shard = {name: np.ascontiguousarray(materialise(name)) for name in names}
        save_file(shard, out_dir / file_name, metadata={"format": "pt"})
        usual_mode(out_dir / file_name)  # safetensors creates its files 0600
        del shard
        weight_map.update({name: file_name for name in names})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return file_names

"""Folders that may live in object storage: bucket URLs (gs://, s3://) next to local paths.

The hosts of a TPU pod share no disk, so what all of them write or read — training checkpoints,
the final export, a converted base model — may be a bucket URL. Files go through etils.epath
(fsspec: gcsfs for gs://, installed with the `tpu` extra) and arrays through orbax / tensorstore,
which read and write buckets natively. Metrics, TensorBoard events and a tokenizer the run trains
stay on process 0's local disk (`train.output_dir`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def storage_path(path: str | os.PathLike) -> epath.Path:
    """The URL as given, or the local path made absolute (relative paths would move with cwd)."""
    text = os.fspath(path)
    return epath.Path(text if is_url(text) else os.path.abspath(text))


def local_copy(folder: str | os.PathLike, names: tuple[str, ...]) -> Path:
    """A local folder holding `folder`'s files of these names: the folder itself when it is local,
    else a fresh temporary copy of those present (libraries such as transformers' tokenizers read
    only local files)."""
    if not is_url(folder):
        return Path(folder)
    local = Path(tempfile.mkdtemp(prefix="rolellm-"))
    for name in names:
        remote = storage_path(folder) / name
        if remote.is_file():
            (local / name).write_bytes(remote.read_bytes())
    return local

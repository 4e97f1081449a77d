"""Training checkpoints (orbax CheckpointManager) and the final model export.

A training checkpoint at step s holds the train state (trainable params, optimiser state, step)
and a JSON record (step, data position, run config, model config). Saves are asynchronous
(training continues while the previous save is written), every `checkpoint.every` steps, keeping
the last `checkpoint.keep`. orbax writes each step into a temporary folder and renames it when
complete, so a killed save leaves no step folder to resume from; a finished folder that cannot be
read (truncated, deleted files) is skipped with a warning, moved to `<dir>-corrupt/`, and the next
older one is tried. Restores always go against an abstract target carrying the current mesh's
shardings, so a checkpoint written on one mesh restores onto another. The folder may be a bucket
URL (gs://...), which all hosts of a pod can reach: orbax writes there natively.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from rolellm_jax.errors import UserError
from rolellm_jax.parallel.storage import storage_path

log = logging.getLogger(__name__)


class CheckpointMismatchError(UserError, ValueError):
    """The checkpoint folder belongs to a different model (the message names the key)."""


class CheckpointStore:
    """The checkpoints of one training run in one folder."""

    def __init__(self, directory: str | Path, *, every: int, keep: int, async_save: bool = True):
        self.directory = storage_path(directory)
        self.every = max(int(every), 1)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    # ------------------------------------------------------------------ save
    def due(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Start an (async) save of `state` as step `step`; returns once the arrays are copied."""
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    @property
    def latest_complete(self) -> epath.Path | None:
        """The newest finished checkpoint folder (for messages), or None."""
        step = self.manager.latest_step()
        return None if step is None else self.directory / str(step)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    # ------------------------------------------------------------------ restore
    def restore_latest(
        self,
        abstract_state: Any,
        identity: dict[str, Any],
        check_meta: Callable[[epath.Path, dict[str, Any]], None] | None = None,
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, meta) of the newest readable checkpoint, or None when there is none.

        `abstract_state` is a tree of ShapeDtypeStructs with shardings (the restore target).
        `identity` holds what must match (e.g. the model config): a checkpoint for another model
        is an error, not something to skip silently. `check_meta(folder, meta)` may refuse the
        checkpoint too (raising), before its arrays are read.
        """
        corrupt: list[int] = []
        found = None
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is skipped
                self._warn_corrupt(step, err)
                corrupt.append(step)
                continue
            for key, value in identity.items():
                if meta.get(key) != value:
                    raise CheckpointMismatchError(
                        f"{self.directory / str(step)}: written for a different {key} "
                        f"({_first_difference(meta.get(key), value)}); use another train.output_dir "
                        "or checkpoint.dir, or delete the old checkpoints"
                    )
            if check_meta is not None:
                check_meta(self.directory / str(step), meta)
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                )
            except Exception as err:  # noqa: BLE001
                self._warn_corrupt(step, err)
                corrupt.append(step)
                continue
            found = (step, restored["state"], meta)
            break
        if corrupt:
            self._set_aside(corrupt)
        return found

    def _warn_corrupt(self, step: int, err: Exception) -> None:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("checkpoint %s is unreadable, skipped: %s", self.directory / str(step), first_line[:300])

    def _set_aside(self, steps: list[int]) -> None:
        """Move unreadable step folders out of the way so new saves can reuse their step numbers."""
        if jax.process_index() == 0:
            aside = self.directory.parent / f"{self.directory.name}-corrupt"
            aside.mkdir(parents=True, exist_ok=True)
            # also what makes the folder exist in a bucket (no empty folders there) before a rename into it
            (aside / "README.txt").write_text("Checkpoints found unreadable when a run resumed; its log says why.\n")
            for step in steps:
                target = aside / f"{step}-{int(time.time())}"
                (self.directory / str(step)).rename(target)
                log.warning("moved unreadable checkpoint %s to %s", self.directory / str(step), target)
        self.manager.reload()


def _first_difference(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return f"{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}"
    return f"checkpoint {old!r}, now {new!r}"

"""Training metrics: JSONL + TensorBoard event files while training, a PNG loss curve at the end.

Only process 0 writes. On resume, records after the resumed step (written by the interrupted run
past its last checkpoint) are dropped, so the files describe the trajectory the model really took.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
from etils import epath

from rolellm_jax.parallel.storage import storage_path


class MetricsLog:
    def __init__(self, output_dir: str | Path, *, start_step: int, tensorboard: bool):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.enabled = jax.process_index() == 0
        self.writer = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # keep the history up to the step we resume from
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= start_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=start_step + 1)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: v for k, v in metrics.items() if v is not None}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path, title: str) -> epath.Path | None:
    """Loss against step (matplotlib, Agg backend: no display needed)."""
    records = read_metrics(metrics_path)
    if not records or jax.process_index() != 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = storage_path(png_path)  # beside the checkpoints, which may be in a bucket
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with png_path.open("wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return png_path

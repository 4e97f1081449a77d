"""The training sections of a run's configuration (train.*, lora.*, checkpoint.*, resume.*, logging.*).

The RoleLLM paper does not publish its RoCIT hyper-parameters (learning rate, schedule, batch,
epochs, LoRA or full tuning): every default below is OUR choice. run_config.py assembles these
with the model, data and mesh sections into a RunConfig.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TrainConfig:
    """train.*: steps, batch and optimiser (AdamW + linear warm-up + cosine decay). Our defaults."""

    steps: int = 200
    global_batch_size: int = 8  # packed rows per optimiser step, over all hosts
    grad_accum: int = 1  # microbatches per step (global_batch_size must divide by it)
    lr: float = 3e-4
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at `steps`
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # not applied to norms or biases
    clip_norm: float = 1.0  # global gradient norm; <= 0 disables
    seed: int = 0  # parameter init (data order has data.seed)
    output_dir: str = "runs/demo"
    export: bool = True  # write the final model checkpoint to export/ beside the checkpoints folder
    # refuse, before allocating, a training state (params + grads + AdamW moments) larger than the
    # host's available memory or the devices' (memory_estimate.py)
    check_memory: bool = True

    def __post_init__(self):
        for name in ("steps", "global_batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be at least 1")
        for name in ("lr", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)}: must not be negative")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio={self.min_lr_ratio}: must be within [0, 1]")


@dataclasses.dataclass
class LoraConfig:
    """lora.*: low-rank adapters on target kernels; base weights frozen, merged on export."""

    enabled: bool = False
    rank: int = 8
    alpha: float = 16.0
    targets: list[str] = dataclasses.field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora.rank={self.rank}: must be at least 1")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha={self.alpha}: must be positive")
        if not self.targets:
            raise ValueError("lora.targets=[]: name at least one module (e.g. [q_proj, v_proj])")


@dataclasses.dataclass
class CheckpointConfig:
    """checkpoint.*: orbax checkpoints of params + optimiser + step + data position + config."""

    # None: <train.output_dir>/checkpoints. May be a bucket URL (gs://BUCKET/runs/NAME/checkpoints), which
    # every host of a pod reaches; the export and the loss curve go beside it (its parent folder)
    dir: str | None = None
    every: int = 50
    keep: int = 3
    async_save: bool = True
    resume: bool = True  # resume from the latest complete checkpoint in dir


@dataclasses.dataclass
class ResumeConfig:
    """resume.*: what a run that finds its own checkpoints may do."""

    # A resumed run refuses settings that change training (lr, schedule, steps, batch, data, lora,
    # model) unlike the checkpoint's, naming them; true resumes anyway (with a warning listing them).
    allow_changes: bool = False


@dataclasses.dataclass
class LoggingConfig:
    """logging.*: progress bar, JSONL + TensorBoard metrics, loss curve."""

    every: int = 1  # steps between metric records
    progress: bool = True
    tensorboard: bool = True
    peak_flops: float | None = None  # per device, for MFU; None = look up the device (see flops.py)
    verbose: bool = False  # also the datasets library's progress bars (--verbose is short for it)

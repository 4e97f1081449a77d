"""The optimiser: AdamW with linear warm-up + cosine decay, global-norm clipping.

Gradient accumulation is not an optax wrapper here: the train step scans over microbatches and
sums gradients before one update (train.py), so one optimiser step is one `step` everywhere
(schedule, checkpoints, data position). Master parameters stay in `model.param_dtype` (float32);
the model computes in `model.dtype` (bfloat16) by casting inside its layers.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from rolellm_jax.training.config import TrainConfig


def lr_schedule(train: TrainConfig) -> optax.Schedule:
    warmup = min(train.warmup_steps, max(train.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=train.lr,
        warmup_steps=warmup,
        decay_steps=max(train.steps, warmup + 1),
        end_value=train.lr * train.min_lr_ratio,
    )


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices only (kernels, embeddings, LoRA factors), not on norms or biases.

    Decided by the leaf name, not ndim: stacked layers give norm scales a leading layer axis.
    """

    def decays(path, _leaf) -> bool:
        name = getattr(path[-1], "key", str(path[-1]))
        return name in ("kernel", "embedding", "lora_a", "lora_b")

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
    parts = []
    if train.clip_norm and train.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(train.clip_norm))
    parts.append(
        optax.adamw(
            lr_schedule(train),
            b1=train.b1,
            b2=train.b2,
            eps=train.eps,
            weight_decay=train.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)

"""The one table that ties Hugging Face tensor names to our parameter tree.

Each entry names an HF tensor, the path of our leaf, our per-layer shape and whether the HF
`[out, in]` weight is transposed into our `kernel [in, out]`. Layers are stacked on a leading
axis L in our tree, one HF tensor per layer. Nothing is ever permuted: both families keep the
Hugging Face rotary layouts, so conversion is renaming and transposing only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rolellm_jax.models import FAMILY_MODELS
from rolellm_jax.models.config import ModelConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    hf_name: str  # "{i}" stands for the layer index when `layered`
    path: Path  # leaf path in our pure-dict parameter tree
    shape: tuple[int, ...]  # our shape for one layer (without the leading L)
    transpose: bool  # HF [out, in] weight <-> our kernel [in, out]
    layered: bool

    def hf_tensor_name(self, layer: int | None) -> str:
        return self.hf_name.format(i=layer)

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape)) if self.transpose else self.shape


def tensor_specs(cfg: ModelConfig) -> list[TensorSpec]:
    """Every tensor of a checkpoint of `cfg`'s family (config.FAMILY_ARCHITECTURES), in file order."""
    family = FAMILY_MODELS[cfg.family]  # its layer's traits: fused gate/up, q/k norms, norm names
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * cfg.head_size, cfg.num_key_value_heads * cfg.head_size
    layer = "model.layers.{i}."
    specs = [TensorSpec("model.embed_tokens.weight", ("embed_tokens", "embedding"), (v, d), False, False)]

    def add(hf: str, path: Path, shape: tuple[int, ...], transpose: bool) -> None:
        specs.append(TensorSpec(layer + hf, ("layers", *path), shape, transpose, True))

    norms = family.norm_names

    def add_norm(name: str | None) -> None:
        if name is not None:
            add(f"{name}.weight", (name, "scale"), (d,), False)

    add_norm(norms.pre_attn)
    for proj, width in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
        add(f"self_attn.{proj}.weight", ("self_attn", proj, "kernel"), (d, width), True)
        if cfg.attention_bias:
            add(f"self_attn.{proj}.bias", ("self_attn", proj, "bias"), (width,), False)
    add("self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"), (q, d), True)
    if family.qk_norm:
        add("self_attn.q_norm.weight", ("self_attn", "q_norm", "scale"), (cfg.head_size,), False)
        add("self_attn.k_norm.weight", ("self_attn", "k_norm", "scale"), (cfg.head_size,), False)
    add_norm(norms.post_attn)
    add_norm(norms.pre_mlp)
    if family.fused_gate_up:
        add("mlp.gate_up_proj.weight", ("mlp", "gate_up_proj", "kernel"), (d, 2 * f), True)
    else:
        add("mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"), (d, f), True)
        add("mlp.up_proj.weight", ("mlp", "up_proj", "kernel"), (d, f), True)
    add("mlp.down_proj.weight", ("mlp", "down_proj", "kernel"), (f, d), True)
    add_norm(norms.post_mlp)
    specs.append(TensorSpec("model.norm.weight", ("norm", "scale"), (d,), False, False))
    if not cfg.tie_word_embeddings:
        specs.append(TensorSpec("lm_head.weight", ("lm_head", "kernel"), (d, v), True, False))
    return specs


def param_shapes(cfg: ModelConfig) -> dict:
    """Our parameter tree as nested dicts of shapes (stacked layers lead with L)."""
    tree: dict = {}
    for spec in tensor_specs(cfg):
        shape = (cfg.num_hidden_layers, *spec.shape) if spec.layered else spec.shape
        node = tree
        for key in spec.path[:-1]:
            node = node.setdefault(key, {})
        node[spec.path[-1]] = shape
    return tree


def allocate(shapes: dict, dtype) -> dict:
    """Uninitialised numpy arrays for a tree of shapes (filled tensor by tensor by importers)."""
    return {k: allocate(s, dtype) if isinstance(s, dict) else np.empty(s, dtype) for k, s in shapes.items()}


def get_leaf(tree: dict, path: Path):
    for key in path:
        tree = tree[key]
    return tree


def flatten(tree: dict, prefix: Path = ()) -> dict[Path, object]:
    """{path: leaf} for a nested dict."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat

"""The model laid out for decoding on a CPU: ``for_cpu_decoding(model)``."""

from __future__ import annotations

import jax
from flax import nnx

from rolellm_jax.models.kernels import cpu_matmul
from rolellm_jax.models.layers import CausalLM


def for_cpu_decoding(model: CausalLM) -> CausalLM:
    """The same model laid out for decoding on a CPU (forward only): one module per layer, each with
    arrays of its own (a copy of its slice of the stacked params), and every dense layer on
    cpu_matmul's dot (16-bit GEMMs with a float32 result, cast back). XLA:CPU copies a layer's
    weights out of the stacked [L, ...] arrays before every dot, and upcasts the weights of a dot
    with a bf16 result to float32 copies (benchmarks/RESULTS.md, "Where a decode step goes"), so a
    step moved ~3x the weight bytes it needs. Same values up to float rounding order; the KV cache
    of :meth:`CausalLM.init_cache` becomes per-layer tuples. The stacked model is untouched (its
    layer params are copied: twice their memory while both are alive)."""
    if model.unstacked:
        return model
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, state)  # shares the arrays; only .layers is replaced
    layer_def, layer_state = nnx.split(model.layers)
    copy.layers = nnx.List(
        nnx.merge(layer_def, jax.tree.map(lambda a, i=i: a[i], layer_state)) for i in range(model.cfg.num_hidden_layers)
    )
    for _, module in nnx.iter_modules(copy):
        if isinstance(module, nnx.Linear):
            module.dot_general = cpu_matmul.dot_general
    return copy

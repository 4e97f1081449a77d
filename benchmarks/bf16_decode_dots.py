"""One decode step of the real SmolLM2-135M at batch 8, as the model computes its dense layers now
vs with every dense dot asking XLA for a float32 result (cast back to the compute dtype), timed in
turns in one process; and how many converts of a weight-sized tensor the compiled step holds
(issue 17: why bf16 decodes slower than fp32 on a CPU with AMX-BF16).

    python benchmarks/bf16_decode_dots.py --hf-dir DIR [--dtype bfloat16] [--unrolled] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hostinfo import cpu_line, load_line  # (benchmarks/ is this script's folder)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rolellm_jax import load_model  # noqa: E402

WEIGHT_SHAPES = ("576,1536", "1536,576", "49152")


def f32_result_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """A bf16 dot with a float32 result, cast back: XLA:CPU then keeps bf16 operands (no f32 copies)."""
    if preferred_element_type is None and lhs.dtype == jnp.bfloat16:
        out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=jnp.float32, **kwargs)
        return out.astype(lhs.dtype)
    return jax.lax.dot_general(
        lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type, **kwargs
    )


@jax.jit
def _step(graphdef, state, token, position, cache):
    model = nnx.merge(graphdef, state)
    return model(token, positions=position, segment_ids=jnp.ones_like(token), cache=cache)


def prepared(folder: Path, dtype: str, unrolled: bool, f32_result: bool):
    model, _ = load_model(folder, dtype=dtype, param_dtype=dtype, scan_layers=not unrolled)
    if f32_result:
        for _, module in nnx.iter_graph(model):
            if isinstance(module, nnx.Linear):
                module.dot_general = f32_result_dot_general
    cache = model.init_cache(8, 60)
    _, cache = model(jnp.ones((8, 40), jnp.int32), cache=cache)  # a 40-token prefill
    graphdef, state = nnx.split(model)
    args = (graphdef, state, jnp.ones((8, 1), jnp.int32), jnp.full((8, 1), 40, jnp.int32), cache)
    hlo = _step.lower(*args).compile().as_text()
    converts = sum(1 for line in hlo.splitlines() if "convert(" in line and any(s in line for s in WEIGHT_SHAPES))
    jax.block_until_ready(_step(*args))
    return args, converts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-dir", type=Path, required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--unrolled", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(cpu_line())
    variants = {"as the model is": False, "dense dots with a float32 result": True}
    runs = {}
    for name, f32_result in variants.items():
        runs[name], converts = prepared(args.hf_dir, args.dtype, args.unrolled, f32_result)
        print(f"{name}: {converts} converts of weight-sized tensors in the compiled step")
    times = {name: [] for name in variants}
    print(load_line("before"))
    for _ in range(args.repeats):
        for name, step_args in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(_step(*step_args)[0])
            times[name].append(1000 * (time.perf_counter() - start))
    print(load_line("after"))
    layers = "unrolled" if args.unrolled else "scanned"
    for name, t in times.items():
        print(f"{args.dtype}, {layers} layers, {name}: {np.median(t):.0f} ms per decode step at batch 8")


if __name__ == "__main__":
    main()

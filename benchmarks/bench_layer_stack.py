"""Layer stack choices side by side: scan vs unrolled, remat none vs full vs dots_saveable.

For one train-like step (loss + grads) of a small LLaMA it prints compile time, the compiled
temporary memory XLA reports (activations kept for the backward pass) and the median step time.

    JAX_PLATFORMS=cpu python benchmarks/bench_layer_stack.py --layers 8 --hidden 256 --seq 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from rolellm_jax.models import build_model
from rolellm_jax.models.config import ModelConfig


def measure(cfg: ModelConfig, batch: int, seq: int, repeats: int) -> dict[str, float]:
    model = build_model(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    ids = jax.random.randint(jax.random.key(0), (batch, seq), 0, cfg.vocab_size, jnp.int32)

    def loss(state):
        logits = nnx.merge(graphdef, state)(ids)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

    step = jax.jit(jax.value_and_grad(loss))
    start = time.perf_counter()
    compiled = step.lower(state).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    temp_mb = getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20
    jax.block_until_ready(compiled(state))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "temp_mb": temp_mb, "step_ms": 1000 * statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    base = ModelConfig(
        family="llama",
        vocab_size=1024,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 128),
        dtype=args.dtype,
    )
    print(
        f"device={jax.devices()[0].device_kind} layers={args.layers} hidden={args.hidden} "
        f"batch={args.batch} seq={args.seq} dtype={args.dtype}"
    )
    print(f"{'variant':46s} {'compile s':>10s} {'temp MiB':>10s} {'step ms':>10s}")
    for scan in (True, False):
        for remat in ("none", "full", "dots_saveable"):
            r = measure(base.replace(scan_layers=scan, remat_policy=remat), args.batch, args.seq, args.repeats)
            name = f"scan_layers={scan} remat_policy={remat}"
            print(f"{name:46s} {r['compile_s']:10.2f} {r['temp_mb']:10.1f} {r['step_ms']:10.1f}")


if __name__ == "__main__":
    main()

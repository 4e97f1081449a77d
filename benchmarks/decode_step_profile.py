"""Where one decode step of the real SmolLM2-135M goes (issue 17): ms per step of the jitted
one-token model call with a KV cache, for the variants that change what the step reads, and the
compiled program's copies and transposes with their sizes.

Variants: layers scanned (the default) or unrolled; fp32 or bf16 parameters; and apart from the
model, the LM head's GEMM alone in the forms the model writes it and their alternatives, fp32 and
bf16, timed in turns, with whether XLA:CPU converts the bf16 weight to float32 before the dot.
A step reads every weight once: 538 MB in fp32, so at B GB/s the floor is 538 / B ms.

    python benchmarks/decode_step_profile.py [--hf-dir DIR] [--batch 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers.smollm2 builds the model folder

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from hostinfo import cpu_line, load_line  # noqa: E402  (benchmarks/ is this script's folder)

from rolellm_jax import load_model  # noqa: E402


@jax.jit
def _step(graphdef, state, token, position, cache):
    model = nnx.merge(graphdef, state)
    ones = jnp.ones_like(token)
    return model(token, positions=position, segment_ids=ones, cache=cache)


def step_ms(folder: Path, batch: int, steps: int, prompt: int, **runtime) -> tuple[float, str]:
    """(median ms per decode step, the compiled HLO text)."""
    model, _ = load_model(folder, **runtime)
    graphdef, state = nnx.split(model)
    cache = model.init_cache(batch, prompt + steps + 2)
    ids = jnp.ones((batch, prompt), jnp.int32)
    _, cache = model(ids, cache=cache)  # fill the cache as a prefill would
    token = jnp.ones((batch, 1), jnp.int32)
    position = jnp.full((batch, 1), prompt, jnp.int32)
    hlo = _step.lower(graphdef, state, token, position, cache).compile().as_text()
    jax.block_until_ready(_step(graphdef, state, token, position, cache))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        logits, cache = _step(graphdef, state, token, position, cache)
        jax.block_until_ready(logits)
        times.append(1000 * (time.perf_counter() - start))
        position = position + 1
    return float(np.median(times)), hlo


def big_copies(hlo: str, min_bytes: int = 1 << 20) -> list[str]:
    """Copy / transpose / dynamic-slice instructions of the compiled program writing >= min_bytes."""
    sizes = {"f32": 4, "bf16": 2, "s32": 4, "f16": 2}
    found = []
    for line in hlo.splitlines():
        m = re.search(r"= (f32|bf16|s32|f16)\[([\d,]*)\]\{[^}]*\} (copy|transpose|dynamic-slice|fusion)\(", line)
        if not m:
            continue
        dtype, dims, op = m.groups()
        n = int(np.prod([int(d) for d in dims.split(",") if d])) * sizes[dtype]
        if n >= min_bytes and (op != "fusion" or "kind=kLoop" in line):
            name = line.strip().split(" ")[0]
            found.append(f"{op} {dtype}[{dims}] {n / 2**20:.1f} MiB ({name})")
    return found


def dot_forms_ms(batch: int, repeats: int = 10) -> list[tuple[str, bool, float]]:
    """The LM head's GEMM [B, 576] x [576, 49152] in the forms the model and its alternatives write it,
    timed in turns: (form, whether XLA:CPU converts the 49152 x 576 weight to float32 first, ms)."""
    rng = np.random.default_rng(0)
    f32, bf16 = jnp.float32, jnp.bfloat16
    emb32 = rng.standard_normal((49152, 576), np.float32)
    forms = {}
    for dt in (f32, bf16):
        e = jnp.asarray(emb32).astype(dt)  # [V, D], the tied embedding as stored
        w = jnp.asarray(np.ascontiguousarray(emb32.T)).astype(dt)  # [D, V], a dense kernel's layout
        x = jnp.asarray(rng.standard_normal((batch, 576), np.float32)).astype(dt)
        name = dt.__name__
        forms |= {
            f"{name}: matmul(x, embedding.T, preferred f32) (the tied head now)": (
                lambda x, e: jnp.matmul(x, e.T, preferred_element_type=f32),
                x,
                e,
            ),
            f"{name}: einsum('bd,vd->bv', x, embedding, preferred f32)": (
                lambda x, e: jnp.einsum("bd,vd->bv", x, e, preferred_element_type=f32),
                x,
                e,
            ),
            f"{name}: x @ kernel, output in the compute dtype (nnx.Linear now)": (lambda x, w: x @ w, x, w),
            f"{name}: matmul(x, kernel, preferred f32)": (
                lambda x, w: jnp.matmul(x, w, preferred_element_type=f32),
                x,
                w,
            ),
        }
    jitted, converts = {}, {}
    for name, (fn, x, w) in forms.items():
        jitted[name] = jax.jit(fn)
        hlo = jitted[name].lower(x, w).compile().as_text()
        converts[name] = any("convert(" in line and "49152" in line for line in hlo.splitlines())
        jax.block_until_ready(jitted[name](x, w))
    times = {name: [] for name in forms}
    for _ in range(repeats):
        for name, (_, x, w) in forms.items():
            start = time.perf_counter()
            jax.block_until_ready(jitted[name](x, w))
            times[name].append(1000 * (time.perf_counter() - start))
    return [(name, converts[name], float(np.median(t))) for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-dir", type=Path)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prompt", type=int, default=40)
    args = parser.parse_args()
    from rolellm_jax.checkpoints.gguf_import import build_smollm2_folder

    folder = args.hf_dir or build_smollm2_folder(Path(tempfile.mkdtemp(prefix="smollm2-profile-")))
    print(cpu_line())
    print(f"jax {jax.__version__}; SmolLM2-135M-Instruct, batch {args.batch}, cache {args.prompt} tokens filled")
    print(load_line("before the LM head's GEMM forms"))
    for name, converts, ms in dot_forms_ms(args.batch):
        print(f"LM head GEMM, {name}: {ms:.1f} ms{' (converts the weight to f32 first)' if converts else ''}")
    variants = {
        "fp32, scanned layers": dict(dtype="float32", param_dtype="float32"),
        "fp32, unrolled layers": dict(dtype="float32", param_dtype="float32", scan_layers=False),
        "bf16 params, scanned": dict(dtype="bfloat16", param_dtype="bfloat16"),
        "bf16 compute, fp32 params, scanned": dict(dtype="bfloat16", param_dtype="float32"),
    }
    for name, runtime in variants.items():
        print(load_line(f"before {name}"))
        ms, hlo = step_ms(folder, args.batch, args.steps, args.prompt, **runtime)
        copies = big_copies(hlo)
        print(f"decode step, {name}: {ms:.1f} ms ({args.batch / ms * 1000:.1f} tokens/s); {len(copies)} big copies:")
        for c in copies[:12]:
            print(f"    {c}")


if __name__ == "__main__":
    main()

"""Compile the real train step for a TPU or GPU topology on this (CPU) machine: memory, FLOPs, time.

The command line and its full description are rolellm_jax/aot.py.
"""

from __future__ import annotations

import os
import re
import time

# Compile-only devices need no accelerator backend: don't start (or probe for) one.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# libtpu probes for TPU workers and the GCE metadata server; this machine has neither.
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
# Compiling opens no TPU, so the lock libtpu takes against a second process using the chips does not
# apply: without this, aot beside a training job (or another aot) dies on /tmp/libtpu_lockfile.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402

from rolellm_jax.errors import ConfigError  # noqa: E402
from rolellm_jax.parallel.sharding import make_mesh  # noqa: E402
from rolellm_jax.training.flops import peak_flops_per_device  # noqa: E402
from rolellm_jax.training.gpu_targets import GPUS, gpu_devices, is_gpu_topology, parse_gpu_topology, usable_memory  # noqa: E402
from rolellm_jax.training.memory_estimate import human_count  # noqa: E402
from rolellm_jax.training.run_config import model_config_of, parse_args  # noqa: E402
from rolellm_jax.training.train_step import TrainProgram  # noqa: E402

# HBM per chip (GiB), from the Cloud TPU system architecture pages.
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}

GIB = 1024**3
DEFAULT_MFUS = (0.3, 0.5)  # what-if MFU values of the time estimate (--mfu)


def chip_hbm_bytes(topology: str) -> int:
    generation = topology.split(":", 1)[0].split("-", 1)[0]
    if generation not in HBM_GIB:
        raise ConfigError(
            f"--topology {topology!r}: unknown TPU generation {generation!r} (known: {sorted(HBM_GIB)}; "
            f"GPUs: {sorted(GPUS)})"
        )
    return HBM_GIB[generation] * GIB


def topology_devices(topology: str) -> tuple[list, int, str]:
    """Compile-only devices of the topology, the bytes one of them may use, and what that limit is."""
    if is_gpu_topology(topology):
        spec = parse_gpu_topology(topology)[0]
        usable, fraction = usable_memory(spec)  # first: see its docstring
        limit = f"{usable / GIB:.1f} GiB ({fraction:g} of the GPU's {spec.memory_bytes / GIB:.1f} GiB)"
        return gpu_devices(topology), usable, limit
    hbm = chip_hbm_bytes(topology)
    from jax.experimental import topologies

    return topologies.get_topology_desc(topology, platform="tpu").devices, hbm, f"{hbm / GIB:.0f} GiB HBM"


def compile_step(program: TrainProgram, frozen, topology: str) -> jax.stages.Compiled:
    try:
        return program.jitted_step().lower(program.abstract_state(), frozen, program.abstract_batch()).compile()
    except RuntimeError as err:  # jax's cuDNN attention asks the installed cuDNN for its version when lowering
        if "cuDNN not found" in str(err):
            raise ConfigError(
                f"--topology {topology}: attention_impl=cudnn compiles against cuDNN, which is not "
                "installed: pip install -e '.[gpu-aot]', or --model.attention_impl=xla"
            ) from None
        raise


def cudnn_attention_calls(compiled: jax.stages.Compiled) -> dict:
    """cuDNN fused-attention custom calls in a GPU program (each scanned layer body counts once) and
    the mask kinds they were built with (CAUSAL skips the tiles above the diagonal; NO_MASK does not).
    GPU only: the text of a large TPU executable does not always print (an XLA RET_CHECK)."""
    calls = re.findall(r'custom_call_target="__cudnn\$fmha(\w*)".*?"mask_type":\s*"(\w+)"', compiled.as_text())
    backward = sum(target.endswith("Backward") for target, _ in calls)
    return {"forward": len(calls) - backward, "backward": backward, "masks": sorted({mask for _, mask in calls})}


def compile_for_topology(argv: list[str], topology: str) -> dict:
    cfg, _ = parse_args(argv)
    # Compile-only executables cannot be reloaded without their device: keep them out of the cache
    jax.config.update("jax_enable_compilation_cache", False)
    devices, hbm, memory_limit = topology_devices(topology)
    mesh = make_mesh(cfg.mesh, devices)
    model_cfg = model_config_of(cfg.model)
    program = TrainProgram.create(model_cfg, mesh, cfg.train, cfg.lora, cfg.data.seq_len)
    frozen = program.abstract_params if cfg.lora.enabled else None
    t0 = time.perf_counter()
    compiled = compile_step(program, frozen, topology)
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    total = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    total += mem.generated_code_size_in_bytes
    n_params = sum(x.size for x in jax.tree.leaves(program.abstract_params))
    tokens_per_step = cfg.train.global_batch_size * cfg.data.seq_len
    step_flops = tokens_per_step * program.flops_per_token()
    return {
        "topology": topology,
        "chips": len(devices),
        "device_kind": devices[0].device_kind,
        "mesh": dict(mesh.shape),
        "params": n_params,
        "compile_seconds": seconds,
        "arguments": mem.argument_size_in_bytes,
        "outputs": mem.output_size_in_bytes,
        "aliased": mem.alias_size_in_bytes,
        "temps": mem.temp_size_in_bytes,
        "code": mem.generated_code_size_in_bytes,
        "total": total,
        "hbm": hbm,
        "fits": total <= hbm,
        "memory_limit": memory_limit,
        "attention": model_cfg.attention_impl,
        "cudnn_attention_calls": cudnn_attention_calls(compiled) if model_cfg.attention_impl == "cudnn" else None,
        "global_batch": cfg.train.global_batch_size,
        "grad_accum": cfg.train.grad_accum,
        "seq_len": cfg.data.seq_len,
        "remat": model_cfg.remat_policy,
        "lora": cfg.lora.enabled,
        "steps": cfg.train.steps,
        "step_flops": step_flops,
        "peak_flops": peak_flops_per_device(devices[0]),
    }


def time_at_mfu(r: dict, mfu: float) -> tuple[float, float]:
    """(seconds per step, hours for the preset's steps) if the chips ran at this MFU."""
    step_seconds = r["step_flops"] / (r["chips"] * r["peak_flops"] * mfu)
    return step_seconds, step_seconds * r["steps"] / 3600


def _flops_text(flops: float) -> str:
    """In the largest unit that keeps it at or above 1 (a tiny test step is MFLOPs, a 7B one PFLOPs)."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.3g} FLOP"


def report(r: dict, mfus: tuple[float, ...] = DEFAULT_MFUS) -> str:
    lines = [
        f"train step compiled for {r['topology']} ({r['chips']} x {r['device_kind']}, mesh {r['mesh']}) "
        f"in {r['compile_seconds']:.0f} s",
        f"  model {human_count(r['params'])} params; batch {r['global_batch']} x {r['seq_len']} tokens "
        f"({r['grad_accum']} microbatches); remat {r['remat']}; attention {r['attention']}; lora {r['lora']}",
        "  per chip (memory_analysis):",
        f"    arguments (params + optimiser + batch) {r['arguments'] / GIB:8.2f} GiB",
        f"    outputs (aliased with donated args)    {r['outputs'] / GIB:8.2f} GiB (aliased {r['aliased'] / GIB:.2f})",
        f"    temporaries (activations, gradients)   {r['temps'] / GIB:8.2f} GiB",
        f"    generated code                         {r['code'] / GIB:8.2f} GiB",
        f"    total                                  {r['total'] / GIB:8.2f} GiB of {r['memory_limit']} "
        f"-> {'FITS' if r['fits'] else 'DOES NOT FIT'}",
        f"  model FLOPs per step {_flops_text(r['step_flops'])}",
    ]
    if r["cudnn_attention_calls"] is not None:
        calls = r["cudnn_attention_calls"]
        lines.insert(
            2,
            f"  cuDNN fused attention: {calls['forward']} forward, {calls['backward']} backward call(s) "
            f"in the program, mask {'/'.join(calls['masks'])}",
        )
    if r["peak_flops"]:
        lines.append(f"  if the {r['chips']} chip{'s' if r['chips'] > 1 else ''} ran at (assumed, not measured) MFU:")
        for mfu in mfus:
            step, hours = time_at_mfu(r, mfu)
            lines.append(
                f"    {100 * mfu:4.0f}% -> {step:7.2f} s/step, {r['steps']} steps in {hours:6.1f} h "
                f"= {hours * r['chips']:7.1f} chip-hours"
            )
    return "\n".join(lines)

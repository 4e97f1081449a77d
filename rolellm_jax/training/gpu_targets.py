"""NVIDIA GPUs that `rolellm_jax.aot` can compile for without one attached (deviceless XLA).

XLA's GPU compiler normally reads the device from the CUDA driver; given a GpuTargetConfigProto
instead, the CUDA PJRT plugin (jax-cuda12-plugin) compiles for that GPU on any machine. The
table holds the few hardware facts the compiler's decisions use (NVIDIA's data sheets and tuning
guides; memory as the CUDA runtime reports it, the figure XLA's own H100/H200/A100 specs carry).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rolellm_jax.errors import ConfigError

# cuDNN version the compiler may assume (flash attention needs >= 8.9); jax 0.10 wheels need 9.8+.
CUDNN_VERSION = (9, 8, 0)
# launch/gpu/xla_flags.sh lets JAX preallocate this share of GPU memory; XLA's buffers live in it.
DEFAULT_MEM_FRACTION = 0.9


@dataclass(frozen=True)
class GpuSpec:
    device_kind: str  # what jax.Device.device_kind reports (also picks the peak FLOP/s in flops.py)
    compute_capability: tuple[int, int]
    sm_count: int
    memory_bytes: int
    l2_bytes: int
    shared_memory_per_sm: int
    shared_memory_per_block_optin: int
    memory_bandwidth: int  # bytes/s
    clock_ghz: float
    fp32_units_per_sm: int


GPUS = {
    "h100": GpuSpec(
        "NVIDIA H100 80GB HBM3",
        (9, 0),
        132,
        84_942_979_072,
        50 * 2**20,
        228 * 1024,
        227 * 1024,
        3_352_320_000_000,
        1.98,
        128,
    ),
    "h200": GpuSpec(
        "NVIDIA H200 141GB HBM3e",
        (9, 0),
        132,
        151_397_597_184,
        50 * 2**20,
        228 * 1024,
        227 * 1024,
        4_800_000_000_000,
        1.98,
        128,
    ),
    "a100": GpuSpec(
        "NVIDIA A100-SXM4-80GB",
        (8, 0),
        108,
        85_100_068_864,
        40 * 2**20,
        164 * 1024,
        163 * 1024,
        2_039_040_000_000,
        1.41,
        64,
    ),
}


def is_gpu_topology(topology: str) -> bool:
    return topology.split(":", 1)[0] in GPUS


def parse_gpu_topology(topology: str) -> tuple[GpuSpec, int, int]:
    """``h100`` (one GPU), ``h100:8`` (one host of 8), ``h100:2x8`` (2 hosts of 8) -> (spec, hosts,
    GPUs per host)."""
    name, _, shape = topology.partition(":")
    if name not in GPUS:
        raise ConfigError(f"--topology {topology!r}: unknown GPU {name!r} (known: {sorted(GPUS)})")
    parts = (shape or "1").split("x")
    if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--topology {topology!r}: expected {name}, {name}:<gpus> or {name}:<hosts>x<gpus per host>")
    hosts, per_host = (1, int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    return GPUS[name], hosts, per_host


def target_config_text(spec: GpuSpec) -> str:
    """The stream_executor.GpuTargetConfigProto (text format) XLA compiles against."""
    major, minor = spec.compute_capability
    # sm_90a: Hopper's wgmma / TMA instructions, which cuDNN and Triton kernels use
    extension = "ACCELERATED_FEATURES" if major >= 9 else "NONE"
    info = {
        "threads_per_block_limit": 1024,
        "threads_per_warp": 32,
        "shared_memory_per_block": 48 * 1024,
        "shared_memory_per_core": spec.shared_memory_per_sm,
        "threads_per_core_limit": 2048,
        "core_count": spec.sm_count,
        "fpus_per_core": spec.fp32_units_per_sm,
        "block_dim_limit_x": 2**31 - 1,
        "block_dim_limit_y": 65535,
        "block_dim_limit_z": 65535,
        "memory_bandwidth": spec.memory_bandwidth,
        "l2_cache_size": spec.l2_bytes,
        "clock_rate_ghz": spec.clock_ghz,
        "device_memory_size": spec.memory_bytes,
        "shared_memory_per_block_optin": spec.shared_memory_per_block_optin,
        "registers_per_core_limit": 65536,
        "registers_per_block_limit": 65536,
        "thread_dim_limit_x": 1024,
        "thread_dim_limit_y": 1024,
        "thread_dim_limit_z": 64,
    }
    fields = "\n".join(f"  {key}: {value}" for key, value in info.items())
    cc = f"  cuda_compute_capability {{ major: {major} minor: {minor} feature_extension: {extension} }}"
    dnn = " ".join(f"{k}: {v}" for k, v in zip(("major", "minor", "patch"), CUDNN_VERSION))
    return (
        f'gpu_device_info {{\n{fields}\n{cc}\n  name: "{spec.device_kind}"\n}}\n'
        f'platform_name: "CUDA"\ndnn_version_info {{ {dnn} }}\n'
        f'device_description_str: "{spec.device_kind}"\n'
    )


def gpu_devices(topology: str) -> list:
    """Compile-only devices of the GPU topology (needs the CUDA PJRT plugin, no GPU)."""
    spec, hosts, per_host = parse_gpu_topology(topology)
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(
            topology, platform="cuda", topology=f"1x{hosts}x{per_host}", target_config=target_config_text(spec)
        )
    except NotImplementedError:  # jax found no CUDA plugin to make the topology
        raise ConfigError(
            f"--topology {topology}: compiling for a GPU needs the CUDA PJRT plugin: "
            "pip install -e '.[gpu-aot]' (no GPU needed)"
        ) from None
    return desc.devices


def usable_memory(spec: GpuSpec) -> tuple[int, float]:
    """Bytes of the pool JAX preallocates on this GPU (XLA's buffers must fit in it) and its share.
    Call it before gpu_devices: the CUDA plugin reads the same variable when jax loads it, and a bad
    value there surfaces only as "no plugin" after a traceback."""
    text = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", str(DEFAULT_MEM_FRACTION))
    try:
        fraction = float(text)
    except ValueError:
        raise ConfigError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={text!r}: expected a fraction like 0.9") from None
    return int(spec.memory_bytes * fraction), fraction

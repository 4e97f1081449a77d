"""Device mesh and logical-axis sharding (the MaxText recipe: names on tensors, one rules table).

Every parameter carries logical axis names in its ``out_sharding`` metadata (for example
``("layers", "embed", "heads")``); activations are constrained with ``constrain(x, names)``.
``LOGICAL_RULES`` is the ONE place that maps those names onto the mesh axes ``data``, ``fsdp`` and
``tensor``, so changing the parallelism layout is a config change, not a code change.

Without a mesh everything still works: ``constrain`` is a no-op and models build on one device.
Usage::

    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    abstract = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    state = jax.jit(init_state, out_shardings=param_shardings(nnx.state(abstract), mesh))()
    # or, for a model already in host memory: nnx.update(model, shard_params(nnx.state(model), mesh))
    with jax.set_mesh(mesh):          # activates constrain() inside the model
        logits = step(state, batch)   # batch rows sharded over ("data", "fsdp"): data.to_global_arrays
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from rolellm_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or tuple of axes, or None = replicated). Parameters use the plain
# names; activations use "activation_*" names so that e.g. the residual stream is not sharded over
# fsdp twice (batch already takes data and fsdp).
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", None),  # kv heads may be fewer than the tensor axis (GQA/MQA)
    ("activation_head_dim", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)


class ShardingError(UserError, ValueError):
    """A mesh that does not fit the devices, or a tensor that does not divide over its mesh axes."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; exactly one axis may be -1, meaning 'all remaining devices'."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    def resolve(self, device_count: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
            raise ShardingError(f"{self}: axis sizes must be positive, with at most one -1 (= the rest)")
        fixed = math.prod(s for s in sizes if s != -1)
        if device_count % fixed:
            divisors = [d for d in range(1, device_count + 1) if device_count % d == 0]
            raise ShardingError(
                f"{self} does not fit {device_count} devices: the fixed axes multiply to {fixed}, "
                f"which does not divide {device_count} (use sizes whose product is one of {divisors})"
            )
        sizes = [device_count // fixed if s == -1 else s for s in sizes]
        if math.prod(sizes) != device_count:
            raise ShardingError(
                f"{self} uses {math.prod(sizes)} of {device_count} devices; set one axis to -1 "
                f"or make data*fsdp*tensor == {device_count}"
            )
        return tuple(sizes)  # type: ignore[return-value]


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes (GSPMD propagates shardings between constraints)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = cfg.resolve(len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_to_spec(logical_axes: Sequence[str | None]) -> PartitionSpec:
    """Map logical axis names through LOGICAL_RULES; a mesh axis is used at most once."""
    rules = dict(LOGICAL_RULES)
    used: set[str] = set()
    spec: list[Any] = []
    for name in logical_axes:
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise ShardingError(f"logical axis {name!r} has no entry in LOGICAL_RULES")
        target = rules[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical_axes))


def _check_divisible(name: str, shape: tuple[int, ...], spec: PartitionSpec, mesh: Mesh) -> None:
    for dim, axes in zip(shape, spec):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else axes
        size = math.prod(mesh.shape[a] for a in axes)
        if dim % size:
            raise ShardingError(
                f"tensor {name} of shape {tuple(shape)} cannot be sharded as {spec} on mesh "
                f"{dict(mesh.shape)}: dimension {dim} is not divisible by {size}"
            )


def _variable_spec(path: tuple, var: nnx.Variable, mesh: Mesh) -> NamedSharding:
    axes = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
    spec = logical_to_spec(axes)
    _check_divisible("/".join(map(str, path)), tuple(var.shape), spec, mesh)
    return NamedSharding(mesh, spec)


def param_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """A NamedSharding per variable of ``state`` (an ``nnx.state(model)``, concrete or abstract).

    Variables without logical names are replicated. Use as ``out_shardings`` of a jitted init.
    """
    flat = [(path, _variable_spec(path, var, mesh)) for path, var in nnx.to_flat_state(state)]
    return nnx.from_flat_state(flat)


def shard_params(state: nnx.State, mesh: Mesh) -> nnx.State:
    """Place every variable of ``state`` on ``mesh`` according to its logical axis names."""
    flat = []
    for path, var in nnx.to_flat_state(state):
        sharding = _variable_spec(path, var, mesh)
        flat.append((path, var.replace(jax.device_put(var.get_value(), sharding))))
    return nnx.from_flat_state(flat)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation inside jit; a no-op when no mesh is set."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = logical_to_spec(logical_axes)
    # A dimension that does not divide (e.g. batch 1 at generation) stays unconstrained.
    spec = PartitionSpec(
        *(
            axes
            if axes is None
            or dim % int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)])) == 0
            else None
            for dim, axes in zip(x.shape, spec)
        )
    )
    return jax.lax.with_sharding_constraint(x, spec)

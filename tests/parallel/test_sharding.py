"""Mesh construction, the logical-axis rules table, parameter placement and activation constraints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from rolellm_jax.models import build_model
from rolellm_jax.parallel.sharding import (
    LOGICAL_RULES,
    MeshConfig,
    ShardingError,
    constrain,
    logical_sharding,
    logical_to_spec,
    make_mesh,
    param_shardings,
    shard_params,
)
from tests.helpers.tiny_models import tiny_config

TINY = tiny_config(dtype="float32")


@pytest.mark.parametrize(
    "cfg,shape",
    [
        (MeshConfig(), (1, 8, 1)),
        (MeshConfig(data=2, fsdp=-1, tensor=2), (2, 2, 2)),
        (MeshConfig(data=-1, fsdp=1, tensor=4), (2, 1, 4)),
        (MeshConfig(data=1, fsdp=8, tensor=1), (1, 8, 1)),
    ],
)
def test_make_mesh_resolves_the_rest(cfg, shape):
    mesh = make_mesh(cfg)
    assert tuple(mesh.shape.values()) == shape
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_make_mesh_on_a_subset_of_devices():
    assert dict(make_mesh(MeshConfig(tensor=2), devices=jax.devices()[:4]).shape) == {"data": 1, "fsdp": 2, "tensor": 2}


@pytest.mark.parametrize(
    "cfg,needle",
    [
        (MeshConfig(data=3, fsdp=-1), "fixed axes multiply to 3, which does not divide 8"),
        (MeshConfig(data=2, fsdp=2, tensor=1), "uses 4 of 8 devices"),
        (MeshConfig(data=-1, fsdp=-1), "at most one -1"),
        (MeshConfig(data=0), "positive"),
    ],
)
def test_make_mesh_refuses_what_does_not_fit(cfg, needle):
    with pytest.raises(ShardingError, match=needle):
        make_mesh(cfg)


def test_rules_table_maps_every_param_axis_and_uses_a_mesh_axis_once():
    names = {name for name, _ in LOGICAL_RULES}
    assert len(names) == len(LOGICAL_RULES), "one entry per logical name"
    model = nnx.eval_shape(lambda: build_model(TINY, rngs=nnx.Rngs(0)))
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        assert set(var.get_metadata()["out_sharding"]) <= names
    assert logical_to_spec(("layers", "embed", "heads")) == P(None, "fsdp", "tensor")
    assert logical_to_spec(("activation_batch", "activation_length", "activation_embed")) == P(
        ("data", "fsdp"), None, None
    )
    assert logical_to_spec(("vocab", "mlp")) == P("tensor", None)  # tensor already taken by vocab
    with pytest.raises(ShardingError, match="'nonsense'"):
        logical_to_spec(("nonsense",))


def test_shard_params_places_every_tensor_by_its_names():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model = build_model(TINY, rngs=nnx.Rngs(0))
    placed = shard_params(nnx.state(model, nnx.Param), mesh)
    flat = {".".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(placed)}
    assert flat["embed_tokens.embedding"].sharding.spec == P("tensor", "fsdp")
    assert flat["layers.mlp.down_proj.kernel"].sharding.spec == P(None, "tensor", "fsdp")
    assert flat["norm.scale"].sharding.spec == P(None)
    # abstract version for jitted initialisation gives the same specs
    abstract = nnx.eval_shape(lambda: build_model(TINY, rngs=nnx.Rngs(0)))
    specs = {
        ".".join(map(str, p)): s.spec
        for p, s in nnx.to_flat_state(param_shardings(nnx.state(abstract, nnx.Param), mesh))
    }
    assert specs == {k: v.sharding.spec for k, v in flat.items()}
    assert logical_sharding(mesh, ("embed", "vocab")).spec == P("fsdp", "tensor")


def test_shard_params_names_the_tensor_that_does_not_divide():
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=8))
    model = build_model(TINY.replace(vocab_size=60), rngs=nnx.Rngs(0))
    with pytest.raises(ShardingError, match=r"embed_tokens/embedding of shape \(60, 32\).*60 is not divisible by 8"):
        shard_params(nnx.state(model, nnx.Param), mesh)


def test_constrain_is_a_no_op_without_a_mesh_and_shards_with_one():
    x = jnp.ones((8, 4, 6))
    names = ("activation_batch", "activation_length", "activation_mlp")
    assert jax.jit(lambda x: constrain(x, names))(x).sharding.is_fully_replicated
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    with jax.set_mesh(mesh):
        y = jax.jit(lambda x: constrain(x, names) * 2)(x)
        assert y.sharding.spec == P(("data", "fsdp"), None, "tensor")
        # a dimension that does not divide stays unconstrained instead of failing
        z = jax.jit(lambda x: constrain(x, names))(jnp.ones((1, 4, 6)))
    np.testing.assert_array_equal(np.asarray(y), 2 * np.ones((8, 4, 6)))
    assert z.shape == (1, 4, 6)


def test_jitted_init_lands_sharded_without_a_host_copy():
    """The pattern train.py uses: abstract model -> shardings -> jit(init, out_shardings)."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    abstract = nnx.eval_shape(lambda: build_model(TINY, rngs=nnx.Rngs(0)))
    shardings = param_shardings(nnx.state(abstract), mesh)
    state = jax.jit(lambda: nnx.state(build_model(TINY, rngs=nnx.Rngs(0))), out_shardings=shardings)()
    kernel = state["layers"]["self_attn"]["q_proj"]["kernel"][...]
    assert kernel.sharding.spec == P(None, "fsdp", "tensor")
    reference = nnx.state(build_model(TINY, rngs=nnx.Rngs(0)))["layers"]["self_attn"]["q_proj"]["kernel"][...]
    np.testing.assert_allclose(np.asarray(kernel), np.asarray(reference), rtol=1e-6)  # jit vs eager: 1 ulp

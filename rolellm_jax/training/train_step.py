"""The jitted RoCIT train step on a mesh, and the sharded train state it updates.

Parameters live as the pure-dict tree of checkpoints/tensor_layout.py (fp32 master copy), each leaf sharded by its
logical axis names through `sharding.LOGICAL_RULES`; the batch is sharded over (data, fsdp). The
model is rebuilt inside the step from its graph definition (`nnx.merge`), so the step is a pure
function of (state, batch) that works the same for jit on a CPU and for an ahead-of-time compile
for a TPU topology (aot.py).

Loss: next-token cross entropy in float32, summed over answer tokens (`loss_mask`) and divided by
their count over the whole global batch, so gradient accumulation over microbatches gives the
same update as one big batch. With LoRA the trainable tree is the adapters only and the base
params are a frozen input of the step.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rolellm_jax.errors import UserError
from rolellm_jax.models import build_model
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.models.kernels import cpu_matmul
from rolellm_jax.parallel.sharding import logical_sharding, param_shardings
from rolellm_jax.training import lora as lora_lib
from rolellm_jax.training.config import LoraConfig, TrainConfig
from rolellm_jax.training.flops import flops_per_token, matmul_params
from rolellm_jax.training.optim import lr_schedule, make_optimizer

log = logging.getLogger(__name__)

BATCH_KEYS = ("input_ids", "targets", "loss_mask", "segment_ids", "positions")


class TrainSetupError(UserError, ValueError):
    """A batch / mesh / config combination that cannot run (the message says what would)."""


class TrainError(UserError, RuntimeError):
    """The run cannot go on (diverged, out of memory); the message says where things are.
    Defined here, not in train.py: under ``python -m rolellm_jax.train`` that file is ``__main__``,
    and a class defined there would not read as one of ours (train._is_ours)."""


def _with_sharding(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


@dataclasses.dataclass
class TrainProgram:
    """Everything the loop needs to run (or aot.py needs to compile) the train step."""

    model_cfg: ModelConfig
    mesh: Mesh
    train: TrainConfig
    lora: LoraConfig
    graphdef: Any
    param_template: nnx.State  # abstract nnx.State of the model's Params (tree structure for merge)
    abstract_params: dict  # pure dict of ShapeDtypeStruct with shardings
    batch_sharding: NamedSharding
    optimizer: optax.GradientTransformation
    seq_len: int
    _step: Callable | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(
        cls, model_cfg: ModelConfig, mesh: Mesh, train: TrainConfig, lora: LoraConfig, seq_len: int
    ) -> TrainProgram:
        on_cpu = mesh.devices.flat[0].platform == "cpu"  # the compiler the step is built for (aot: TPU on a CPU host)
        if model_cfg.weight_grad == "auto":
            model_cfg = model_cfg.replace(weight_grad="cpu" if on_cpu else "xla")
        if on_cpu and model_cfg.scan_layers and cpu_matmul.is_16bit_float(model_cfg.dtype):
            # XLA:CPU upcasts each 16-bit dynamic-update-slice to float32 (float-normalization-bf16), so
            # the scan's stacked backward residuals were converted and rewritten whole at every layer:
            # O(layers^2) memory traffic, ~1.8 of a 4.7 s SmolLM2 bf16 LoRA step (benchmarks/RESULTS.md).
            # Unrolled layers read the same stacked params, so checkpoints do not change.
            log.info("model.scan_layers: %s compute on a CPU trains with unrolled layers", model_cfg.dtype)
            model_cfg = model_cfg.replace(scan_layers=False)
        dp = mesh.shape["data"] * mesh.shape["fsdp"]
        if train.grad_accum < 1 or train.global_batch_size % train.grad_accum:
            raise TrainSetupError(
                f"train.global_batch_size={train.global_batch_size} does not split into "
                f"train.grad_accum={train.grad_accum} microbatches: use a grad_accum that divides it"
            )
        micro = train.global_batch_size // train.grad_accum
        if micro % dp:
            raise TrainSetupError(
                f"microbatch of {micro} rows (train.global_batch_size={train.global_batch_size} / "
                f"train.grad_accum={train.grad_accum}) does not divide over data*fsdp={dp} devices "
                f"of mesh {dict(mesh.shape)}: use train.global_batch_size={_round_up(micro, dp) * train.grad_accum} "
                f"or a mesh whose data*fsdp divides {micro}"
            )
        abstract_model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
        graphdef, template = nnx.split(abstract_model, nnx.Param)
        shardings = nnx.to_pure_dict(param_shardings(template, mesh))
        abstract_params = _with_sharding(nnx.to_pure_dict(template), shardings)
        batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))
        return cls(
            model_cfg,
            mesh,
            train,
            lora,
            graphdef,
            template,
            abstract_params,
            batch_sharding,
            make_optimizer(train),
            seq_len,
        )

    # ---------------------------------------------------------------- params and state
    def init_params(self, seed: int) -> dict:
        """Random parameters created already sharded (never whole on one device)."""
        model_cfg = self.model_cfg

        def init():
            return nnx.to_pure_dict(nnx.state(build_model(model_cfg, rngs=nnx.Rngs(seed)), nnx.Param))

        shardings = jax.tree.map(lambda x: x.sharding, self.abstract_params)
        with jax.set_mesh(self.mesh):
            return jax.jit(init, out_shardings=shardings)()

    def place_params(self, params: dict) -> dict:
        """Put host or device params onto this program's shardings (and param dtype)."""
        return jax.tree.map(
            lambda x, a: jax.device_put(jnp.asarray(x, a.dtype), a.sharding), params, self.abstract_params
        )

    def init_state(self, params: dict, seed: int) -> tuple[dict, dict | None]:
        """(train state, frozen base or None). The train state is what checkpoints hold."""
        trainable, frozen = params, None
        if self.lora.enabled:
            abstract_adapters = self.abstract_adapters()
            shardings = jax.tree.map(lambda x: x.sharding, abstract_adapters)
            lora_cfg = self.lora
            trainable = jax.jit(
                lambda p: lora_lib.init_adapters(p, lora_cfg, jax.random.key(seed + 1)), out_shardings=shardings
            )(params)
            frozen = params
        state = {"trainable": trainable, "opt_state": self.optimizer.init(trainable), "step": jnp.zeros((), jnp.int32)}
        # commit every leaf (scalars too) to its mesh sharding, as the step's outputs will be
        return jax.device_put(state, jax.tree.map(lambda x: x.sharding, self.abstract_state())), frozen

    def abstract_adapters(self) -> dict:
        abstract = jax.eval_shape(lambda: lora_lib.init_adapters(self.abstract_params, self.lora, jax.random.key(0)))
        base_axes = jax.tree.map(
            lambda v: tuple(v.get_metadata().get("out_sharding") or (None,) * len(v.shape)),
            _axes_tree(self.param_template),
            is_leaf=lambda v: isinstance(v, nnx.Variable),
        )
        axes = lora_lib.adapter_logical_axes(base_axes, abstract)
        shardings = jax.tree.map(lambda a: logical_sharding(self.mesh, a), axes, is_leaf=lambda a: isinstance(a, tuple))
        return _with_sharding(abstract, shardings)

    def flops_per_token(self) -> float:
        """Model FLOPs per trained token of this step (training/flops.py; LoRA: frozen base, trained adapters)."""
        adapters = sum(x.size for x in jax.tree.leaves(self.abstract_adapters())) if self.lora.enabled else None
        return flops_per_token(self.model_cfg, matmul_params(self.abstract_params), self.seq_len, adapters)

    def abstract_state(self) -> dict:
        """The train state as ShapeDtypeStructs with this mesh's shardings (restore target, AOT)."""
        trainable = self.abstract_adapters() if self.lora.enabled else self.abstract_params
        opt_state = jax.eval_shape(self.optimizer.init, trainable)
        # optimiser moments shard like their params; scalars (counts) replicate
        replicated = NamedSharding(self.mesh, PartitionSpec())
        opt_shardings = _opt_shardings(opt_state, trainable, replicated)
        return {
            "trainable": trainable,
            "opt_state": _with_sharding(opt_state, opt_shardings),
            "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
        }

    def abstract_batch(self) -> dict:
        shape = (self.train.global_batch_size, self.seq_len)
        dtypes = {"loss_mask": jnp.float32}
        return {
            k: jax.ShapeDtypeStruct(shape, dtypes.get(k, jnp.int32), sharding=self.batch_sharding) for k in BATCH_KEYS
        }

    def full_params(self, state: dict, frozen: dict | None) -> dict:
        """Plain parameters of the current model (LoRA merged): what gets exported."""
        if not self.lora.enabled:
            return state["trainable"]
        lora_cfg = self.lora
        return jax.jit(lambda f, a: lora_lib.merge(f, a, lora_cfg))(frozen, state["trainable"])

    # ---------------------------------------------------------------- the step
    def logits(self, trainable: dict, frozen: dict | None, batch: dict) -> jax.Array:
        """float32 [B, T, V] logits of the current model (LoRA adapters applied unmerged) on a batch."""
        state = jax.tree.map(lambda v: v, self.param_template, is_leaf=lambda v: isinstance(v, nnx.Variable))
        nnx.replace_by_pure_dict(state, frozen if self.lora.enabled else trainable)
        model = nnx.merge(self.graphdef, state)
        if self.lora.enabled:
            lora_lib.attach(model, trainable, self.lora)
        return model(batch["input_ids"], positions=batch["positions"], segment_ids=batch["segment_ids"])

    def loss_sums(self, trainable: dict, frozen: dict | None, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(sum of answer-token cross entropy, number of answer tokens) for one microbatch."""
        logits = self.logits(trainable, frozen, batch)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
        mask = batch["loss_mask"].astype(jnp.float32)
        return jnp.sum(ce * mask), jnp.sum(mask)

    def step_fn(self, state: dict, frozen: dict | None, batch: dict) -> tuple[dict, dict]:
        accum = self.train.grad_accum
        grad_fn = jax.value_and_grad(self.loss_sums, has_aux=True)
        trainable = state["trainable"]
        if accum == 1:
            (loss_sum, count), grads = grad_fn(trainable, frozen, batch)
        else:
            micro_spec = NamedSharding(self.mesh, PartitionSpec(None, ("data", "fsdp"), None))
            micro = jax.tree.map(
                lambda x: jax.lax.with_sharding_constraint(x.reshape(accum, -1, x.shape[-1]), micro_spec), batch
            )

            def body(carry, mb):
                g_acc, l_acc, n_acc = carry
                (loss, n), g = grad_fn(trainable, frozen, mb)
                return (jax.tree.map(jnp.add, g_acc, g), l_acc + loss, n_acc + n), None

            zeros = jax.tree.map(jnp.zeros_like, trainable)
            (grads, loss_sum, count), _ = jax.lax.scan(body, (zeros, jnp.float32(0), jnp.float32(0)), micro)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], trainable)
        new_state = {
            "trainable": optax.apply_updates(trainable, updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        metrics = {
            "loss": loss_sum / denom,
            "grad_norm": optax.tree.norm(grads),
            "loss_tokens": count,
            "lr": lr_schedule(self.train)(state["step"]),
        }
        return new_state, metrics

    def jitted_step(self) -> Callable:
        """step(state, frozen, batch) -> (state, metrics); state is donated."""
        if self._step is None:
            abstract = self.abstract_state()
            state_shardings = jax.tree.map(lambda x: x.sharding, abstract)
            frozen_shardings = jax.tree.map(lambda x: x.sharding, self.abstract_params) if self.lora.enabled else None
            replicated = NamedSharding(self.mesh, PartitionSpec())
            jitted = jax.jit(
                self.step_fn,
                in_shardings=(state_shardings, frozen_shardings, self.batch_sharding),
                out_shardings=(state_shardings, replicated),
                donate_argnums=(0,),
            )
            mesh = self.mesh

            def step(state, frozen, batch):
                with jax.set_mesh(mesh):  # activation constraints in the model read this mesh
                    return jitted(state, frozen, batch)

            step.lower = lambda *args: _lower_on(mesh, jitted, *args)
            self._step = step
        return self._step


def _lower_on(mesh: Mesh, jitted: Any, *args: Any) -> Any:
    with jax.set_mesh(mesh):
        return jitted.lower(*args)


def _axes_tree(template: nnx.State) -> Any:
    """Pure-dict tree of the template's Variables (keeps metadata, drops the State wrapper)."""
    flat = nnx.to_flat_state(template)
    out: dict = {}
    for path, var in flat:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = var
    return out


def _opt_shardings(opt_state: Any, trainable: Any, replicated: NamedSharding) -> Any:
    """Shard each optimiser leaf like the param it mirrors (same tree path suffix), else replicate."""
    param_by_path = {
        tuple(getattr(k, "key", k) for k in path): leaf.sharding
        for path, leaf in jax.tree_util.tree_flatten_with_path(trainable)[0]
    }

    def pick(path, leaf):
        keys = tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
        for start in range(len(keys)):
            sharding = param_by_path.get(keys[start:])
            if sharding is not None and leaf.ndim > 0:
                return sharding
        return replicated

    return jax.tree_util.tree_map_with_path(pick, opt_state)


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple

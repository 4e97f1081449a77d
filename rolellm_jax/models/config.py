"""ModelConfig: the architecture of a decoder of one of FAMILIES, plus how to run it.

Field names follow the Hugging Face configs so that conversion is a copy, not a translation.
Architecture fields describe the weights; runtime fields (dtypes, scan, remat, attention
kernel) only change how the same weights are computed and never enter a converted checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from etils import epath

from rolellm_jax.errors import ConfigError

# family -> its transformers class; model_type (config.json) is the family name itself, but for MODEL_TYPES
FAMILY_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "glm": "GlmForCausalLM",
    "glm4": "Glm4ForCausalLM",  # GLM-4-0414
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",  # the text model only
}
FAMILIES = tuple(FAMILY_ARCHITECTURES)
HF_ARCHITECTURES = {arch: family for family, arch in FAMILY_ARCHITECTURES.items()}
# config.json's model_type where it is not the family name
MODEL_TYPES = {**{family: family for family in FAMILIES}, "gemma3": "gemma3_text"}
GEMMA_FAMILIES = ("gemma2", "gemma3")
LAYER_TYPES = ("sliding_attention", "full_attention")  # transformers' names, per layer in layer_types
GEMMA_FIELDS = (
    "layer_types",
    "rope_local_theta",
    "query_pre_attn_scalar",
    "attn_logit_softcapping",
    "final_logit_softcapping",
)
QKV_BIAS_FAMILIES = ("glm", "glm4", "qwen2")  # q/k/v biases by architecture (o_proj never has one)
# The runtime fields' allowed values, checked when a config is made (a preset, a flag, load_model's
# keywords) so that a typo fails at once, naming them, instead of deep inside flax or after data loading.
DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICY_NAMES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")  # layers.REMAT_POLICIES
ATTENTION_IMPLS = ("xla", "cudnn", "splash")  # models/attention.py
WEIGHT_GRADS = ("auto", "xla", "cpu")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # Llama-3 style scaling: {"rope_type": "llama3", "factor", "low_freq_factor",
    # "high_freq_factor", "original_max_position_embeddings"}, or {"rope_type": "linear", "factor"};
    # None for plain rotary. With rope_local_theta set, the full-attention layers' only.
    rope_scaling: dict[str, Any] | None = None
    partial_rotary_factor: float = 1.0  # GLM rotates only this fraction of each head
    attention_bias: bool = False  # q/k/v bias (GLM, Qwen2); the output projection never has one
    # Mistral: each token attends to at most this many latest tokens (itself included), in every layer;
    # with layer_types (Gemma) in the "sliding_attention" layers only
    sliding_window: int | None = None
    # Gemma 2 / 3: each layer's attention, one of LAYER_TYPES; None: every layer alike
    layer_types: tuple[str, ...] | None = None
    rope_local_theta: float | None = None  # Gemma 3: the sliding layers' rotary base (plain rope); None: rope_theta
    query_pre_attn_scalar: float | None = None  # Gemma: attention scale = this ** -0.5; None: head_size
    attn_logit_softcapping: float | None = None  # Gemma 2: attention scores -> cap * tanh(scores / cap)
    final_logit_softcapping: float | None = None  # Gemma 2: logits -> cap * tanh(logits / cap)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    # --- runtime only ---
    param_dtype: str = "float32"
    dtype: str = "bfloat16"  # compute dtype
    scan_layers: bool = True
    remat_policy: str = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
    attention_impl: str = "xla"  # xla | cudnn | splash (see models/layers.py:attention)
    # How dense layers' weight gradients are computed: xla (the compiler's own transpose) | cpu
    # (laid out for XLA:CPU's fast GEMM, models/kernels/cpu_matmul.py) | auto (cpu when training on a
    # CPU mesh, else xla; TrainProgram decides, the model alone treats auto as xla).
    weight_grad: str = "auto"

    RUNTIME_FIELDS = ("param_dtype", "dtype", "scan_layers", "remat_policy", "attention_impl", "weight_grad")
    WEIGHT_GRADS = WEIGHT_GRADS

    def __post_init__(self):
        for name, allowed in (
            ("family", FAMILIES),
            ("param_dtype", DTYPES),
            ("dtype", DTYPES),
            ("remat_policy", REMAT_POLICY_NAMES),
            ("attention_impl", ATTENTION_IMPLS),
            ("weight_grad", WEIGHT_GRADS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if self.attention_impl == "cudnn" and self.dtype not in ("bfloat16", "float16"):
            raise ConfigError(f"attention_impl='cudnn' needs dtype bfloat16 or float16, got dtype={self.dtype!r}")
        if self.layer_types is not None:  # a tuple, so that the frozen config hashes and compares as one
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
            unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
            if unknown or len(self.layer_types) != self.num_hidden_layers:
                raise ConfigError(
                    f"layer_types={list(self.layer_types)}: expected {self.num_hidden_layers} entries, "
                    f"each one of {', '.join(LAYER_TYPES)}"
                )
        # fields that only a Gemma checkpoint can carry: another family's config.json would drop them on export
        gemma_only = [name for name in GEMMA_FIELDS if getattr(self, name) is not None]
        if self.family not in GEMMA_FAMILIES and gemma_only:
            raise ConfigError(f"{', '.join(gemma_only)}: only for the families {', '.join(GEMMA_FAMILIES)}")
        if self.rope_local_theta is not None and self.family != "gemma3":
            raise ConfigError(f"rope_local_theta: only for the family gemma3, not {self.family!r}")
        if self.attn_logit_softcapping is not None and self.attention_impl != "xla":
            raise ConfigError(
                f"attention_impl={self.attention_impl!r} does not implement attn_logit_softcapping: use 'xla'"
            )
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ConfigError(f"sliding_window={self.sliding_window}: expected a positive number of tokens or None")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_size * self.partial_rotary_factor)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ---- our own JSON (written next to converted checkpoints) ----
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown model config key(s) {unknown}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        epath.Path(path).write_text(
            json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )  # or a bucket URL

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(epath.Path(path).read_text(encoding="utf-8")), source=str(path))

    # ---- Hugging Face config.json (the classes of FAMILY_ARCHITECTURES) ----
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], source: str = "config.json", **runtime) -> ModelConfig:
        archs = hf.get("architectures") or []
        family = next((HF_ARCHITECTURES[a] for a in archs if a in HF_ARCHITECTURES), None)
        if family is None and not archs:
            family = next((f for f, model_type in MODEL_TYPES.items() if model_type == hf.get("model_type")), None)
        if family is None:
            gemma3_vision = "Gemma3ForConditionalGeneration" in archs or hf.get("model_type") == "gemma3"
            raise ConfigError(
                f"{source}: unsupported architecture {archs or hf.get('model_type')!r}; "
                f"supported: {sorted(HF_ARCHITECTURES)}"
                + ("; of Gemma 3 only the text model Gemma3ForCausalLM is supported" if gemma3_vision else "")
            )
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if key not in hf:
                raise ConfigError(f"{source}: missing key {key!r}")
        gemma = family in GEMMA_FAMILIES
        if gemma:
            hf = _as_transformers_reads_it(hf, family, source)
        _refuse_what_we_would_mishandle(hf, family, source)
        # transformers 5 keeps rope settings in rope_parameters (Gemma 3: one dict per layer type);
        # older files use rope_theta/rope_scaling.
        rope = dict(hf.get("rope_parameters") or {})
        local_theta = None
        if family == "gemma3":
            local, rope = rope["sliding_attention"], dict(rope["full_attention"])
            if local.get("rope_type", "default") != "default":
                raise ConfigError(f"{source}: rope_parameters.sliding_attention={local!r}: only rope_type 'default'")
            local_theta = float(local["rope_theta"])
        rope_theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        partial = rope.pop("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
        scaling = rope if rope.get("rope_type", "default") != "default" else hf.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type")) not in ("llama3", "linear", "default", None):
            raise ConfigError(f"{source}: unsupported rope scaling {scaling!r} (supported: llama3, linear)")
        if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
            scaling = None
        heads = hf["num_attention_heads"]
        return cls(
            family=family,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim"),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=dict(scaling) if scaling else None,
            partial_rotary_factor=float(partial),
            attention_bias=family == "qwen2" or bool(hf.get("attention_bias", family in ("glm", "glm4"))),
            sliding_window=hf.get("sliding_window") if family in ("mistral", *GEMMA_FAMILIES) else None,
            layer_types=tuple(hf["layer_types"]) if gemma else None,
            rope_local_theta=local_theta,
            query_pre_attn_scalar=hf["query_pre_attn_scalar"] if gemma else None,
            attn_logit_softcapping=hf.get("attn_logit_softcapping") if gemma else None,
            final_logit_softcapping=hf.get("final_logit_softcapping") if gemma else None,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            **runtime,
        )

    @property
    def _uniform_layer_type(self) -> str:  # every layer's without layer_types
        return "full_attention" if self.sliding_window is None else "sliding_attention"

    def to_hf_config(self) -> dict[str, Any]:
        rope: dict[str, Any] = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling:
            rope.update(self.rope_scaling)
        if self.family in ("glm", "glm4"):
            rope["partial_rotary_factor"] = self.partial_rotary_factor
        hf = {
            "architectures": [FAMILY_ARCHITECTURES[self.family]],
            "model_type": MODEL_TYPES[self.family],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_size,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "attention_bias": self.attention_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.param_dtype,
        }
        if self.family == "llama":
            hf["mlp_bias"] = False
        if self.family == "mistral":
            hf["sliding_window"] = self.sliding_window
        if self.family in ("qwen2", "qwen3"):
            hf["use_sliding_window"] = False
        if self.family in GEMMA_FAMILIES:
            del hf["hidden_act"]
            hf.update(
                hidden_activation="gelu_pytorch_tanh",
                sliding_window=self.sliding_window,
                layer_types=list(self.layer_types or [self._uniform_layer_type] * self.num_hidden_layers),
                query_pre_attn_scalar=self.query_pre_attn_scalar or self.head_size,
                attn_logit_softcapping=self.attn_logit_softcapping,
                final_logit_softcapping=self.final_logit_softcapping,
            )
        if self.family == "gemma3":
            local = {"rope_theta": self.rope_local_theta, "rope_type": "default"} if self.rope_local_theta else rope
            hf.update(rope_parameters={"sliding_attention": local, "full_attention": rope})
            hf["use_bidirectional_attention"] = False
        return hf


class StaticConfig:
    """A ModelConfig held as a static graph attribute. GraphDefs are jit cache keys and must hash,
    but HF-derived configs carry dicts and lists (rope_scaling, eos_token_id); hash the JSON."""

    __slots__ = ("value", "_key")

    def __init__(self, cfg: ModelConfig):
        self.value = cfg
        self._key = json.dumps(cfg.to_dict(), sort_keys=True)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StaticConfig) and self._key == other._key


def _as_transformers_reads_it(hf: dict[str, Any], family: str, source: str) -> dict[str, Any]:
    """Gemma config.json files come in several generations (without layer_types; rope_theta,
    rope_local_base_freq and rope_scaling instead of rope_parameters per layer type): read them with the
    installed transformers config class, so that we see the values its model runs with."""
    from transformers import AutoConfig  # only here: the other families' fields are read as they are

    fields = {k: v for k, v in hf.items() if k not in ("model_type", "transformers_version")}
    try:
        return AutoConfig.for_model(MODEL_TYPES[family], **fields).to_dict()
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{source}: transformers' {FAMILY_ARCHITECTURES[family]} config refuses it: {err}") from err


def _refuse_what_we_would_mishandle(hf: dict[str, Any], family: str, source: str) -> None:
    """One-line errors naming a config.json field whose setting these models do not implement
    (loading anyway would compute something else than transformers does)."""
    if hf.get("quantization_config"):
        method = hf["quantization_config"].get("quant_method", "?")
        raise ConfigError(
            f"{source}: quantization_config (quant_method={method!r}): a quantized checkpoint; dequantise it "
            "first (transformers: from_pretrained(..., dtype=torch.float32), then save_pretrained without it)"
        )
    if hf.get("mlp_bias"):
        raise ConfigError(f"{source}: mlp_bias=true is not supported")
    if family in GEMMA_FAMILIES:
        _refuse_gemma_fields(hf, source)
    elif hf.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ConfigError(f"{source}: hidden_act={hf['hidden_act']!r} is not supported (SwiGLU with silu only)")
    if hf.get("attention_bias") and family not in QKV_BIAS_FAMILIES:
        # LlamaForCausalLM / Qwen3ForCausalLM then also bias o_proj, which our attention never has
        raise ConfigError(f"{source}: attention_bias=true is not supported for {FAMILY_ARCHITECTURES[family]}")
    if hf.get("use_sliding_window"):  # Qwen2/Qwen3: sliding window on the layers from max_window_layers on
        raise ConfigError(
            f"{source}: use_sliding_window=true is not supported (sliding_window={hf.get('sliding_window')})"
        )


def _refuse_gemma_fields(hf: dict[str, Any], source: str) -> None:
    if hf.get("hidden_activation") != "gelu_pytorch_tanh":
        raise ConfigError(
            f"{source}: hidden_activation={hf.get('hidden_activation')!r} is not supported "
            "(GeGLU with gelu_pytorch_tanh only)"
        )
    unknown = sorted(set(hf["layer_types"]) - set(LAYER_TYPES))
    if unknown:
        raise ConfigError(f"{source}: layer_types has {unknown}: supported layer types are {list(LAYER_TYPES)}")
    if hf.get("use_bidirectional_attention"):
        raise ConfigError(f"{source}: use_bidirectional_attention=true is not supported (causal attention only)")

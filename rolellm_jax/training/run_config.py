"""The training run's configuration: typed dataclasses, YAML presets, dotted CLI overrides.

A run is `RunConfig` = model + data + mesh + train (optimiser, steps, batch) + lora + checkpoint +
resume + logging. Values come from, in order: the demo preset (`launch/configs/demo.yaml`, itself on
the dataclass defaults), the YAML file of `--config FILE` layered on it (keys it leaves out keep the
demo's values: a file with only train.* trains the demo's tiny model, never the defaults' 7B one),
then dotted overrides (`--train.lr=1e-5`, values parsed as YAML so `--lora.targets=[q_proj,v_proj]`
and `--model.init=null` work). Enumerated values are checked here, naming the allowed ones (CHOICES).

The RoleLLM paper does not publish its RoCIT hyper-parameters (learning rate, schedule, batch,
epochs, LoRA or full tuning): every optimiser default below and in the presets is OUR choice.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from etils import epath

from data_gen import rolebench as schema
from rolellm_jax.data.examples import DataConfig
from rolellm_jax.errors import ConfigError
from rolellm_jax.models.config import ATTENTION_IMPLS, DTYPES, FAMILIES, REMAT_POLICY_NAMES, WEIGHT_GRADS, ModelConfig
from rolellm_jax.parallel.sharding import MeshConfig
from rolellm_jax.parallel.storage import storage_path
from rolellm_jax.training.config import CheckpointConfig, LoggingConfig, LoraConfig, ResumeConfig, TrainConfig

PRESET_DIR = Path(__file__).resolve().parents[2] / "launch" / "configs"


DEFAULT_PRESET = PRESET_DIR / "demo.yaml"


def _model_section_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    own = [
        ("init", "str | None", dataclasses.field(default=None)),
        ("tokenizer", "str | None", dataclasses.field(default=None)),
        ("tokenizer_vocab_size", "int", dataclasses.field(default=512)),
    ]
    hints = typing.get_type_hints(ModelConfig)
    arch = [(f.name, hints[f.name], dataclasses.field(default=f.default)) for f in dataclasses.fields(ModelConfig)]
    return own + arch


# Every ModelConfig field (architecture for from-scratch runs, runtime knobs always) plus:
#   init: HF folder or our model checkpoint to start from (its architecture wins; None = scratch),
#   tokenizer: tokenizer folder (None: the init checkpoint's, or trained on the data on the fly),
#   tokenizer_vocab_size: vocabulary of a tokenizer trained on the fly.
def _check_model_section(section: Any) -> None:
    """The section's ModelConfig checks (dtypes, remat policy, attention kernel, heads) at parse time."""
    if section.tokenizer_vocab_size < 2:
        raise ConfigError(f"model.tokenizer_vocab_size={section.tokenizer_vocab_size}: must be at least 2")
    try:
        model_config_of(section)
    except ConfigError as err:
        raise ConfigError(f"model.{err}") from None


ModelSection = dataclasses.make_dataclass(
    "ModelSection", _model_section_fields(), namespace={"__post_init__": _check_model_section}
)


ModelSection.__doc__ = "model.*: ModelConfig fields plus init / tokenizer (see config.py)."


def model_config_of(section: Any) -> ModelConfig:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in dataclasses.asdict(section).items() if k in names})


@dataclasses.dataclass
class RunConfig:
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    resume: ResumeConfig = dataclasses.field(default_factory=ResumeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def checkpoint_dir(self) -> epath.Path:
        return storage_path(self.checkpoint.dir or Path(self.train.output_dir) / "checkpoints")


# The enumerated options' allowed values, for --help (the sections' own checks enforce them at parse time)
CHOICES: dict[str, tuple[str, ...]] = {
    "model.family": FAMILIES,
    "model.param_dtype": DTYPES,
    "model.dtype": DTYPES,
    "model.remat_policy": REMAT_POLICY_NAMES,
    "model.attention_impl": ATTENTION_IMPLS,
    "model.weight_grad": WEIGHT_GRADS,
    "data.lang": ("eng", "en", "zh", "[zh, eng]"),
    "data.setting": schema.SETTINGS,
    "data.kinds": schema.KINDS,
    "data.split": schema.SPLITS,
    "data.references_per_row": ("all", "first", "N"),
    "data.on_bad_line": ("fail", "skip"),
}


# What a resumed run must share with its checkpoint (issue 16 item 10): everything that changes the
# trained weights. Not: where things go (output_dir, checkpoint.*), how the same math is computed
# (mesh.*, the model's runtime fields), what is logged, data.shards (its own warning on resume).
_NOT_TRAINING = ("mesh.", "checkpoint.", "logging.", "resume.", "train.output_dir", "train.export")
_NOT_TRAINING += ("train.check_memory", "data.shards", *(f"model.{f}" for f in ModelConfig.RUNTIME_FIELDS))


def training_settings(config: dict[str, Any]) -> dict[str, Any]:
    """{dotted key: value} of the settings that change training, from RunConfig.to_dict() (or a checkpoint's copy)."""
    flat = flatten_yaml(json.loads(json.dumps(config)), "config")  # tuples as lists, as a checkpoint stores them
    return {k: v for k, v in flat.items() if not k.startswith(_NOT_TRAINING)}


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, checkpoint's value, this run's) for each training setting that differs; keys one side lacks are skipped."""
    before, after = training_settings(old), training_settings(new)
    return [(k, before[k], after[k]) for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]


# ---------------------------------------------------------------- flattening and validation
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def option_table(cfg: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, type, value) for every leaf option of a config dataclass."""
    rows = []
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            rows += option_table(value, key + ".")
        else:
            rows.append((key, hints[f.name], value))
    return rows


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if not typing.get_args(tp) else str(tp).replace("typing.", "")


def _check_value(key: str, tp: Any, value: Any, source: str) -> Any:
    """Coerce a YAML value to the field's type (int -> float only) or raise naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(key, arg, value, source)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if tp is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} expects a list, got {value!r}")
        return list(value) if origin is list else tuple(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} expects a mapping, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {key} expects {_type_name(tp)}, got {value!r}")
    return value


# What transformers' TrainingArguments, MaxText and PEFT call some of our options: no spelling is close
OTHER_NAMES = {
    "learning_rate": "train.lr",
    "max_steps": "train.steps",
    "num_train_steps": "train.steps",
    "warmup": "train.warmup_steps",
    "per_device_train_batch_size": "train.global_batch_size",
    "batch_size": "train.global_batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "max_grad_norm": "train.clip_norm",
    "gradient_clipping_threshold": "train.clip_norm",
    "adam_beta1": "train.b1",
    "adam_beta2": "train.b2",
    "adam_epsilon": "train.eps",
    "max_seq_length": "data.seq_len",
    "max_target_length": "data.seq_len",
    "lora_rank": "lora.rank",
    "r": "lora.rank",
    "lora_alpha": "lora.alpha",
    "target_modules": "lora.targets",
    "save_steps": "checkpoint.every",
    "save_total_limit": "checkpoint.keep",
    "logging_steps": "logging.every",
}


def _suggest(key: str, valid: list[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    if leaf in OTHER_NAMES:
        return f" (did you mean {OTHER_NAMES[leaf]!r}?)"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # a right leaf under the wrong section, or a typo in the section
        close = difflib.get_close_matches(leaf, [v.rsplit(".", 1)[-1] for v in valid], n=1, cutoff=0.6)
        close = [v for v in valid if close and v.endswith("." + close[0])][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def apply_overrides(cfg: RunConfig, flat: dict[str, Any], source: str) -> RunConfig:
    """Return a copy of cfg with dotted keys set; unknown keys name the nearest valid key."""
    table = {key: tp for key, tp, _ in option_table(cfg)}
    sections = {key.split(".", 1)[0] for key in table}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key not in table:
            hint = _suggest(key, sorted(table)) if key not in sections else " (a section, not an option)"
            raise ConfigError(f"{source}: unknown config key {key!r}{hint}")
        section, leaf = key.split(".", 1)
        nested.setdefault(section, {})[leaf] = _check_value(key, table[key], value, source)
    changes = {}
    for section, values in nested.items():
        try:
            changes[section] = dataclasses.replace(getattr(cfg, section), **values)
        except (ValueError, TypeError) as err:  # a section's own __post_init__ validation
            where = "" if str(err).startswith(f"{section}.") else f"{section}: "
            raise ConfigError(f"{source}: {where}{err}") from None
    return dataclasses.replace(cfg, **changes)


def flatten_yaml(data: Any, source: str, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    flat = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted.count(".") == 0:  # sections nest one level
            flat.update(flatten_yaml(value, source, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def load_preset(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """The config of a YAML file layered on `base`, by default on the demo preset: keys the file leaves
    out keep the demo's values (a file with only train.* trains the demo's tiny model, not the dataclass
    defaults' 7B one)."""
    path = Path(path)
    if base is None and path.resolve() != DEFAULT_PRESET.resolve():
        base = load_preset(DEFAULT_PRESET)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} not found (presets: {sorted(p.name for p in PRESET_DIR.glob('*.yaml'))})"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    return apply_overrides(base or RunConfig(), flatten_yaml(data, str(path)), str(path))


def parse_args(argv: list[str]) -> tuple[RunConfig, bool]:
    """argv -> (config, help_requested). `--config FILE` first, then `--a.b=value` / `--a.b value`."""
    config_path: str | None = None
    overrides: dict[str, Any] = {}
    want_help = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            want_help = True
        elif arg == "--verbose":
            overrides["logging.verbose"] = True
        elif arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")  # --resume.allow-changes is --resume.allow_changes
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"command line: {arg} needs a value")
                i += 1
                value = argv[i]
            if key == "config":
                config_path = value
            else:
                try:
                    overrides[key] = yaml.safe_load(value) if value != "" else ""
                except yaml.YAMLError:
                    overrides[key] = value
        else:
            raise ConfigError(f"command line: unexpected argument {arg!r} (options look like --train.lr=1e-5)")
        i += 1
    cfg = load_preset(config_path or DEFAULT_PRESET)
    cfg = apply_overrides(cfg, overrides, "command line")
    _check_lora_targets(cfg)
    return cfg, want_help


def _check_lora_targets(cfg: RunConfig) -> None:
    """lora.targets that match no kernel of a from-scratch model fail here, not after data loading
    (with model.init the checkpoint's architecture decides; TrainProgram checks it there)."""
    if not cfg.lora.enabled or cfg.model.init:
        return
    from rolellm_jax.checkpoints.tensor_layout import param_shapes
    from rolellm_jax.training.lora import LoraError, target_kernels

    try:
        target_kernels(param_shapes(model_config_of(cfg.model)), cfg.lora.targets)
    except LoraError as err:
        raise ConfigError(f"command line: {err}") from None


def help_text(cfg: RunConfig, prog: str) -> str:
    lines = [
        f"usage: {prog} [--config FILE] [--SECTION.KEY=VALUE ...]",
        "",
        f"Presets: {', '.join(sorted(str(p.relative_to(PRESET_DIR.parents[1])) for p in PRESET_DIR.glob('*.yaml')))}",
        f"(default {DEFAULT_PRESET.relative_to(PRESET_DIR.parent.parent)}; a --config file layers on it: keys the file",
        "leaves out keep the demo's values). Values are parsed as YAML; dashes in keys read as underscores.",
        "Hyper-parameter defaults are ours: the RoleLLM paper does not publish them.",
        "",
        "Options (value after the preset):",
    ]
    rows = option_table(cfg)
    width = max(len(k) for k, _, _ in rows) + 2
    section = None
    for key, tp, value in rows:
        if key.split(".")[0] != section:
            section = key.split(".")[0]
            lines.append("")
        shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        allowed = f": {' | '.join(CHOICES[key])}" if key in CHOICES else ""
        lines.append(f"  --{key:<{width}} {shown:<24} [{_type_name(tp)}{allowed}]")
    return "\n".join(lines)

"""rolellm_jax: RoleLLM's RoCIT training, evaluation and HF conversion on JAX.

The public API, importable from here (each loaded on first use, so `import rolellm_jax` stays cheap:
no jax/orbax/transformers until one is touched): ``dir(rolellm_jax)`` lists it.
"""

__version__ = "0.1.0"

# name -> module that defines it
_PUBLIC = {
    "load_model": "rolellm_jax.checkpoints.model_folder",  # ours or an HF folder -> (model, ModelConfig)
    "save_model_checkpoint": "rolellm_jax.checkpoints.model_folder",
    "load_tokenizer": "rolellm_jax.checkpoints.tokenizer",
    "hf_to_jax": "rolellm_jax.checkpoints.hf_convert",
    "jax_to_hf": "rolellm_jax.checkpoints.hf_convert",
    "ModelConfig": "rolellm_jax.models.config",
    "build_model": "rolellm_jax.models",
    "generate": "rolellm_jax.inference.generate",
    "SamplingConfig": "rolellm_jax.inference.generate",
    "rouge_l": "rolellm_jax.evaluation.rouge",
    "score_files": "rolellm_jax.evaluation.scoring",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'rolellm_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*_PUBLIC, "__version__"])


__all__ = sorted(_PUBLIC)

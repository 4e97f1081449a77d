"""rolellm_jax: RoleLLM's RoCIT training, evaluation and HF conversion on JAX."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import rolellm_jax` stays cheap (no jax/orbax/transformers until a model is loaded).
    if name == "load_model":
        from rolellm_jax.checkpoints.model_folder import load_model

        return load_model
    raise AttributeError(f"module 'rolellm_jax' has no attribute {name!r}")


__all__ = ["load_model"]

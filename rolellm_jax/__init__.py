"""rolellm_jax: RoleLLM's RoCIT training, evaluation and HF conversion on JAX."""

__version__ = "0.1.0"

"""data_gen: RoleBench generation and release. Standalone: never imports jax or rolellm_jax."""

__version__ = "0.1.0"

"""Meshes and logical-axis rules, jax.distributed, storage URLs."""

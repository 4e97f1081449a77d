"""Attention and matmul kernels the shared layers call."""

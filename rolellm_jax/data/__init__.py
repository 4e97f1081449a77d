"""Training data: chat rendering, RoleBench sources, examples and packing."""

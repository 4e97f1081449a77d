"""Checkpoints: our folder format, Hugging Face read/write, tensor layout, tokenizers."""

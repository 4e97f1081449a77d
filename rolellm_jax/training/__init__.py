"""RoCIT training: config sections and presets, the train program, loop, optimiser, LoRA, store."""

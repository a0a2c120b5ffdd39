"""Compression layer: distillation, pruning, quantization (one registry), and the checkpoints
that rebuild what they produce. Depends on training, models, data and core."""

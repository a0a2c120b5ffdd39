"""Measuring models: latency side by side, size, and the runtimes a model can be deployed on."""

"""Compression-lab library: everything the DVC stages and the Optuna search call."""

from pipelines.core import quiet

quiet.install()

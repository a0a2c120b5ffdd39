"""Compression-lab library: everything the DVC stages and the Optuna search call."""

from pipelines import _quiet

_quiet.install()

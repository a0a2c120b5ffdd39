"""Models layer: the architectures the chain builds (:mod:`.zoo`) and the spec a checkpoint
rebuilds them from. Depends on core only."""

from pipelines.models.zoo import CNN, build_from_spec, build_model, count_params, model_spec

__all__ = ["CNN", "build_from_spec", "build_model", "count_params", "model_spec"]

"""Models layer: the architectures the chain builds (:mod:`.zoo`, :mod:`.builders`), the spec a
checkpoint rebuilds them from (:mod:`.build`), the checkpoint format and its fp32 rebuild
(:mod:`.checkpoint`, no quantizer) and the user's weights (:mod:`.weights`). Depends on core only."""

from pipelines.models.build import build_from_spec, build_model, model_spec
from pipelines.models.builders import check_output
from pipelines.models.weights import load_weights
from pipelines.models.zoo import CNN, MLP, count_params

__all__ = ["CNN", "MLP", "build_from_spec", "build_model", "check_output", "count_params", "load_weights",
           "model_spec"]

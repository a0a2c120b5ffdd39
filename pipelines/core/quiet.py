"""The one place where known, understood upstream noise is silenced.

Each filter matches one specific message that says nothing about *our* run (deprecations of
APIs we pin on purpose, internal storage notices). Real failures are never filtered.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

_MESSAGES = [
    # torch.ao eager quantization is deprecated upstream; we keep it as the textbook engine
    # beside torchao PT2E and pin the versions, so the migration notice is not news per run.
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized"),
    (UserWarning, r"Please use quant_min and quant_max to specify the range for observers"),
    (UserWarning, r"TypedStorage is deprecated"),
    (UserWarning, r"must run observer before calling calculate_qparams"),
    (FutureWarning, r"`torch\.cpu\.amp\.autocast"),
    # MLflow's sqlalchemy store configures a deprecated loader at start-up (not ours to fix).
    (DeprecationWarning, r"The ``noload`` loader strategy is deprecated"),
    # MLflow registers its local-file dataset source twice (schemes "" and "file") and warns that
    # a local path "can be interpreted in multiple ways" by two identical classes.
    (UserWarning, r"can be interpreted in multiple ways: LocalArtifactDatasetSource, LocalArtifactDatasetSource\."),
    # MLflow's log_table asks pandas 3 for "object" columns the pandas-2 way (a deprecation for MLflow).
    (Warning, r"For backward compatibility, 'str' dtypes are included by select_dtypes"),
    # torch-pruning found nn.Parameters used outside any layer (ViT's class_token and
    # pos_embedding) and prunes their embedding dim with the layers they feed: what we want.
    (UserWarning, r"Unwrapped parameters detected"),
]

# torch.compile on a torch.ao eager-int8 model: dynamo cannot trace its kernels and falls back
# to eager; compile_benchmark reports that per row (graphs=0, note), so the console stays quiet.
# Plus the CPU-only notice about CUDA_HOME that Inductor's C++ build logs on every first compile.
_LOG_MESSAGES = {
    "torch._dynamo.utils": [r"quantized nyi in meta tensors"],
    "torch._dynamo.variables.tensor": [r"(?s)Graph break from `Tensor\.item\(\)`.*torch/ao/nn/quantized/"],
    "torch.utils.cpp_extension": [r"No CUDA runtime is found"],
}


class _DropKnown(logging.Filter):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


class _UserErrorTrials(logging.Filter):
    """Optuna logs every failed trial as a warning with the traceback and then once more ("failed
    with value None"). A trial that failed on a user error (a diverging loss, an invalid
    combination) is one line already, printed by the objective with its reason: drop Optuna's
    two. A trial that failed on anything else (a bug) keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pipelines.core.errors import UserError

        if record.exc_info and isinstance(record.exc_info[1], UserError):
            return False
        return not re.fullmatch(r"Trial \d+ failed with value None\.", record.getMessage())


_OFFLINE_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "GIT_PYTHON_REFRESH": "quiet",
}


def install() -> None:
    for category, pattern in _MESSAGES:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    # torchao registers an Enum with pytree at import time and torch logs a deprecation for it.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    for name, patterns in _LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(patterns))
    optuna_trials = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _UserErrorTrials) for f in optuna_trials.filters):
        optuna_trials.addFilter(_UserErrorTrials())
    # Inductor's int8 weight lowering copies a tensor with torch.tensor(); internal, harmless.
    warnings.filterwarnings("ignore", message=r"To copy construct from a tensor", category=UserWarning,
                            module=r"torch\._inductor\.mkldnn_lowerings")
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)

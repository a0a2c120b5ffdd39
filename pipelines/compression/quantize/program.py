"""A PT2E int8 graph saved and rebuilt without pickle: torch.export's own archive.

:func:`program_bytes`: the converted graph (from :mod:`.pt2e`), stripped of the fp32 parameters
``convert_pt2e`` leaves behind, re-exported and stored in torch.export's archive format (weights
as raw tensors). :func:`load_program` refuses archives with pickled payloads before loading.
"""

from __future__ import annotations

import io
import json
import zipfile

import torch
from torch import fx

from pipelines.compression.quantize.pt2e import EXAMPLE_KEY, allow_train_eval, dynamic_batch, strip_unused
from pipelines.core.pt2e_graph import register_int8_ops


def program_bytes(model: fx.GraphModule) -> bytes:
    """The converted graph as a torch.export archive (weights stored as raw tensors, no pickle)."""
    example = model.meta.get(EXAMPLE_KEY)
    if example is None:
        raise ValueError("pt2e model carries no example input; build it with pipelines.compression.quantize")
    strip_unused(model)
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_batch(), strict=False)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _check_archive(blob: bytes) -> None:
    """Refuse an archive that would make torch.export.load unpickle anything but plain tensors."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        names = archive.namelist()
        configs = [n for n in names if n.endswith(("_weights_config.json", "_constants_config.json"))]
        if not any(n.endswith("_weights_config.json") for n in configs):
            raise ValueError("not a torch.export archive (no weights config)")
        for name in configs:
            for fqn, meta in json.loads(archive.read(name)).get("config", {}).items():
                path = str(meta.get("path_name", ""))
                if meta.get("use_pickle") or path.startswith(("custom_obj", "opaque_obj")):
                    raise ValueError(f"archive entry {fqn!r} is pickled; refusing to load it")
        for name in names:
            if "/sample_inputs/" in name and not name.endswith("/"):
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)


def load_program(blob: bytes | torch.Tensor) -> fx.GraphModule:
    """Rebuild a model saved with :func:`program_bytes` (ready for eval, compile and re-saving)."""
    if isinstance(blob, torch.Tensor):
        blob = blob.numpy().tobytes()
    _check_archive(blob)
    register_int8_ops()
    program = torch.export.load(io.BytesIO(blob))
    model = program.module()
    allow_train_eval(model)
    args = (program.example_inputs or ((), {}))[0]
    if args:
        model.meta[EXAMPLE_KEY] = args[0]
    return model


def program_tensor(model: fx.GraphModule) -> torch.Tensor:
    return torch.frombuffer(bytearray(program_bytes(model)), dtype=torch.uint8)

"""One image decode for every source (folders in memory or streamed, tar shards): PIL, as
torchvision's default loader does (``convert("RGB")``, or ``"L"`` with ``data.channels: 1``),
resized with ``transforms.Resize((size, size))`` when ``data.image_size`` is set, as a uint8
``[C, H, W]`` tensor.

Hostile input is refused in one :class:`~pipelines.core.errors.DataError` line naming the file:
an image whose header claims more than ``data.max_image_pixels`` pixels is refused after reading
the header only, before any pixel is decoded (a decompression bomb); an unreadable or corrupt
image names the file and PIL's reason.
"""

from __future__ import annotations

import io
import warnings

import torch

from pipelines.core.errors import DataError, error_line


class Decoder:
    """Callable ``(source, name) -> uint8 [C, H, W]``; ``source`` is a path or the file's bytes."""

    def __init__(self, channels: int, size: int | None, max_pixels: int) -> None:
        self.mode = "L" if channels == 1 else "RGB"
        self.size = size
        self.max_pixels = max_pixels
        self._resize = None

    def pil(self, source: str | bytes, name: str):
        """The decoded PIL image (resized when ``size`` is set)."""
        from PIL import Image

        handle = open(source, "rb") if isinstance(source, str) else io.BytesIO(source)
        try:
            with handle, warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the check below decides
                image = Image.open(handle)  # reads the header only
                width, height = image.size
                if width * height > self.max_pixels:
                    raise DataError(f"{name}: header claims {width}x{height} = {width * height} pixels, more than "
                                    f"data.max_image_pixels={self.max_pixels}; refused before decoding")
                image = image.convert(self.mode)  # convert() decodes the whole file
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, DecompressionBombError...
            raise DataError(f"{name}: not a readable image ({error_line(exc)})") from None
        if self.size:
            if self._resize is None:
                from torchvision import transforms

                self._resize = transforms.Resize((self.size, self.size))
            image = self._resize(image)
        return image

    def __call__(self, source: str | bytes, name: str) -> torch.Tensor:
        from torchvision.transforms.functional import pil_to_tensor

        return pil_to_tensor(self.pil(source, name))

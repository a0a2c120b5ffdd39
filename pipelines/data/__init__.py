"""Data layer: datasets as normalised in-memory train/val/test tensors (:mod:`.loading`), with
torchvision's datasets behind :mod:`.torchvision_sets`. Depends on core only."""

from pipelines.data.loading import TORCHVISION_DATASETS, DataBundle, load_data, make_loader

__all__ = ["TORCHVISION_DATASETS", "DataBundle", "load_data", "make_loader"]

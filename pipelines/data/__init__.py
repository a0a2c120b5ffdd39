"""Data layer: datasets as normalised in-memory train/val/test tensors (:mod:`.loading`, with
torchvision's datasets behind :mod:`.torchvision_sets`) or streamed from disk (:mod:`.streaming`,
:mod:`.shards`), fed through one DataLoader factory (:mod:`.feeding`), the train split augmented
(:mod:`.augment`). Depends on core only."""

from pipelines.data.augment import plain
from pipelines.data.bundle import DataBundle, dataset_arrays, labels_of, split_digest
from pipelines.data.feeding import make_loader
from pipelines.data.loading import TORCHVISION_DATASETS, load_data

__all__ = ["TORCHVISION_DATASETS", "DataBundle", "dataset_arrays", "labels_of", "load_data", "make_loader", "plain",
           "split_digest"]

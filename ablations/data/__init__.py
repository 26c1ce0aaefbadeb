"""The harness's datasets behind one registry: ``dataset.loader`` picks the loader by name.

Two shapes of data, one interface (`TensorData`, `LoaderData`, in `splits`):

- **In memory** (`images`: CIFAR-10/100, small ImageFolder trees such as cifar10-jpeg, the
  embedded digits, the synthetic test set): each split is one uint8 tensor ``[N, C, H, W]`` on
  the training device, batches are gathered by index and augmented (`augment.TensorAugment`).
- **Files** (`images`: ImageNet-sized ImageFolder trees; `events`: CIFAR10-DVS, DVS128
  Gesture): a DataLoader with workers decodes samples; event samples are ``[T, 2, 128, 128]``.

A dataset that is missing raises `DataNotFoundError` with one message that says where to put
it or how to fetch it; `check_dataset` raises it before anything is built.
"""

from ablations.data import events, images  # noqa: F401  (register the loaders)
from ablations.data.images import synthetic_images
from ablations.data.registry import DATASETS, build_dataset, check_dataset, list_datasets
from ablations.data.splits import LoaderData, TensorData
from gradprobe.data import DataNotFoundError

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "LoaderData",
    "TensorData",
    "build_dataset",
    "check_dataset",
    "list_datasets",
    "synthetic_images",
]

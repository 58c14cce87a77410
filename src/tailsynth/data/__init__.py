"""Data layer: readers, splits, validation, versioning."""

from .classes import ISIC2019_CLASSES
from .errors import DataError
from .records import LesionDataset, Record
from .source import default_data_source, load_source
from .splits import ensure_splits, split_dataset

__all__ = [
    "ISIC2019_CLASSES",
    "DataError",
    "LesionDataset",
    "Record",
    "default_data_source",
    "ensure_splits",
    "load_source",
    "split_dataset",
]

"""Datasets by name, as in-memory tensors with class names, normalisation and augmentation."""

from atlens.data.loader import BatchLoader, random_crop_flip
from atlens.data.prepare import PreparedData, load_dataset, noisy_labels, prepare_data
from atlens.data.sources import DATASETS
from atlens.data.tensors import DatasetInfo, ImageTensors

__all__ = [
    "DATASETS", "BatchLoader", "DatasetInfo", "ImageTensors", "PreparedData", "load_dataset", "noisy_labels",
    "prepare_data", "random_crop_flip",
]

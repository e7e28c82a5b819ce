"""Datasets: the registry of specs, the standard on-disk formats, and ``LabeledImages``."""

from harness.data.images import SPACES, LabeledImages
from harness.data.specs import (
    DATASETS,
    DatasetSpec,
    get_spec,
    list_datasets,
    load_dataset,
    read_classlist,
    register_dataset,
    resolve_root,
)
from harness.data.stream import ImageFolderStream, stream_folders

__all__ = [
    "DATASETS", "DatasetSpec", "ImageFolderStream", "LabeledImages", "SPACES", "get_spec",
    "list_datasets", "load_dataset", "read_classlist", "register_dataset", "resolve_root", "stream_folders",
]

"""Datasets (MNIST, Fashion-MNIST, CIFAR-10 in their official formats), batch
augmentation and the loader.

    images, labels = load_dataset("mnist", "train")          # uint8 (N, C, H, W), int64 (N,)
    info = get_dataset_info("mnist")                          # classes, shape, mean, std, files
    loader = DataLoader(images, labels, 128, seed=0,
                        transform=RandomAffine(10, translate=(0.1, 0.1)),
                        normalize=(info.mean, info.std))
    for x, y in loader: ...                                   # float32 (B, C, H, W), int64 (B,)
"""
from .errors import (BadMagicError, ChecksumError, ChecksumWarning, CorruptArchiveError,
                     CountMismatchError, DataError, DataFormatError, DatasetNotFoundError,
                     DownloadError, FileLengthError, LabelRangeError, MissingMemberError,
                     ShapeError, UnknownDatasetError, UnsafePickleError)
from .formats import read_cifar, read_idx, read_idx_images, read_idx_labels, read_idx_pair
from .registry import DATASETS, DatasetInfo, FileInfo, get_dataset_info
from .download import download_file
from .sources import ENV_VAR, default_cache_dir, download_dataset, load_dataset, resolve_data_dir
from .transforms import (Compose, Cutout, Normalize, RandomAffine, RandomCrop, RandomErasing,
                         RandomHorizontalFlip, RandomRotation, Transform)
from .warp import affine, rotate
from .loader import DataLoader, train_val_split
from .folders import BadImageWarning, ImageFolder, ImageFolderError, is_image_folder

__all__ = [
    "load_dataset", "get_dataset_info", "resolve_data_dir", "download_dataset", "DATASETS",
    "DatasetInfo", "FileInfo", "ENV_VAR", "default_cache_dir", "download_file",
    "read_idx", "read_idx_images", "read_idx_labels", "read_idx_pair", "read_cifar",
    "Transform", "Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "RandomRotation",
    "RandomAffine", "RandomErasing", "Cutout", "affine", "rotate",
    "DataLoader", "train_val_split", "ImageFolder", "ImageFolderError", "BadImageWarning",
    "is_image_folder",
    "DataError", "UnknownDatasetError", "DatasetNotFoundError", "DataFormatError",
    "BadMagicError", "FileLengthError", "ShapeError", "CountMismatchError", "LabelRangeError",
    "CorruptArchiveError", "MissingMemberError", "UnsafePickleError", "DownloadError",
    "ChecksumError", "ChecksumWarning",
]

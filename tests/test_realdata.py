"""The real datasets, when MINIVGG_DATA points at them (.ci/run sets it to
../shared/datasets when that exists). Skipped, with the reason printed, otherwise."""
import os
import time
import warnings

import numpy as np
import pytest

import minivgg.data as data
from minivgg.data.download import file_digests

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not os.environ.get("MINIVGG_DATA"),
                       reason="MINIVGG_DATA is not set: set it to the folder holding mnist/, "
                              "fashion-mnist/ and cifar-10/ to test the real datasets"),
]

NAMES = ["mnist", "fashion-mnist", "cifar10"]

# Class counts of MNIST (it is not balanced), from the files' documentation.
MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
FIRST_LABELS = {("mnist", "train"): [5, 0, 4, 1, 9, 2, 1, 3, 1, 4],
                ("mnist", "test"): [7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
                ("cifar10", "train"): [6, 9, 9, 4, 1, 1, 2, 7, 8, 3],
                ("cifar10", "test"): [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]}

_cache = {}


def load(name, split):
    if (name, split) not in _cache:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            arrays = data.load_dataset(name, split)
        _cache[name, split] = arrays, [w for w in caught]
    return _cache[name, split][0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_counts_shapes_and_pixel_range(name, split):
    info = data.get_dataset_info(name)
    images, labels = load(name, split)
    n = info.num_train if split == "train" else info.num_test
    assert n == {"train": 50000 if name == "cifar10" else 60000, "test": 10000}[split]
    assert images.shape == (n, *info.shape) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert images.min() == 0 and images.max() == 255
    counts = np.bincount(labels, minlength=10)
    if name == "mnist":
        assert counts.tolist() == MNIST_COUNTS[split]
    else:  # Fashion-MNIST and CIFAR-10 are balanced
        assert np.all(counts == n // 10)
    if (name, split) in FIRST_LABELS:
        assert labels[:10].tolist() == FIRST_LABELS[name, split]


@pytest.mark.parametrize("name", NAMES)
def test_registry_mean_std_match_the_train_set(name):
    info = data.get_dataset_info(name)
    images, _ = load(name, "train")
    values = np.arange(256) / 255
    mean, std = [], []
    for c in range(images.shape[1]):  # exact moments from a histogram: no float copy
        share = np.bincount(images[:, c].ravel(), minlength=256) / images[:, c].size
        mean.append(share @ values)
        std.append(np.sqrt(share @ values**2 - mean[-1] ** 2))
    np.testing.assert_allclose(mean, info.mean, atol=5e-4)
    np.testing.assert_allclose(std, info.std, atol=5e-4)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_official_idx_checksums(name):
    info = data.get_dataset_info(name)
    folder = data.resolve_data_dir() / info.folder
    for file in info.files:
        digests = file_digests(folder / file.name)
        assert digests["md5"] == file.md5, file.name
        assert digests["sha256"] == file.sha256, file.name
    for split in ("train", "test"):
        load(name, split)
        assert _cache[name, split][1] == []  # official files: no checksum warning


def test_cifar_archive_checksum_is_only_a_warning():
    """The shared CIFAR-10 tarball was repacked (its md5 differs from the official one):
    it must still load, with a ChecksumWarning, and an official copy without one."""
    info = data.get_dataset_info("cifar10")
    archive = data.resolve_data_dir() / info.folder / info.files[0].name
    if not archive.exists():
        pytest.skip(f"{archive} absent (CIFAR-10 is present in another packaging)")
    load("cifar10", "test")
    caught = _cache["cifar10", "test"][1]
    official = file_digests(archive, ("md5",))["md5"] == info.files[0].md5
    assert [w.category for w in caught] == ([] if official else [data.ChecksumWarning])


def test_loading_all_of_mnist_takes_under_2s():
    best = float("inf")
    for _ in range(2):  # best of two: the CI machine is shared
        start = time.perf_counter()
        data.load_dataset("mnist", "train")
        data.load_dataset("mnist", "test")
        best = min(best, time.perf_counter() - start)
    print(f"load all of MNIST: {best:.2f} s")
    assert best < 2.0

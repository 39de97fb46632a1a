"""Registry, data-directory resolution and load_dataset on synthetic dataset folders."""
import dataclasses
import hashlib
import os
import shutil
import warnings

import numpy as np
import pytest

import minivgg.data as data
from minivgg.data.errors import (ChecksumWarning, CountMismatchError, DataError,
                                 DatasetNotFoundError, UnknownDatasetError)
from minivgg.data.registry import DATASETS
import synthetic


def shrink(monkeypatch, name, n_train, n_test, **changes):
    """Register a copy of `name` whose sample counts match a small synthetic copy."""
    info = dataclasses.replace(DATASETS[name], num_train=n_train, num_test=n_test, **changes)
    monkeypatch.setitem(DATASETS, name, info)
    return info


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIVGG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# ---------------------------------------------------------------------------- registry

def test_registry_names_and_folders():
    assert set(data.DATASETS) == {"mnist", "fashion-mnist", "cifar10"}
    assert {n: i.folder for n, i in data.DATASETS.items()} == \
        {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar-10"}


@pytest.mark.parametrize("name,shape,n_train", [("mnist", (1, 28, 28), 60000),
                                                ("fashion-mnist", (1, 28, 28), 60000),
                                                ("cifar10", (3, 32, 32), 50000)])
def test_dataset_info_fields(name, shape, n_train):
    info = data.get_dataset_info(name)
    assert info.name == name and info.shape == shape
    assert info.num_train == n_train and info.num_test == 10000
    assert len(info.classes) == 10 and all(isinstance(c, str) for c in info.classes)
    assert len(set(info.classes)) == 10
    assert len(info.mean) == len(info.std) == shape[0]
    assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
    assert info.files and all(len(f.md5) == 32 for f in info.files)
    assert all(url.startswith("http") for f in info.files for url in info.urls(f))


def test_mnist_files_are_the_official_four():
    info = data.get_dataset_info("mnist")
    assert [f.name for f in info.files_for("train")] == ["train-images-idx3-ubyte.gz",
                                                         "train-labels-idx1-ubyte.gz"]
    assert [f.name for f in info.files_for("test")] == ["t10k-images-idx3-ubyte.gz",
                                                        "t10k-labels-idx1-ubyte.gz"]
    assert data.get_dataset_info("cifar10").files[0].name == "cifar-10-binary.tar.gz"


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownDatasetError) as info:
        data.get_dataset_info("imagenet")
    assert "imagenet" in str(info.value)
    for name in ("mnist", "fashion-mnist", "cifar10"):
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownDatasetError):
        data.load_dataset("cifar100")


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match="train, test"):
        data.load_dataset("mnist", split="validation", data_dir=tmp_path)


# ---------------------------------------------------------------- data dir resolution

def test_resolution_order(monkeypatch, tmp_path):
    assert data.resolve_data_dir() == tmp_path / "xdg-cache" / "minivgg" / "datasets"
    monkeypatch.setenv("MINIVGG_DATA", str(tmp_path / "from-env"))
    assert data.resolve_data_dir() == tmp_path / "from-env"
    assert data.resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data.resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
    monkeypatch.setenv("MINIVGG_DATA", "")  # empty counts as unset
    assert data.resolve_data_dir() == tmp_path / "xdg-cache" / "minivgg" / "datasets"


def test_cache_dir_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "minivgg" / "datasets"


# ------------------------------------------------------------------------ load_dataset

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_idx_dataset(monkeypatch, tmp_path, name):
    shrink(monkeypatch, name, 30, 10)
    written = synthetic.write_dataset(name, tmp_path, 30, 10)
    with pytest.warns(ChecksumWarning):  # synthetic files are not the official ones
        for split in ("train", "test"):
            images, labels = data.load_dataset(name, split, data_dir=tmp_path)
            assert images.dtype == np.uint8 and images.shape[1:] == (1, 28, 28)
            assert labels.dtype == np.int64
            np.testing.assert_array_equal(images, written[split][0])
            np.testing.assert_array_equal(labels, written[split][1])


def test_load_from_environment_variable(monkeypatch, tmp_path):
    shrink(monkeypatch, "mnist", 20, 10)
    written = synthetic.write_dataset("mnist", tmp_path / "datasets", 20, 10)
    monkeypatch.setenv("MINIVGG_DATA", str(tmp_path / "datasets"))
    images, _ = data.load_dataset("mnist", "test", check_checksums=False)
    np.testing.assert_array_equal(images, written["test"][0])


def test_uncompressed_idx_files_are_accepted(monkeypatch, tmp_path):
    shrink(monkeypatch, "mnist", 20, 10)
    written = synthetic.write_dataset("mnist", tmp_path, 20, 10)
    folder = tmp_path / "mnist"
    for path in folder.glob("*.gz"):
        synthetic.write_file(path.with_suffix(""), synthetic.formats.read_maybe_gzip(path),
                             compress=False)
        path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no checksum to compare an uncompressed copy with
        images, labels = data.load_dataset("mnist", "train", data_dir=tmp_path)
    np.testing.assert_array_equal(images, written["train"][0])


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_load_cifar_archives(monkeypatch, tmp_path, kind):
    shrink(monkeypatch, "cifar10", 25, 5)
    written = synthetic.write_dataset("cifar10", tmp_path, 25, 5, cifar_kind=kind)
    for split in ("train", "test"):
        images, labels = data.load_dataset("cifar10", split, data_dir=tmp_path,
                                           check_checksums=False)
        assert images.shape[1:] == (3, 32, 32)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])


def test_load_cifar_extracted_folder(monkeypatch, tmp_path):
    shrink(monkeypatch, "cifar10", 25, 5)
    splits = {"train": synthetic.make_samples(25, (3, 32, 32)),
              "test": synthetic.make_samples(5, (3, 32, 32), seed=9)}
    for name, payload in synthetic.cifar_members(splits, "binary").items():
        synthetic.write_file(tmp_path / "cifar-10" / name, payload, compress=False)
    images, _ = data.load_dataset("cifar10", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(images, splits["test"][0])


def test_missing_files_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        data.load_dataset("mnist", "test", data_dir=tmp_path / "empty")
    message = str(info.value)
    for fragment in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                     str(tmp_path / "empty" / "mnist"), "given as data_dir", "MINIVGG_DATA",
                     "--data-dir", "download=True", "--download", "yann.lecun.com"]:
        assert fragment in message, fragment
    assert "train-images" not in message  # only what this split needs
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DataError)


def test_missing_files_message_says_how_the_dir_was_chosen(monkeypatch, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="per-user cache"):
        data.load_dataset("cifar10")
    monkeypatch.setenv("MINIVGG_DATA", str(tmp_path / "env-dir"))
    with pytest.raises(DatasetNotFoundError) as info:
        data.load_dataset("cifar10")
    assert "environment variable" in str(info.value)
    assert "cifar-10-binary.tar.gz" in str(info.value) and "cifar-10-python" in str(info.value)


def test_one_missing_file_is_named(monkeypatch, tmp_path):
    shrink(monkeypatch, "mnist", 20, 10)
    synthetic.write_dataset("mnist", tmp_path, 20, 10)
    os.remove(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetNotFoundError) as info:
        data.load_dataset("mnist", "train", data_dir=tmp_path)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    assert "train-images-idx3-ubyte.gz" not in str(info.value)


def test_count_differs_from_registry(tmp_path):
    synthetic.write_dataset("mnist", tmp_path, 20, 10)  # registry says 60000 / 10000
    with pytest.raises(CountMismatchError, match="holds 20 train images; mnist train has 60000"):
        data.load_dataset("mnist", "train", data_dir=tmp_path)


def test_checksum_match_gives_no_warning(monkeypatch, tmp_path):
    synthetic.write_dataset("mnist", tmp_path, 20, 10)
    info = DATASETS["mnist"]
    files = tuple(dataclasses.replace(f, md5=hashlib.md5(
        (tmp_path / "mnist" / f.name).read_bytes()).hexdigest()) for f in info.files)
    shrink(monkeypatch, "mnist", 20, 10, files=files)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.load_dataset("mnist", "train", data_dir=tmp_path)


def test_checksum_mismatch_warning_names_file(monkeypatch, tmp_path):
    shrink(monkeypatch, "cifar10", 25, 5)
    synthetic.write_dataset("cifar10", tmp_path, 25, 5)
    with pytest.warns(ChecksumWarning) as record:
        data.load_dataset("cifar10", "test", data_dir=tmp_path)
    message = str(record[0].message)
    assert "cifar-10-binary.tar.gz" in message and "c32a1d4ab5d03f1284b67883e8d87530" in message


def test_corrupt_local_file_is_an_error_not_a_warning(monkeypatch, tmp_path):
    shrink(monkeypatch, "mnist", 20, 10)
    synthetic.write_dataset("mnist", tmp_path, 20, 10)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(data.CorruptArchiveError, match="t10k-images-idx3-ubyte.gz"):
        data.load_dataset("mnist", "test", data_dir=tmp_path)


def test_download_dataset_skips_present_files(monkeypatch, tmp_path):
    shrink(monkeypatch, "mnist", 20, 10, mirrors=("http://127.0.0.1:9/unreachable/",))
    synthetic.write_dataset("mnist", tmp_path, 20, 10)
    assert data.download_dataset("mnist", data_dir=tmp_path, progress=False) == []
    shutil.rmtree(tmp_path / "mnist")
    with pytest.raises(data.DownloadError, match="127.0.0.1:9"):
        data.download_dataset("mnist", "test", data_dir=tmp_path, progress=False)

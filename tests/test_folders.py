"""Image folders: layouts, decoding, the cache, and every kind of broken folder."""

import numpy as np
import pytest
from PIL import Image

from minivgg.data import (BadImageWarning, DataFormatError, ImageFolder, ImageFolderError,
                          get_dataset_info, load_dataset)
from minivgg.data import folders


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def make_folder(root, classes=("a", "b", "c"), per_class=5, size=(12, 12), colour=False, seed=0):
    """Each class a distinct brightness, so the labels can be checked from the pixels."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        for i in range(per_class):
            value = 40 + 80 * label
            shape = (size[1], size[0], 3) if colour else (size[1], size[0])
            array = np.clip(value + rng.integers(-5, 6, shape), 0, 255).astype(np.uint8)
            _save(root / name / f"{i:03d}.{'jpg' if i % 2 and colour else 'png'}", array)
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folders._OPEN.clear()


def test_flat_layout_loads_with_classes_labels_and_a_fixed_test_split(tmp_path):
    root = make_folder(tmp_path / "data")
    folder = ImageFolder(root)
    assert folder.classes == ["a", "b", "c"] and folder.splits == ("train", "test")
    train_x, train_y = folder.load("train")
    test_x, test_y = folder.load("test")
    assert train_x.shape == (12, 1, 12, 12) and train_x.dtype == np.uint8
    assert len(test_y) == 3 and sorted(test_y) == [0, 1, 2]  # a fifth of each class
    for images, labels in ((train_x, train_y), (test_x, test_y)):
        np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 40 + 80 * labels, atol=3)
    # the split depends on the files only: another open gives the same one
    np.testing.assert_array_equal(ImageFolder(root, cache_dir=False).load("test")[1], test_y)


def test_split_layout_and_the_same_api_as_registered_datasets(tmp_path):
    root = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        make_folder(root / split, per_class=n, size=(20, 10), colour=True, seed=len(split))
    info = get_dataset_info(str(root))
    assert info.classes == ["a", "b", "c"] and info.shape == (3, 20, 20)  # colour, longer side
    assert info.num_train == 12 and info.num_test == 9 and len(info.mean) == 3
    images, labels = load_dataset(str(root), "val")
    assert images.shape == (6, 3, 20, 20) and list(labels) == [0, 0, 1, 1, 2, 2]
    small, _ = load_dataset(str(root), "train", image_size=8, channels=1)
    assert small.shape == (12, 1, 8, 8)


def test_most_common_size_is_chosen_and_others_resized(tmp_path):
    root = make_folder(tmp_path / "data", per_class=3, size=(16, 16))
    _save(root / "a" / "big.png", np.full((40, 40), 40, np.uint8))
    images, _ = ImageFolder(root).load("train")
    assert images.shape[2:] == (16, 16)


def test_second_open_reads_the_cache_and_a_changed_folder_is_decoded_again(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")
    first = ImageFolder(root).load("train")
    cached = list((tmp_path / "cache" / "minivgg" / "image-folders").glob("*.npz"))
    assert cached
    with np.load(cached[0], allow_pickle=False) as saved:  # a safe format: no pickle needed
        assert set(saved.files) == {"images", "labels", "skipped"}
    calls = []
    monkeypatch.setattr(ImageFolder, "_decode", lambda self, *a: calls.append(a) or (_ for _ in ()).throw(
        AssertionError("decoded again")))
    np.testing.assert_array_equal(ImageFolder(root).load("train")[0], first[0])
    assert not calls
    _save(root / "a" / "new.png", np.full((12, 12), 40, np.uint8))
    with pytest.raises(AssertionError, match="decoded again"):
        ImageFolder(root).load("train")


def test_truncated_and_garbage_images_are_skipped_counted_and_named(tmp_path):
    root = make_folder(tmp_path / "data", per_class=6)
    good = (root / "a" / "000.png").read_bytes()
    (root / "a" / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "notes.png").write_bytes(b"this is not an image")
    (root / "b" / "readme.txt").write_text("ignored: not an image suffix")
    folder = ImageFolder(root)
    with pytest.warns(BadImageWarning) as caught:
        images = [folder.load(s)[0] for s in ("train", "test")]
    text = " ".join(str(w.message) for w in caught)
    assert "cut.png" in text and "notes.png" in text
    assert sum(len(i) for i in images) == 18
    with pytest.raises(DataFormatError, match=r"cut\.png|notes\.png"):
        for split in ("train", "test"):
            ImageFolder(root, bad_images="error", cache_dir=False).load(split)


@pytest.mark.parametrize("setup, message", [
    (lambda r: r.mkdir(), "no class sub-folders"),
    (lambda r: make_folder(r, classes=("only",)), "one class"),
    (lambda r: (make_folder(r), (r / "empty").mkdir()), r"empty.*hold no images"),
    (lambda r: [(r / c).mkdir(parents=True) for c in "ab"], "holds no images"),
    (lambda r: _save(r / "loose.png", np.zeros((4, 4), np.uint8)), "move them into one sub-folder"),
    (lambda r: make_folder(r / "val"), "no train/ folder"),
    (lambda r: (make_folder(r / "train"), make_folder(r / "test", classes=("a", "z"))), "same class"),
])
def test_broken_folders_are_refused_with_what_is_wrong(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ImageFolderError, match=message):
        ImageFolder(root)


def test_missing_folder_and_unknown_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no 'val' split"):
        ImageFolder(make_folder(tmp_path / "data")).load("val")


def test_transparent_png_is_composited_on_white(tmp_path):
    root = make_folder(tmp_path / "data", per_class=2, colour=True)
    rgba = np.zeros((12, 12, 4), np.uint8)  # fully transparent
    _save(root / "a" / "clear.png", rgba, "RGBA")
    folder = ImageFolder(root, cache_dir=False)
    images = np.concatenate([folder.load(s)[0] for s in folder.splits])
    assert (images.reshape(len(images), -1) == 255).all(axis=1).sum() == 1  # white, not black

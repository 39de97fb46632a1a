"""Image folders: a user's own images, one sub-folder per class (torchvision's ImageFolder,
Keras' image_dataset_from_directory).

    DIR/cat/001.png, DIR/dog/x.jpg ...                     one folder per class, or
    DIR/train/cat/..., DIR/val/cat/..., DIR/test/cat/...   splits, each with the same classes

PNG and JPEG, greyscale or colour, any size. Every image is resized (bilinear, aspect ratio
not kept, as torchvision's Resize((S, S))) to a square of side `image_size`, by default the
folder's most common side; the folder is greyscale when every image is, else RGB. A folder
without split sub-folders is split deterministically: a fixed fifth of each class (at least
one image of a class of two or more) is the test split.

Decoded images are cached as .npz (no pickle) under the per-user cache, keyed by the files'
names, sizes and modification times and by the decoding settings, so a second run with the
same folder reads one file instead of decoding every image again.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fsutil import atomic_write_path
from .errors import DataError, DataFormatError, DatasetNotFoundError
from .registry import DatasetInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_SPLITS = ("train", "val", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0          # the flat layout's test split never changes with a training seed
CACHE_VERSION = 1
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}


class ImageFolderError(DataError, ValueError):
    """A folder that cannot be used as an image dataset (empty, one class, bad image...)."""


class BadImageWarning(UserWarning):
    """Some files of an image folder could not be decoded and were skipped."""


@dataclass(frozen=True)
class _File:
    path: Path
    label: int


def is_image_folder(name) -> bool:
    """Whether a dataset name is a path to a folder (rather than a registered name)."""
    try:
        return Path(os.fspath(name)).expanduser().is_dir()
    except TypeError:
        return False


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_image(p))


class ImageFolder:
    """A folder of images as a dataset: `load(split)` gives (uint8 (N, C, S, S), int64 (N,))
    like `load_dataset`, and `info` a DatasetInfo (classes, shape, mean and std of train).

    bad_images: "skip" (default: skip files that cannot be decoded, warn with their count and
    names) or "error" (refuse with the first one's name). channels: 1 or 3 (default: 1 when
    every image is greyscale). cache_dir: where decoded arrays are kept (None: the per-user
    cache; False: no cache).
    """

    def __init__(self, root, image_size: int | None = None, channels: int | None = None,
                 bad_images: str = "skip", cache_dir=None):
        self.root = Path(os.fspath(root)).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"image folder {self.root} does not exist or is not a "
                                       f"folder; give a folder holding one sub-folder per class")
        if bad_images not in ("skip", "error"):
            raise ValueError(f"bad_images must be 'skip' or 'error', got {bad_images!r}")
        if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 1):
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size!r}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.bad_images = bad_images
        self.cache_dir = _default_cache_dir() if cache_dir is None else cache_dir
        self.classes, self.files = self._scan()
        self.splits = tuple(self.files)
        self.image_size = int(image_size) if image_size is not None else None
        self.channels = channels
        self._loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._info: DatasetInfo | None = None

    # ---- finding the files ---------------------------------------------------------------
    def _scan(self) -> tuple[list[str], dict[str, list[_File]]]:
        present = [s for s in FOLDER_SPLITS if (self.root / s).is_dir()]
        if present:
            if "train" not in present:
                raise ImageFolderError(f"{self.root} has {', '.join(p + '/' for p in present)} but no "
                                       f"train/ folder; add train/<class>/ folders of images")
            classes = self._classes_of(self.root / "train")
            files = {}
            for split in present:
                names = self._classes_of(self.root / split, allow_empty=split != "train")
                if names != classes:
                    raise ImageFolderError(
                        f"{self.root / split} has classes {names} but train/ has {classes}; every "
                        f"split needs the same class folders")
                files[split] = [_File(p, label) for label, name in enumerate(classes)
                                for p in _images_in(self.root / split / name)]
            return classes, files
        classes = self._classes_of(self.root)
        return classes, _split_flat(self.root, classes)

    def _classes_of(self, folder: Path, allow_empty: bool = False) -> list[str]:
        folders = _class_folders(folder)
        loose = [p.name for p in folder.iterdir() if _is_image(p)]
        if not folders:
            hint = (f" (it holds {len(loose)} images directly: move them into one sub-folder per "
                    f"class)" if loose else "")
            raise ImageFolderError(f"{folder} has no class sub-folders{hint}; an image folder holds "
                                   f"one sub-folder of PNG/JPEG images per class")
        counts = {p.name: len(_images_in(p)) for p in folders}
        if sum(counts.values()) == 0:
            raise ImageFolderError(f"{folder} holds no images (.png, .jpg, .jpeg) in its "
                                   f"sub-folders {sorted(counts)}")
        empty = [name for name, n in counts.items() if n == 0]
        if empty and not allow_empty:
            raise ImageFolderError(f"class folder(s) {', '.join(str(folder / n) for n in empty)} "
                                   f"hold no images (.png, .jpg, .jpeg); add images or remove the "
                                   f"folder(s)")
        if len(folders) < 2:
            raise ImageFolderError(f"{folder} has one class ({folders[0].name}) only; a classifier "
                                   f"needs at least two class sub-folders")
        return [p.name for p in folders]

    # ---- decoding -----------------------------------------------------------------------------
    def _decided_shape(self) -> tuple[int, int]:
        """(channels, side), from the arguments or, where not given, the training images."""
        if self.image_size is not None and self.channels is not None:
            return self.channels, self.image_size
        from PIL import Image

        sides, grey = Counter(), True
        for f in self.files["train"]:
            try:
                with Image.open(f.path) as img:
                    sides[max(img.size)] += 1
                    grey = grey and img.mode in _GREY_MODES
            except (OSError, ValueError):
                continue  # named by the decoding pass
        if not sides:
            raise ImageFolderError(f"{self.root}: none of the training images can be read as PNG "
                                   f"or JPEG")
        if self.channels is None:
            self.channels = 1 if grey else 3
        if self.image_size is None:
            self.image_size = max(sides.items(), key=lambda kv: (kv[1], kv[0]))[0]
        return self.channels, self.image_size

    def load(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 (N, C, S, S), labels int64 (N,)) of a split: train, test, or val when
        the folder has val/."""
        if split not in self.files:
            raise ValueError(f"{self.root} has no {split!r} split; it has {', '.join(self.splits)}")
        if split not in self._loaded:
            channels, side = self._decided_shape()
            files = self.files[split]
            key = _cache_key(files, channels, side)
            cached = self._read_cache(key)
            if cached is None:
                cached = self._decode(files, channels, side, split)
                self._write_cache(key, cached)
            images, labels, skipped = cached
            if len(skipped):
                self._report_skipped(split, [str(s) for s in skipped])
            if len(images) == 0:
                raise ImageFolderError(f"{self.root} {split}: no image could be decoded")
            self._loaded[split] = images, labels
        return self._loaded[split]

    def _decode(self, files, channels, side, split):
        from PIL import Image

        images = np.empty((len(files), channels, side, side), np.uint8)
        labels = np.empty(len(files), np.int64)
        kept, skipped = 0, []
        for f in files:
            try:
                with Image.open(f.path) as img:
                    img.load()  # decodes now, so a truncated file fails here
                    array = _to_array(img, channels, side)
            except (OSError, ValueError, SyntaxError) as e:
                if self.bad_images == "error":
                    raise DataFormatError(f.path, f"cannot be decoded as PNG/JPEG ({e}); fix or "
                                                  f"delete it, or skip such files with "
                                                  f"bad_images='skip'") from None
                skipped.append(str(f.path.relative_to(self.root)))
                continue
            images[kept], labels[kept] = array, f.label
            kept += 1
        return images[:kept], labels[:kept], np.array(skipped, dtype=str)

    def _report_skipped(self, split, skipped):
        if self.bad_images == "error":
            raise DataFormatError(self.root / skipped[0], "cannot be decoded as PNG/JPEG; fix or "
                                                          "delete it, or skip such files with "
                                                          "bad_images='skip'")
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(f"{self.root} {split}: skipped {len(skipped)} file(s) that cannot be decoded "
                      f"as PNG/JPEG: {shown}", BadImageWarning, stacklevel=3)

    # ---- the cache ------------------------------------------------------------------------------
    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is False else Path(self.cache_dir) / f"{key}.npz"

    def _read_cache(self, key):
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                return saved["images"], saved["labels"], saved["skipped"]
        except (OSError, ValueError, KeyError):
            return None  # a damaged cache file is decoded again and replaced

    def _write_cache(self, key, arrays) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        images, labels, skipped = arrays
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, images=images, labels=labels, skipped=skipped)
        except OSError as e:
            warnings.warn(f"could not cache the decoded images of {self.root} in {path.parent}: "
                          f"{e}; they will be decoded again next time", stacklevel=3)

    # ---- as a registered dataset ----------------------------------------------------------------
    @property
    def info(self) -> DatasetInfo:
        """The folder as a DatasetInfo: name and folder are its path, mean and std those of
        its training images in [0, 1]."""
        if self._info is None:
            images, _ = self.load("train")
            pixels = images.astype(np.float64) / 255.0
            mean = pixels.mean(axis=(0, 2, 3))
            std = np.maximum(pixels.std(axis=(0, 2, 3)), 1e-3)  # a constant channel must not divide by 0
            test = len(self.files["test"]) if "test" in self.files else 0
            self._info = DatasetInfo(
                name=str(self.root), folder=str(self.root), format="folder", classes=list(self.classes),
                shape=(self.channels, self.image_size, self.image_size),
                mean=tuple(round(float(m), 4) for m in mean), std=tuple(round(float(s), 4) for s in std),
                num_train=len(self.files["train"]), num_test=test, files=(), mirrors=())
        return self._info


def _split_flat(root: Path, classes: list[str]) -> dict[str, list[_File]]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for label, name in enumerate(classes):
        paths = _images_in(root / name)
        order = rng.permutation(len(paths))
        held = round(TEST_FRACTION * len(paths)) or (1 if len(paths) >= 2 else 0)
        chosen = set(order[:held].tolist())
        for i, p in enumerate(paths):
            (test if i in chosen else train).append(_File(p, label))
    return {"train": train, "test": test}


def _to_array(img, channels: int, side: int) -> np.ndarray:
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # transparent pixels onto white, as an image viewer shows them
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (side, side):
        img = img.resize((side, side), Image.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _cache_key(files: list[_File], channels: int, side: int) -> str:
    digest = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "channels": channels,
                                        "side": side}).encode())
    for f in files:
        stat = f.path.stat()
        digest.update(f"{f.path}\0{f.label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _default_cache_dir() -> Path:
    from .sources import default_cache_dir
    return default_cache_dir().parent / "image-folders"


def open_image_folder(root, image_size=None, channels=None, bad_images="skip", cache_dir=None):
    """An ImageFolder, shared between calls with the same arguments in one process (so that
    `get_dataset_info` and `load_dataset` of the same folder decode, or read the cache, once)."""
    key = (str(Path(os.fspath(root)).expanduser().resolve()), image_size, channels, bad_images,
           str(cache_dir))
    folder = _OPEN.get(key)
    if folder is None or _scan_changed(folder):
        folder = _OPEN[key] = ImageFolder(root, image_size, channels, bad_images, cache_dir)
    return folder


def _scan_changed(folder: ImageFolder) -> bool:
    try:
        return ImageFolder(folder.root, cache_dir=False).files != folder.files
    except DataError:
        return True


_OPEN: dict[tuple, ImageFolder] = {}

"""Where the dataset files are, fetching the missing ones, and loading a split.

The data directory is, in order: an explicit argument, else $MINIVGG_DATA, else a
per-user cache. A dataset's files sit in `<data dir>/<folder>/` with their official
names (e.g. `<data dir>/mnist/train-images-idx3-ubyte.gz`, `<data dir>/cifar-10/
cifar-10-binary.tar.gz`).

Downloads are guarded by the published checksums. Files already on disk are trusted
on their structure (strict validation in formats.py), because a correct copy may be
packed differently; a checksum that differs from the official one is only a warning.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import formats
from .download import download_file, file_digests
from .errors import ChecksumWarning, CountMismatchError, DatasetNotFoundError
from .registry import DATASETS, DatasetInfo, FileInfo, check_split, get_dataset_info

ENV_VAR = "MINIVGG_DATA"


def default_cache_dir() -> Path:
    """The per-user cache folder for datasets (XDG on Linux, Caches on macOS, LOCALAPPDATA)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "minivgg" / "datasets"


def locate_data_dir(data_dir=None) -> tuple[Path, str]:
    """(data directory, how it was chosen), for resolve_data_dir and error messages."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "given as data_dir / --data-dir"
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser(), f"from the {ENV_VAR} environment variable"
    return default_cache_dir(), (f"the per-user cache, used because no data_dir was given "
                                 f"and {ENV_VAR} is not set")


def resolve_data_dir(data_dir=None) -> Path:
    """The data directory: data_dir if given, else $MINIVGG_DATA, else the per-user cache."""
    return locate_data_dir(data_dir)[0]


@dataclass(frozen=True)
class Source:
    """A local file or folder a split can be read from."""
    path: Path
    kind: str                       # "idx", "binary" (CIFAR) or "python" (CIFAR)
    file: FileInfo | None = None    # registry entry, for the checksum warning


def _idx_candidates(folder: Path, file: FileInfo) -> list[Path]:
    # The official files are gzipped; an uncompressed copy is accepted too.
    names = [file.name] + ([file.name[:-3]] if file.name.endswith(".gz") else [])
    return [folder / name for name in names]


def _cifar_candidates(info: DatasetInfo, folder: Path) -> list[Source]:
    archives = {f.name: f for f in info.files + info.alternates}
    binary, python = "cifar-10-binary.tar.gz", "cifar-10-python.tar.gz"
    return [Source(folder / formats.CIFAR_BIN_FOLDER, "binary"),
            Source(folder / binary, "binary", archives.get(binary)),
            Source(folder / formats.CIFAR_PY_FOLDER, "python"),
            Source(folder / python, "python", archives.get(python))]


def find_sources(info: DatasetInfo, split: str, root: Path) -> tuple[list[Source], list[FileInfo]]:
    """(sources found on disk for the split, registry files still missing)."""
    folder = root / info.folder
    if info.format == "cifar":
        for source in _cifar_candidates(info, folder):
            if source.path.exists():
                return [source], []
        return [], list(info.files_for(split))
    found, missing = [], []
    for file in info.files_for(split):
        present = [p for p in _idx_candidates(folder, file) if p.is_file()]
        if present:
            # An uncompressed copy cannot match the official (gzip) checksum: skip that check.
            found.append(Source(present[0], "idx", file if present[0].name == file.name else None))
        else:
            missing.append(file)
    return found, missing


def _missing_message(info: DatasetInfo, split: str, root: Path, how: str,
                     missing: list[FileInfo]) -> str:
    folder = root / info.folder
    names = ", ".join(f.name for f in missing)
    if info.format == "cifar":
        others = "".join(f"{f.name}, or " for f in info.alternates)
        names += (f" (or {others}an extracted {formats.CIFAR_BIN_FOLDER}/ or "
                  f"{formats.CIFAR_PY_FOLDER}/ folder)")
    mirrors = ", ".join(info.mirrors)
    return (f"{info.name} {split}: missing {names} in {folder}\n"
            f"Looked in data directory {root} ({how}).\n"
            f"To fix, either:\n"
            f"  - put the official files in {folder}/ (IDX files may be gzipped or not), or\n"
            f"  - point {ENV_VAR} (or data_dir= / --data-dir) at a directory that holds "
            f"{info.folder}/, or\n"
            f"  - pass download=True (CLI: --download) to fetch them from {mirrors}")


def _warn_on_checksum(source: Source) -> None:
    file = source.file
    if file is None:
        return
    digest = file_digests(source.path, ("md5",))["md5"]
    if digest != file.md5:
        warnings.warn(f"{source.path}: md5 {digest} differs from the official {file.md5}; "
                      f"its contents passed structural validation, so it is used (a "
                      f"repacked copy is fine, a modified one is not)",
                      ChecksumWarning, stacklevel=3)


def download_dataset(name: str, split: str | None = None, data_dir=None,
                     progress: bool = True) -> list[Path]:
    """Download the files of a dataset (both splits unless `split`) that are not on disk."""
    info = get_dataset_info(name)
    root = resolve_data_dir(data_dir)
    splits = [check_split(split)] if split is not None else ["train", "test"]
    fetched = []
    for s in splits:
        for file in find_sources(info, s, root)[1]:
            fetched.append(download_file(info.urls(file), root / info.folder / file.name,
                                         md5=file.md5, sha256=file.sha256, progress=progress))
    return fetched


def _read_sources(info: DatasetInfo, split: str, sources: list[Source]):
    if info.format == "cifar":
        return formats.read_cifar(sources[0].path, split, sources[0].kind)
    images_path, labels_path = (s.path for s in sources)  # registry order: images, labels
    return formats.read_idx_pair(images_path, labels_path, image_size=info.shape[1:],
                                 num_classes=info.num_classes)


def load_dataset(name: str, split: str = "train", data_dir=None, download: bool = False,
                 check_checksums: bool = True, progress: bool = True, image_size: int | None = None,
                 channels: int | None = None):
    """Load one split of a registered dataset, or of an image folder given by its path, into
    memory.

    Returns (images uint8 (N, C, H, W), labels int64 (N,)). Missing files are fetched
    when download=True, else a DatasetNotFoundError says what is missing, where it was
    looked for and how to fix it. Local files are validated strictly by structure; a
    checksum that differs from the official file only warns (ChecksumWarning). For a folder,
    images are resized to image_size and read with `channels` (see data.folders).
    """
    if not (isinstance(name, str) and name in DATASETS):
        from .folders import is_image_folder, open_image_folder
        if is_image_folder(name):
            return open_image_folder(name, image_size, channels).load(split)
    info = get_dataset_info(name)
    check_split(split)
    root, how = locate_data_dir(data_dir)
    sources, missing = find_sources(info, split, root)
    if missing and download:
        download_dataset(name, split, root, progress=progress)
        sources, missing = find_sources(info, split, root)
    if missing:
        raise DatasetNotFoundError(_missing_message(info, split, root, how, missing))
    images, labels = _read_sources(info, split, sources)
    expected = info.num_samples(split)
    if len(images) != expected:
        raise CountMismatchError(sources[0].path, f"holds {len(images)} {split} images; "
                                                  f"{info.name} {split} has {expected}")
    if check_checksums:
        for source in sources:
            _warn_on_checksum(source)
    return images, labels

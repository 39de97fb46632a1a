"""Test fixtures: writers for small files in the official dataset formats.

They produce exactly what the official distributions contain, only with fewer and
made-up images: IDX files, CIFAR-10 binary records, and CIFAR-10 python batches as
the Python 2 pickles of the official tarball. `write_dataset` lays out a registry
folder (`<root>/<folder>/...`) that load_dataset reads, given a registry entry whose
sample counts match (see tests/test_sources.py).
"""
from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np

from minivgg.data import formats
from minivgg.data.registry import get_dataset_info


def make_samples(n: int, shape, num_classes: int = 10, seed: int = 0):
    """n random uint8 images (N, C, H, W) and labels cycling through the classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % num_classes
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file holding a uint8 array of any rank."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_file(path, data: bytes, compress: bool | None = None) -> Path:
    """Write bytes, gzipped when `compress` (default: when the name ends in .gz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1, mtime=0)
    path.write_bytes(data)
    return path


def cifar_record_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary batch: per image 1 label byte then 3072 pixel bytes (R, G, B planes)."""
    records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None],
                              np.asarray(images, dtype=np.uint8).reshape(len(images), -1)], axis=1)
    return records.tobytes()


def _py2_str(data: bytes) -> bytes:
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data                 # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(data)) + data            # BINSTRING


def _py2_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)                       # BININT


def cifar_pickle_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """A CIFAR-10 python batch as the official files have it: a Python 2 protocol-2
    pickle of {batch_label, labels, data, filenames}, with Python 2 str (bytes) and
    numpy.core.multiarray._reconstruct for the uint8 (N, 3072) array."""
    data = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    dtype = (b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
             b"(K\x03" + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + b"K\x00tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
             b"K\x00\x85" + _py2_str(b"b") + b"\x87R"
             b"(K\x01" + _py2_int(data.shape[0]) + _py2_int(data.shape[1]) + b"\x86"
             + dtype + b"\x89" + _py2_str(data.tobytes()) + b"tb")
    label_list = b"](" + b"".join(_py2_int(int(v)) for v in labels) + b"e"
    names = b"](" + b"".join(_py2_str(b"img_%d.png" % i) for i in range(len(labels))) + b"e"
    body = (_py2_str(b"batch_label") + _py2_str(b"synthetic batch")
            + _py2_str(b"labels") + label_list
            + _py2_str(b"data") + array
            + _py2_str(b"filenames") + names)
    return b"\x80\x02}(" + body + b"u."


def tar_bytes(members: dict[str, bytes], compress: bool = True) -> bytes:
    """A tar (gzipped unless compress=False) holding the given name -> bytes members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def cifar_members(splits: dict, kind: str) -> dict[str, bytes]:
    """Archive members {folder/batch: bytes} for splits {"train": (x, y), "test": (x, y)};
    the train split is cut into five batches like the official one."""
    folder = formats.CIFAR_BIN_FOLDER if kind == "binary" else formats.CIFAR_PY_FOLDER
    encode = cifar_record_bytes if kind == "binary" else cifar_pickle_bytes
    members = {}
    for split, (images, labels) in splits.items():
        names = formats.cifar_member_names(split, kind)
        for name, part in zip(names, np.array_split(np.arange(len(images)), len(names))):
            members[f"{folder}/{name}"] = encode(images[part], labels[part])
    return members


def write_dataset(name: str, root, n_train: int, n_test: int, seed: int = 0,
                  cifar_kind: str = "binary") -> dict:
    """Write a small copy of dataset `name` under `<root>/<folder>/` in its official
    format; return {"train": (images, labels), "test": (images, labels)} written."""
    info = get_dataset_info(name)
    folder = Path(root) / info.folder
    splits = {"train": make_samples(n_train, info.shape, info.num_classes, seed),
              "test": make_samples(n_test, info.shape, info.num_classes, seed + 1)}
    if info.format == "cifar":
        archive = "cifar-10-binary.tar.gz" if cifar_kind == "binary" else "cifar-10-python.tar.gz"
        write_file(folder / archive, tar_bytes(cifar_members(splits, cifar_kind)), compress=False)
        return splits
    for split, (images, labels) in splits.items():
        image_file, label_file = info.files_for(split)
        write_file(folder / image_file.name, idx_bytes(images[:, 0]))
        write_file(folder / label_file.name, idx_bytes(labels))
    return splits

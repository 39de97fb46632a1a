"""Readers for the official dataset formats, with strict validation.

- IDX (MNIST, Fashion-MNIST): gzip-compressed or raw. Header: two zero bytes, a type
  code, the number of dimensions, then one big-endian uint32 per dimension; the data
  follows, big-endian, and must fill the rest of the file exactly.
- CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes (1024 R, 1024 G,
  1024 B, each row-major 32x32), read from `cifar-10-binary.tar.gz` (streamed, nothing
  extracted to disk) or from an extracted `cifar-10-batches-bin/` folder.
- CIFAR-10 python version: pickled dicts {data: uint8 (N, 3072), labels: [int]}, read
  with an unpickler that can build nothing but plain numeric NumPy arrays.

Every problem raises a `DataFormatError` subclass naming the file and what is wrong.
"""
from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import (BadMagicError, CorruptArchiveError, CountMismatchError, DataFormatError,
                     FileLengthError, LabelRangeError, MissingMemberError, ShapeError,
                     UnsafePickleError)

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian dtype
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dimension

CIFAR_IMAGE_SHAPE = (3, 32, 32)
CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR_BIN_FOLDER = "cifar-10-batches-bin"
CIFAR_PY_FOLDER = "cifar-10-batches-py"
# An official batch is about 30 MB; a member far larger than that is not a CIFAR batch.
MAX_MEMBER_BYTES = 64 * 2**20


def cifar_member_names(split: str, kind: str) -> list[str]:
    """Batch file names of a split: data_batch_1..5 (train) or test_batch, '.bin' for binary."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if kind == "binary":
        return [name + ".bin" for name in names]
    return names


# ----------------------------------------------------------------------------- IDX

def read_maybe_gzip(path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise CorruptArchiveError(path, "gzip stream is cut short (the file is truncated); "
                                        "delete it and download it again") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise CorruptArchiveError(path, f"not a valid gzip file ({exc}); "
                                        "delete it and download it again") from None


def parse_idx(data: bytes, path) -> np.ndarray:
    """Decode an IDX file's bytes into an array of its declared type and dimensions."""
    if len(data) < 4:
        raise FileLengthError(path, f"only {len(data)} bytes; an IDX file starts with a "
                                    f"4-byte magic number")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise BadMagicError(path, f"magic number 0x{magic:08X} is not an IDX magic "
                                  f"(expected 0x000008NN for uint8 data, e.g. 0x00000803 "
                                  f"for images, 0x00000801 for labels)")
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise FileLengthError(path, f"truncated header: {ndim} dimensions need "
                                    f"{header_bytes} bytes, the file has {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header_bytes + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise FileLengthError(path, f"{what}: header says dimensions {dims} "
                                    f"({expected} bytes with the header), the file has "
                                    f"{len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header_bytes).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip or raw) of any type and rank."""
    return parse_idx(read_maybe_gzip(path), path)


def _expect_magic(data: bytes, path, magic: int, what: str) -> None:
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        shown = "none (file shorter than 4 bytes)" if found is None else f"0x{found:08X}"
        raise BadMagicError(path, f"magic number {shown} is not the IDX {what} magic "
                                  f"0x{magic:08X}; is this the right file?")


def read_idx_images(path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """IDX image file -> uint8 (N, 1, H, W); `image_size` (H, W) is checked when given."""
    data = read_maybe_gzip(path)
    _expect_magic(data, path, IDX_IMAGES_MAGIC, "images (uint8, 3 dimensions)")
    images = parse_idx(data, path)  # (N, H, W)
    if image_size is not None and images.shape[1:] != tuple(image_size):
        raise ShapeError(path, f"images are {images.shape[1]}x{images.shape[2]}, "
                               f"expected {image_size[0]}x{image_size[1]}")
    return images[:, None, :, :]


def read_idx_labels(path, num_classes: int | None = None) -> np.ndarray:
    """IDX label file -> int64 (N,); every label is checked to lie in [0, num_classes)."""
    data = read_maybe_gzip(path)
    _expect_magic(data, path, IDX_LABELS_MAGIC, "labels (uint8, 1 dimension)")
    labels = parse_idx(data, path).astype(np.int64)
    if num_classes is not None:
        check_label_range(labels, num_classes, path)
    return labels


def check_label_range(labels: np.ndarray, num_classes: int, path) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise LabelRangeError(path, f"{bad.size} labels outside 0..{num_classes - 1}, "
                                    f"first at index {bad[0]}: {labels[bad[0]]}")


def check_counts(images: np.ndarray, labels: np.ndarray, images_path, labels_path) -> None:
    if len(images) != len(labels):
        raise CountMismatchError(images_path, f"has {len(images)} images but {labels_path} "
                                              f"has {len(labels)} labels; the two files "
                                              f"must come from the same split")


def read_idx_pair(images_path, labels_path, image_size=None, num_classes=None):
    """(images uint8 (N, 1, H, W), labels int64 (N,)) from an IDX image and label file."""
    images = read_idx_images(images_path, image_size)
    labels = read_idx_labels(labels_path, num_classes)
    check_counts(images, labels, images_path, labels_path)
    return images, labels


# ----------------------------------------------------------------------- CIFAR-10

def parse_cifar_records(data: bytes, path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary batch -> (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    if len(data) == 0 or len(data) % CIFAR_RECORD_BYTES:
        raise FileLengthError(path, f"{len(data)} bytes is not a whole number of "
                                    f"{CIFAR_RECORD_BYTES}-byte records (1 label byte + "
                                    f"3072 pixels); the file is truncated or not a batch")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    check_label_range(labels, 10, path)
    return records[:, 1:].reshape(-1, *CIFAR_IMAGE_SHAPE), labels


def _numpy_rebuilders() -> dict:
    # NumPy's private array and scalar rebuilders. Their module moved in NumPy 2, so
    # take them from the pickles of an array and a scalar instead of importing by name.
    rebuilders = {}
    for package in ("numpy.core", "numpy._core"):
        rebuilders[(package + ".multiarray", "_reconstruct")] = np.empty(0).__reduce__()[0]
        rebuilders[(package + ".multiarray", "scalar")] = np.int64(0).__reduce__()[0]
        # protocol 5 rebuilds contiguous arrays from their buffer
        rebuilders[(package + ".numeric", "_frombuffer")] = np.empty(1).__reduce_ex__(5)[0]
    return rebuilders


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler whose only globals are ndarray, dtype and NumPy's array/scalar rebuilders.

    A pickle can only run code through the globals it names, so refusing every other
    name makes loading a hostile file safe. dtypes that hold Python objects are refused
    too, so no array can smuggle in arbitrary objects.
    """

    REBUILDERS = _numpy_rebuilders()

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")  # the official pickles are Python 2 str
        self.path = path

    def find_class(self, module, name):
        if (module, name) in self.REBUILDERS:
            return self.REBUILDERS[(module, name)]
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return self._numeric_dtype
        if (module, name) == ("_codecs", "encode"):
            return self._latin1_bytes  # how Python 3 writes bytes at protocol 2
        raise UnsafePickleError(self.path, f"the pickle asks for {module}.{name}; only "
                                           f"NumPy arrays are allowed in a CIFAR-10 batch, "
                                           f"so it was not loaded")

    def _latin1_bytes(self, text, encoding):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError(self.path, "the pickle calls _codecs.encode with "
                                               "something other than (str, 'latin1')")
        return text.encode("latin1")

    def _numeric_dtype(self, spec, align=False, copy=False):
        dtype = np.dtype(spec, align, copy)
        if dtype.hasobject:
            raise UnsafePickleError(self.path, "the pickle holds an object array; only "
                                               "numeric arrays are allowed")
        return dtype


def _dict_get(batch: dict, key: str):
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    return None


def parse_cifar_pickle(data: bytes, path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python batch -> (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), path).load()
    except DataFormatError:
        raise
    except Exception as exc:  # any decoding failure of untrusted bytes is a format error
        raise CorruptArchiveError(path, f"not a readable pickle ({type(exc).__name__}: "
                                        f"{exc})") from None
    if not isinstance(batch, dict):
        raise DataFormatError(path, f"holds a {type(batch).__name__}, expected a dict "
                                    f"with 'data' and 'labels'")
    images, labels = _dict_get(batch, "data"), _dict_get(batch, "labels")
    if images is None or labels is None:
        raise DataFormatError(path, "lacks the 'data' or 'labels' entry of a CIFAR-10 batch")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 \
            or images.ndim != 2 or images.shape[1] != CIFAR_RECORD_BYTES - 1:
        shown = (f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray)
                 else type(images).__name__)
        raise ShapeError(path, f"'data' is {shown}, expected uint8 (N, 3072)")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.shape != (len(images),):
        raise CountMismatchError(path, f"'labels' is {labels.dtype} {labels.shape}, expected "
                                       f"{len(images)} integers (one per image)")
    labels = labels.astype(np.int64)
    check_label_range(labels, 10, path)
    return images.reshape(-1, *CIFAR_IMAGE_SHAPE), labels


def _member_key(name: str, folder: str) -> str | None:
    """The batch file name of a member at `<folder>/<batch>` or `<batch>`, else None."""
    parts = PurePosixPath(name).parts
    parts = tuple(p for p in parts if p != ".")
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == folder):
        return parts[-1]
    return None


def read_tar_members(path, names: list[str], folder: str) -> dict[str, bytes]:
    """Stream through a (gzipped) tar once and return the bytes of the members wanted.

    Members may sit at `<folder>/<name>` (the official layout) or at the top level.
    Nothing is extracted to disk, so hostile member paths cannot escape anywhere.
    """
    path = Path(path)
    wanted, found = set(names), {}
    seen = []
    try:
        with tarfile.open(path, mode="r|*") as tar:  # '|': read forward once; '*': any compression
            for member in tar:
                seen.append(member.name)
                key = _member_key(member.name, folder)
                if key not in wanted or key in found:
                    continue
                where = f"{path}:{member.name}"
                if not member.isfile():
                    raise CorruptArchiveError(where, "is not a regular file")
                if member.size > MAX_MEMBER_BYTES:
                    raise FileLengthError(where, f"is {member.size} bytes, far more than a "
                                                 f"CIFAR-10 batch (about 30 MB)")
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise FileLengthError(where, f"truncated: {len(data)} of {member.size} "
                                                 f"bytes")
                found[key] = data
                if len(found) == len(wanted):
                    break
    except DataFormatError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise CorruptArchiveError(path, f"cannot be read as a tar archive ({exc}); it is "
                                        f"truncated or corrupt: delete it and download it "
                                        f"again") from None
    missing = [name for name in names if name not in found]
    if missing:
        listing = ", ".join(seen[:8]) + (", ..." if len(seen) > 8 else "") or "nothing"
        raise MissingMemberError(path, f"lacks {', '.join(f'{folder}/{m}' for m in missing)} "
                                       f"(the archive holds: {listing})")
    return found


def read_cifar(source, split: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 split from a tarball or an extracted batches folder.

    source: `cifar-10-binary.tar.gz` / `cifar-10-python.tar.gz`, or the extracted
    `cifar-10-batches-bin/` / `cifar-10-batches-py/` folder. kind: "binary" or "python".
    Returns (images uint8 (N, 3, 32, 32), labels int64 (N,)), batches in official order.
    """
    if kind not in ("binary", "python"):
        raise ValueError(f"read_cifar: kind must be 'binary' or 'python', got {kind!r}")
    source = Path(source)
    names = cifar_member_names(split, kind)
    folder = CIFAR_BIN_FOLDER if kind == "binary" else CIFAR_PY_FOLDER
    parse = parse_cifar_records if kind == "binary" else parse_cifar_pickle
    if source.is_dir():
        missing = [name for name in names if not (source / name).is_file()]
        if missing:
            raise MissingMemberError(source, f"lacks {', '.join(missing)}")
        batches = [parse((source / name).read_bytes(), source / name) for name in names]
    else:
        members = read_tar_members(source, names, folder)
        batches = [parse(members.pop(name), f"{source}:{folder}/{name}") for name in names]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    return images, labels

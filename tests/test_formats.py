"""Readers of the official formats on synthetic files, good and corrupt.

Every corrupt file must raise a specific DataFormatError naming the file, never a crash.
"""
import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from minivgg.data import formats
from minivgg.data.errors import (BadMagicError, CorruptArchiveError, CountMismatchError,
                                 DataError, DataFormatError, FileLengthError, LabelRangeError,
                                 MissingMemberError, ShapeError, UnsafePickleError)
import synthetic


def write(path, data, compress=None):
    return synthetic.write_file(path, data, compress)


@pytest.fixture
def mnist_like():
    return synthetic.make_samples(12, (1, 28, 28), seed=3)


# ------------------------------------------------------------------- IDX: good files

@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_pair_round_trip(tmp_path, mnist_like, suffix):
    images, labels = mnist_like
    ipath = write(tmp_path / f"train-images-idx3-ubyte{suffix}", synthetic.idx_bytes(images[:, 0]))
    lpath = write(tmp_path / f"train-labels-idx1-ubyte{suffix}", synthetic.idx_bytes(labels))
    x, y = formats.read_idx_pair(ipath, lpath, image_size=(28, 28), num_classes=10)
    assert x.shape == (12, 1, 28, 28) and x.dtype == np.uint8 and x.flags.writeable
    assert y.shape == (12,) and y.dtype == np.int64
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_gzip_is_detected_by_content_not_name(tmp_path, mnist_like):
    images, _ = mnist_like
    path = write(tmp_path / "images.idx", synthetic.idx_bytes(images[:, 0]), compress=True)
    np.testing.assert_array_equal(formats.read_idx_images(path), images)


@pytest.mark.parametrize("code,dtype", [(0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"),
                                        (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")])
def test_read_idx_every_type_code(tmp_path, code, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    header = bytes([0, 0, code, 3]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path = write(tmp_path / "a.idx", header + array.tobytes())
    out = formats.read_idx(path)
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, array)


# ------------------------------------------------------------------ IDX: corrupt files

def expect(error, call, *fragments):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, DataFormatError) and isinstance(info.value, DataError)
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def test_wrong_magic_labels_file_given_as_images(tmp_path, mnist_like):
    _, labels = mnist_like
    path = write(tmp_path / "labels.gz", synthetic.idx_bytes(labels))
    expect(BadMagicError, lambda: formats.read_idx_images(path), path, "0x00000801", "0x00000803")


def test_wrong_magic_garbage(tmp_path):
    path = write(tmp_path / "x", b"PK\x03\x04 this is a zip file, not IDX")
    expect(BadMagicError, lambda: formats.read_idx(path), path, "magic")
    expect(BadMagicError, lambda: formats.read_idx_labels(path), path)


@pytest.mark.parametrize("data", [b"", b"\x00\x00"])
def test_too_short_for_a_magic(tmp_path, data):
    path = write(tmp_path / "short", data)
    expect(FileLengthError, lambda: formats.read_idx(path), path)
    expect(BadMagicError, lambda: formats.read_idx_images(path), path, "shorter than 4 bytes")


def test_truncated_data(tmp_path, mnist_like):
    images, _ = mnist_like
    data = synthetic.idx_bytes(images[:, 0])
    path = write(tmp_path / "images.gz", data[:-100])
    expect(FileLengthError, lambda: formats.read_idx_images(path), path, "truncated",
           "(12, 28, 28)", len(data) - 100)


def test_truncated_header(tmp_path):
    path = write(tmp_path / "images", bytes([0, 0, 8, 3]) + struct.pack(">I", 5))
    expect(FileLengthError, lambda: formats.read_idx_images(path), path, "header")


def test_trailing_bytes(tmp_path, mnist_like):
    _, labels = mnist_like
    path = write(tmp_path / "labels", synthetic.idx_bytes(labels) + b"\x00")
    expect(FileLengthError, lambda: formats.read_idx_labels(path), path, "trailing")


def test_count_mismatch_names_both_files(tmp_path, mnist_like):
    images, labels = mnist_like
    ipath = write(tmp_path / "images.gz", synthetic.idx_bytes(images[:, 0]))
    lpath = write(tmp_path / "labels.gz", synthetic.idx_bytes(labels[:-1]))
    expect(CountMismatchError, lambda: formats.read_idx_pair(ipath, lpath), ipath, lpath,
           "12 images", "11 labels")


def test_label_out_of_range(tmp_path, mnist_like):
    _, labels = mnist_like
    bad = labels.copy()
    bad[7] = 10
    path = write(tmp_path / "labels.gz", synthetic.idx_bytes(bad))
    expect(LabelRangeError, lambda: formats.read_idx_labels(path, num_classes=10), path,
           "index 7", "0..9")
    assert formats.read_idx_labels(path)[7] == 10  # no range given: no check


def test_wrong_image_size(tmp_path):
    path = write(tmp_path / "images.gz", synthetic.idx_bytes(np.zeros((2, 32, 32))))
    expect(ShapeError, lambda: formats.read_idx_images(path, image_size=(28, 28)), path,
           "32x32", "28x28")


def test_bad_gzip_garbage_after_magic(tmp_path):
    path = write(tmp_path / "images.gz", b"\x1f\x8b\x08\x00garbage that does not inflate",
                 compress=False)
    expect(CorruptArchiveError, lambda: formats.read_idx_images(path), path, "gzip")


def test_bad_gzip_truncated(tmp_path, mnist_like):
    images, _ = mnist_like
    packed = gzip.compress(synthetic.idx_bytes(images[:, 0]))
    path = write(tmp_path / "images.gz", packed[: len(packed) // 2], compress=False)
    expect(CorruptArchiveError, lambda: formats.read_idx_images(path), path, "truncated")


def test_bad_gzip_crc(tmp_path, mnist_like):
    _, labels = mnist_like
    packed = bytearray(gzip.compress(synthetic.idx_bytes(labels)))
    packed[-8] ^= 0xFF  # the CRC32 of the uncompressed data
    path = write(tmp_path / "labels.gz", bytes(packed), compress=False)
    expect(CorruptArchiveError, lambda: formats.read_idx_labels(path), path)


# --------------------------------------------------------------------------- CIFAR-10

@pytest.fixture
def cifar_splits():
    return {"train": synthetic.make_samples(25, (3, 32, 32), seed=1),
            "test": synthetic.make_samples(7, (3, 32, 32), seed=2)}


@pytest.mark.parametrize("kind", ["binary", "python"])
@pytest.mark.parametrize("compress", [True, False])
def test_cifar_archive_round_trip(tmp_path, cifar_splits, kind, compress):
    path = write(tmp_path / "cifar.tar.gz",
                 synthetic.tar_bytes(synthetic.cifar_members(cifar_splits, kind), compress),
                 compress=False)
    for split, (images, labels) in cifar_splits.items():
        x, y = formats.read_cifar(path, split, kind)
        assert x.shape == (len(images), 3, 32, 32) and x.dtype == np.uint8
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x, images)  # batches 1..5 concatenated in order
        np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_cifar_extracted_folder(tmp_path, cifar_splits, kind):
    for name, data in synthetic.cifar_members(cifar_splits, kind).items():
        write(tmp_path / name, data, compress=False)
    folder = tmp_path / (formats.CIFAR_BIN_FOLDER if kind == "binary" else formats.CIFAR_PY_FOLDER)
    x, y = formats.read_cifar(folder, "train", kind)
    np.testing.assert_array_equal(x, cifar_splits["train"][0])
    np.testing.assert_array_equal(y, cifar_splits["train"][1])
    os.remove(folder / formats.cifar_member_names("train", kind)[2])
    expect(MissingMemberError, lambda: formats.read_cifar(folder, "train", kind), "data_batch_3")


def test_cifar_record_layout_is_label_then_rgb_planes():
    image = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    image[0, 0, 0, 1] = 11   # R, row 0, column 1
    image[0, 2, 31, 31] = 22  # B, last pixel
    data = synthetic.cifar_record_bytes(image, np.array([4]))
    assert data[0] == 4 and data[1 + 1] == 11 and data[-1] == 22
    x, y = formats.parse_cifar_records(data, "batch")
    np.testing.assert_array_equal(x, image)
    assert y.tolist() == [4]


def test_cifar_members_at_top_level_are_accepted(tmp_path, cifar_splits):
    members = {name.split("/")[1]: data
               for name, data in synthetic.cifar_members(cifar_splits, "binary").items()}
    path = write(tmp_path / "flat.tar", synthetic.tar_bytes(members, compress=False),
                 compress=False)
    x, _ = formats.read_cifar(path, "test", "binary")
    np.testing.assert_array_equal(x, cifar_splits["test"][0])


def test_cifar_tar_without_expected_members(tmp_path):
    path = write(tmp_path / "cifar-10-binary.tar.gz",
                 synthetic.tar_bytes({"cifar-10-batches-bin/readme.html": b"<html/>",
                                      "cifar-10-batches-bin/data_batch_1.bin": b""}),
                 compress=False)
    message = expect(MissingMemberError, lambda: formats.read_cifar(path, "train", "binary"),
                     path, "data_batch_2.bin", "readme.html")
    assert "data_batch_1.bin," not in message.split("holds")[0]  # present, so not missing
    expect(MissingMemberError, lambda: formats.read_cifar(path, "test", "binary"), "test_batch.bin")


def test_cifar_member_in_another_folder_does_not_count(tmp_path, cifar_splits):
    members = {name.replace("cifar-10-batches-bin", "elsewhere"): data
               for name, data in synthetic.cifar_members(cifar_splits, "binary").items()}
    path = write(tmp_path / "c.tar.gz", synthetic.tar_bytes(members), compress=False)
    expect(MissingMemberError, lambda: formats.read_cifar(path, "test", "binary"), "test_batch.bin")


def test_cifar_truncated_archive(tmp_path, cifar_splits):
    packed = synthetic.tar_bytes(synthetic.cifar_members(cifar_splits, "binary"))
    path = write(tmp_path / "c.tar.gz", packed[: len(packed) // 2], compress=False)
    expect(DataFormatError, lambda: formats.read_cifar(path, "test", "binary"), path)


def test_cifar_truncated_plain_tar(tmp_path, cifar_splits):
    packed = synthetic.tar_bytes(synthetic.cifar_members(cifar_splits, "binary"), compress=False)
    path = write(tmp_path / "c.tar", packed[:5000], compress=False)
    expect(DataFormatError, lambda: formats.read_cifar(path, "train", "binary"), path)


@pytest.mark.parametrize("data", [b"", b"not a tar file at all" * 50, b"\x1f\x8b\x08\x00broken"])
def test_cifar_not_an_archive(tmp_path, data):
    path = write(tmp_path / "c.tar.gz", data, compress=False)
    expect(CorruptArchiveError, lambda: formats.read_cifar(path, "train", "binary"), path)


def test_cifar_member_that_is_a_directory(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    path = write(tmp_path / "c.tar.gz", buffer.getvalue(), compress=False)
    expect(CorruptArchiveError, lambda: formats.read_cifar(path, "test", "binary"),
           "test_batch.bin", "not a regular file")


def test_cifar_bad_record_length(tmp_path, cifar_splits):
    images, labels = cifar_splits["test"]
    data = synthetic.cifar_record_bytes(images, labels)[:-1]
    path = write(tmp_path / "c.tar.gz",
                 synthetic.tar_bytes({"cifar-10-batches-bin/test_batch.bin": data}), compress=False)
    expect(FileLengthError, lambda: formats.read_cifar(path, "test", "binary"),
           "test_batch.bin", "3073-byte records")


def test_cifar_label_out_of_range(tmp_path, cifar_splits):
    images, labels = cifar_splits["test"]
    data = bytearray(synthetic.cifar_record_bytes(images, labels))
    data[3 * formats.CIFAR_RECORD_BYTES] = 10
    path = write(tmp_path / "c.tar",
                 synthetic.tar_bytes({"cifar-10-batches-bin/test_batch.bin": bytes(data)}, False),
                 compress=False)
    expect(LabelRangeError, lambda: formats.read_cifar(path, "test", "binary"), "index 3")


def test_read_cifar_rejects_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="binary"):
        formats.read_cifar(tmp_path, "train", "jpeg")


# --------------------------------------------------------- CIFAR-10 python: pickles

def test_official_style_python2_pickle_is_what_pickle_reads(cifar_splits):
    images, labels = cifar_splits["test"]
    data = synthetic.cifar_pickle_bytes(images, labels)
    batch = pickle.loads(data, encoding="bytes")  # the loading recipe of the CIFAR page
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    np.testing.assert_array_equal(batch[b"data"], images.reshape(len(images), -1))
    x, y = formats.parse_cifar_pickle(data, "test_batch")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_pickles_with_numpy_labels(cifar_splits, protocol):
    images, labels = cifar_splits["test"]
    data = pickle.dumps({"data": images.reshape(len(images), -1), "labels": list(labels)},
                        protocol=protocol)
    x, y = formats.parse_cifar_pickle(data, "b")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_hostile_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({b"data": _RunsCode(str(marker)), b"labels": []}, protocol=2)
    expect(UnsafePickleError, lambda: formats.parse_cifar_pickle(data, "evil_batch"),
           "evil_batch", "open")
    assert not marker.exists()


def test_object_array_pickle_is_refused():
    data = pickle.dumps({b"data": np.array([1, "a"], dtype=object), b"labels": [0]}, protocol=2)
    expect(UnsafePickleError, lambda: formats.parse_cifar_pickle(data, "b"), "object")


@pytest.mark.parametrize("batch,error,fragment", [
    ([1, 2, 3], DataFormatError, "expected a dict"),
    ({b"labels": [0]}, DataFormatError, "lacks"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, CountMismatchError, "2 integers"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, ShapeError, "(N, 3072)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, ShapeError, "float32"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, LabelRangeError, "0..9"),
])
def test_malformed_python_batches(batch, error, fragment):
    data = pickle.dumps(batch, protocol=4)
    expect(error, lambda: formats.parse_cifar_pickle(data, "data_batch_1"), "data_batch_1",
           fragment)


@pytest.mark.parametrize("data", [b"", b"\x80\x02}(garbage", b"plain text"])
def test_corrupt_pickle_bytes(data):
    expect(CorruptArchiveError, lambda: formats.parse_cifar_pickle(data, "data_batch_1"),
           "data_batch_1", "pickle")

"""Atomic file writes: write to a temporary file beside the target, then rename it over.

Every file minivgg writes (plots, checkpoints, logs, benchmark results) goes through
here, so that a crash or an exception half-way never leaves a truncated file behind and
never destroys the previous version: the target is either the old file or the new one.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def _create_temp_beside(target: Path) -> Path:
    """Create an empty, uniquely named file in target's directory and return its path."""
    directory = target.parent
    if not directory.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(target)!r}: directory {str(directory)!r} does not exist; "
            f"create it first")
    for _ in range(100):
        # Keep the suffix so that writers which infer the format from it still work.
        temp = directory / f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}"
        try:
            # 0o666 filtered by the umask: the same permissions a plain open() would give,
            # unlike tempfile.mkstemp's 0o600.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return temp
    raise FileExistsError(f"could not create a temporary file beside {str(target)!r}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def atomic_write_path(path, fsync: bool = True):
    """Yield a temporary path to write to; on success it replaces `path` atomically.

        with atomic_write_path("curves.png") as tmp:
            figure.savefig(tmp)

    The temporary file lives in the same directory (a rename across file systems is not
    atomic) and keeps the target's suffix. If the body raises, the temporary file is
    removed and `path` is left exactly as it was. With `fsync`, the data reaches the disk
    before the rename, so a power cut cannot leave an empty file under the final name.
    """
    target = Path(os.fspath(path))
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {str(target)!r}: it is a directory; "
                                f"give a file name")
    temp = _create_temp_beside(target)
    try:
        yield temp
        if fsync:
            _fsync_file(temp)
        os.replace(temp, target)
    except BaseException:
        _remove_quietly(temp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", encoding: str | None = None, fsync: bool = True):
    """Like open(path, mode) for writing, but the file appears at `path` only when complete.

    `mode` is "w" (text, UTF-8 unless `encoding` is given) or "wb" (binary).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_write_path(path, fsync=fsync) as temp:
        with open(temp, mode, encoding=encoding) as handle:
            yield handle

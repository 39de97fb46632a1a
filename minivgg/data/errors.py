"""Exceptions of the data layer: every one says which file (or dataset) and what is wrong.

Catch `DataError` to handle them all (the CLI prints its message and exits non-zero).
Format errors are also `ValueError`s, missing files also `FileNotFoundError`s and
download failures also `OSError`s, so generic handlers keep working.
"""
from __future__ import annotations


class DataError(Exception):
    """Base class of every error raised by minivgg.data."""


class UnknownDatasetError(DataError, ValueError):
    """A dataset name that is not in the registry."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The files of a dataset are not on disk (and downloading was not asked for)."""


class DataFormatError(DataError, ValueError):
    """A local file that does not have the structure its format requires.

    `path` is the file (for archive members: "archive.tar.gz:member"), `problem` says
    what is wrong with it.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BadMagicError(DataFormatError):
    """The file does not start with the magic number of its format."""


class FileLengthError(DataFormatError):
    """The file is shorter (truncated) or longer than its header says."""


class ShapeError(DataFormatError):
    """The dimensions in the header are not the ones the dataset has."""


class CountMismatchError(DataFormatError):
    """Images and labels disagree on how many samples there are."""


class LabelRangeError(DataFormatError):
    """A label outside 0 .. num_classes - 1."""


class CorruptArchiveError(DataFormatError):
    """A gzip or tar container that cannot be decoded (bad header, bad CRC, cut short)."""


class MissingMemberError(DataFormatError):
    """An archive that lacks a member the dataset needs."""


class UnsafePickleError(DataFormatError):
    """A pickle (CIFAR-10 python version) that asks to build something other than arrays."""


class DownloadError(DataError, OSError):
    """No mirror delivered a good copy of a file."""


class ChecksumError(DownloadError):
    """A downloaded payload whose checksum is not the published one."""


class ChecksumWarning(UserWarning):
    """A local file whose checksum differs from the official one (its structure is valid)."""

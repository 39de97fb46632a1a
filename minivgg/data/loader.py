"""Batches from in-memory arrays: per-epoch shuffling from a seed, augmentation, prefetch.

Determinism: epoch k's order is drawn from SeedSequence([seed, k, 0]) and batch b of
epoch k is augmented with a Generator from SeedSequence([seed, k, 1, b]). So the
batches are a function of (seed, epoch) only: they do not depend on prefetching or
thread timing, and a resumed run reproduces them after `set_epoch(k)` (or
`load_state_dict`).
"""
from __future__ import annotations

import math
import numbers
import queue
import threading

import numpy as np

from .transforms import Normalize


class DataLoader:
    """Iterate (x float32 (B, C, H, W), y int64 (B,)) over images (N, C, H, W).

    uint8 images are scaled to [0, 1]; then `transform(x, rng)` and `normalize`
    ((mean, std) or a Normalize) are applied; with `transform_epochs` N, the transform
    applies in epochs 0..N-1 only (later epochs see the images as they are). Each `iter()`
    runs one epoch and moves `epoch` on by one. With `prefetch`, the next batch is gathered,
    converted and augmented in a background thread while the caller works on the current one;
    None (the default) prefetches only when the compiled kernels' thread pool leaves a core
    free (minivgg.kernels.spare_core): beside a pool that has every core, the thread only
    slows the training step down.
    """

    def __init__(self, images, labels, batch_size: int, shuffle: bool = True, seed=0,
                 drop_last: bool = False, transform=None, normalize=None,
                 prefetch: bool | None = None,
                 transform_epochs: int | None = None):
        if not isinstance(images, np.ndarray) or images.ndim != 4 or \
                not (images.dtype == np.uint8 or images.dtype.kind == "f"):
            shown = (f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray)
                     else type(images).__name__)
            raise ValueError(f"DataLoader: images must be a uint8 or float array (N, C, H, W); "
                             f"got {shown}")
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise ValueError(f"DataLoader: labels must be integers of shape ({len(images)},) "
                             f"to match images {images.shape}; got {labels.dtype} {labels.shape}")
        if not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int; got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable as t(x, rng); "
                            f"got {transform!r}")
        if transform_epochs is not None and (not isinstance(transform_epochs, numbers.Integral)
                                             or transform_epochs < 0):
            raise ValueError(f"DataLoader: transform_epochs must be a non-negative int or None; "
                             f"got {transform_epochs!r}")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = self._base_seed(seed)
        self.drop_last = drop_last
        self.transform = transform
        self.transform_epochs = transform_epochs
        if normalize is not None and not isinstance(normalize, Normalize):
            normalize = Normalize(*normalize)
        self.normalize = normalize
        self.prefetch = prefetch
        self.epoch = 0

    @staticmethod
    def _base_seed(seed) -> int:
        if isinstance(seed, np.random.Generator):
            return int(seed.integers(2**63))
        if not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"DataLoader: seed must be a non-negative int or a "
                             f"numpy.random.Generator; got {seed!r}")
        return int(seed)

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.images) // self.batch_size
        return math.ceil(len(self.images) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (to resume a run)."""
        if not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be a non-negative int; "
                             f"got {epoch!r}")
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed = self._base_seed(state["seed"])
        self.set_epoch(state["epoch"])

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of an epoch."""
        if not self.shuffle:
            return np.arange(len(self.images))
        return np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.images))

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        order = self.order(epoch)
        return [order[start:start + self.batch_size]
                for start in range(0, len(self) * self.batch_size, self.batch_size)]

    def transform_for(self, epoch: int):
        """The transform epoch `epoch` applies (None once transform_epochs have passed)."""
        if self.transform_epochs is not None and epoch >= self.transform_epochs:
            return None
        return self.transform

    def make_batch(self, indices: np.ndarray, rng: np.random.Generator, transform=None,
                   epoch: int = 0):
        x = self.images[indices]                                    # (B, C, H, W)
        if x.dtype == np.uint8:
            x = np.divide(x, np.float32(255), dtype=np.float32)
        else:
            x = x.astype(np.float32)
        if transform is not None and getattr(transform, "uses_positions", False):
            x = transform(x, rng, indices=indices, epoch=epoch, seed=self.seed)
        elif transform is not None:
            x = transform(x, rng)
        if self.normalize is not None:
            x = self.normalize(x)
        return np.ascontiguousarray(x, dtype=np.float32), self.labels[indices]

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        batches = self.batch_indices(epoch)
        transform = self.transform_for(epoch)

        def produce(b):
            return self.make_batch(batches[b], np.random.default_rng([self.seed, epoch, 1, b]),
                                   transform, epoch)

        prefetch = self.prefetch
        if prefetch is None:
            from ..kernels import spare_core
            prefetch = spare_core()
        if prefetch:
            return _prefetched(produce, len(batches))
        return (produce(b) for b in range(len(batches)))


def _prefetched(produce, count: int):
    """Yield produce(0..count-1), computing the next item in a background thread."""
    ready = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for b in range(count):
                if not put((produce(b), None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((None, exc))

    thread = threading.Thread(target=work, name="minivgg-prefetch", daemon=True)
    thread.start()
    try:
        for _ in range(count):
            item, error = ready.get()
            if error is not None:
                raise error
            yield item
    finally:
        stop.set()
        thread.join()


def train_val_split(images, labels, val_fraction: float | None = None,
                    val_size: int | None = None, seed: int = 0, stratify: bool = True):
    """Hold out a validation set: ((train_images, train_labels), (val_images, val_labels)).

    Give exactly one of val_fraction (0..1) or val_size. With `stratify`, every class
    keeps its share (largest-remainder rounding, so the total is exactly val_size).
    Both parts keep the original order; they are disjoint and together cover the input.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if len(images) != n:
        raise ValueError(f"train_val_split: {len(images)} images but {n} labels")
    if (val_fraction is None) == (val_size is None):
        raise ValueError("train_val_split: give exactly one of val_fraction or val_size")
    if val_fraction is not None:
        if not 0 < val_fraction < 1:
            raise ValueError(f"train_val_split: val_fraction must be in (0, 1); got {val_fraction}")
        val_size = int(round(val_fraction * n))
    if not 0 < val_size < n:
        raise ValueError(f"train_val_split: val_size must be in 1..{n - 1} for {n} samples; "
                         f"got {val_size}")
    perm = np.random.default_rng(seed).permutation(n)
    if stratify:
        classes, counts = np.unique(labels, return_counts=True)
        share = counts * val_size / n
        quota = np.floor(share).astype(np.int64)
        by_remainder = np.argsort(-(share - quota), kind="stable")
        quota[by_remainder[:val_size - quota.sum()]] += 1
        shuffled = labels[perm]
        val = np.concatenate([perm[shuffled == c][:q] for c, q in zip(classes, quota)])
    else:
        val = perm[:val_size]
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return (images[~is_val], labels[~is_val]), (images[is_val], labels[is_val])

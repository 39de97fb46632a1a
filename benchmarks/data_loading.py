"""Timings of the data layer on the real datasets.

    MINIVGG_DATA=../shared/datasets python benchmarks/data_loading.py

Prints: loading MNIST (train + test) and CIFAR-10; augmentation cost per 128-batch;
and an epoch of the MNIST loader with augmentation and a simulated training step,
with and without prefetch (the step is a sleep, which leaves the CPU free like a
step waiting on BLAS threads, and a busy matmul, which competes for it).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)
from minivgg.data.loader import DataLoader
from minivgg.data.sources import load_dataset
from minivgg.data.transforms import (Compose, RandomAffine, RandomCrop, RandomHorizontalFlip,
                                     RandomRotation)


def _seconds(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _per_batch_ms(transform, images, batch_size=128, repeat=20) -> float:
    x = images[:batch_size].astype(np.float32) / 255
    rng = np.random.default_rng(0)
    return 1000 * _seconds(lambda: [transform(x, rng) for _ in range(repeat)], 3) / repeat


def _epoch(loader, step, limit: int) -> float:
    def run():
        for i, _ in enumerate(loader):
            step()
            if i + 1 == limit:
                break
    return _seconds(run, 2)  # best of two: the machine may be shared


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/data_loading.py")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batches", type=int, default=200, help="batches per timed epoch")
    args = parser.parse_args(argv)

    mnist = {}
    seconds = _seconds(lambda: mnist.update(train=load_dataset("mnist", "train", args.data_dir),
                                            test=load_dataset("mnist", "test", args.data_dir)), 2)
    print(f"load MNIST train+test (70,000 images, gz): {seconds:.2f} s")
    cifar = {}
    seconds = _seconds(lambda: cifar.update(train=load_dataset("cifar10", "train", args.data_dir)))
    print(f"load CIFAR-10 train (50,000 images, tar.gz): {seconds:.2f} s")
    seconds = _seconds(lambda: cifar.update(test=load_dataset("cifar10", "test", args.data_dir)))
    print(f"load CIFAR-10 test (10,000 images, tar.gz): {seconds:.2f} s")

    mnist_aug = Compose([RandomRotation(10),
                         RandomAffine(0, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10)])
    cifar_aug = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()])
    print(f"augment a 128-batch, MNIST rotation + affine: "
          f"{_per_batch_ms(mnist_aug, mnist['train'][0]):.2f} ms")
    one_warp = RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10)
    print(f"augment a 128-batch, MNIST affine only:      "
          f"{_per_batch_ms(one_warp, mnist['train'][0]):.2f} ms")
    print(f"augment a 128-batch, CIFAR-10 crop + flip:   "
          f"{_per_batch_ms(cifar_aug, cifar['train'][0]):.2f} ms")

    a = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)
    one_matmul = _seconds(lambda: [a @ a for _ in range(10)], 20) / 10
    busy_runs = max(1, round(0.010 / one_matmul))
    steps = {"sleep 10 ms": lambda: time.sleep(0.010),
             f"busy ~10 ms ({busy_runs} x 256^3 matmul)": lambda: [a @ a for _ in range(busy_runs)]}
    images, labels = mnist["train"]
    n = args.batches
    for name, step in steps.items():
        bare = _epoch(range(n), step, n)
        print(f"{n} steps of '{name}', no data: {bare:.2f} s")
        for prefetch in (False, True):
            loader = DataLoader(images, labels, 128, seed=0, transform=mnist_aug,
                                normalize=((0.1307,), (0.3081,)), prefetch=prefetch)
            seconds = _epoch(loader, step, n)
            print(f"  + MNIST loader with augmentation, prefetch={prefetch}: {seconds:.2f} s "
                  f"({1000 * (seconds - bare) / n:+.2f} ms per batch over the bare steps)")


if __name__ == "__main__":
    main()

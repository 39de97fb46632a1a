"""DataLoader: batches, per-epoch deterministic shuffling, resume, prefetch; train_val_split."""
import threading
import time

import numpy as np
import pytest

from minivgg.data import DataLoader, Normalize, RandomAffine, RandomCrop, train_val_split


@pytest.fixture
def dataset():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(103, 1, 6, 6), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(103)  # pixel (0, 0) identifies the sample
    labels = np.arange(103) % 10
    return images, labels


def sample_ids(x):
    return np.rint(x[:, 0, 0, 0] * 255).astype(int)


def collect(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def test_batches_cover_every_sample_once(dataset):
    images, labels = dataset
    loader = DataLoader(images, labels, batch_size=16, seed=1)
    batches = collect(loader)
    assert len(loader) == len(batches) == 7
    assert [len(y) for _, y in batches] == [16] * 6 + [7]
    ids = np.concatenate([sample_ids(x) for x, _ in batches])
    assert sorted(ids) == list(range(103)) and not np.array_equal(ids, np.arange(103))
    for x, y in batches:
        assert x.dtype == np.float32 and x.shape[1:] == (1, 6, 6) and x.flags.c_contiguous
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, labels[sample_ids(x)])
        np.testing.assert_allclose(x, images[sample_ids(x)] / 255, rtol=1e-6)


def test_drop_last(dataset):
    loader = DataLoader(*dataset, batch_size=16, drop_last=True)
    batches = collect(loader)
    assert len(loader) == len(batches) == 6 and all(len(y) == 16 for _, y in batches)


def test_no_shuffle_keeps_order(dataset):
    batches = collect(DataLoader(*dataset, batch_size=50, shuffle=False))
    np.testing.assert_array_equal(np.concatenate([sample_ids(x) for x, _ in batches]),
                                  np.arange(103))


def test_epochs_reshuffle_deterministically(dataset):
    a = DataLoader(*dataset, batch_size=32, seed=5)
    b = DataLoader(*dataset, batch_size=32, seed=5)
    epoch0, epoch1 = collect(a), collect(a)
    assert a.epoch == 2
    assert not np.array_equal(epoch0[0][1], epoch1[0][1])
    for (xa, ya), (xb, yb) in zip(epoch0 + epoch1, collect(b) + collect(b)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = collect(DataLoader(*dataset, batch_size=32, seed=6))
    assert not np.array_equal(other[0][1], epoch0[0][1])


def test_resume_with_set_epoch_and_state_dict(dataset):
    transform = RandomAffine(15, translate=(0.1, 0.1))
    run = DataLoader(*dataset, batch_size=20, seed=3, transform=transform)
    epochs = [collect(run) for _ in range(3)]
    fresh = DataLoader(*dataset, batch_size=20, seed=3, transform=transform)
    fresh.set_epoch(2)
    for (x, y), (x2, y2) in zip(epochs[2], collect(fresh)):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    run.set_epoch(1)
    state = run.state_dict()
    resumed = DataLoader(*dataset, batch_size=20, seed=999, transform=transform)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == {"seed": 3, "epoch": 1}
    np.testing.assert_array_equal(collect(resumed)[0][0], epochs[1][0][0])


def test_generator_seed(dataset):
    a = collect(DataLoader(*dataset, batch_size=32, seed=np.random.default_rng(4)))
    b = collect(DataLoader(*dataset, batch_size=32, seed=np.random.default_rng(4)))
    np.testing.assert_array_equal(a[0][1], b[0][1])


def test_prefetch_gives_the_same_batches(dataset):
    kwargs = dict(batch_size=10, seed=2, transform=RandomCrop(6, padding=1),
                  normalize=((0.5,), (0.25,)))
    with_prefetch = collect(DataLoader(*dataset, prefetch=True, **kwargs))
    without = collect(DataLoader(*dataset, prefetch=False, **kwargs))
    assert len(with_prefetch) == len(without) == 11
    for (x, y), (x2, y2) in zip(with_prefetch, without):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("spare", [True, False])
def test_default_prefetches_only_with_a_core_to_spare(dataset, monkeypatch, spare):
    """Beside a thread pool that has every core, batches are made in the training thread."""
    import minivgg.kernels
    monkeypatch.setattr(minivgg.kernels, "spare_core", lambda: spare)
    names = []
    for _ in DataLoader(*dataset, batch_size=10):
        names.append(sorted(t.name for t in threading.enumerate()))
    assert all(("minivgg-prefetch" in n) == spare for n in names[:-1])


def test_normalize_is_applied_after_transform(dataset):
    images, labels = dataset
    x, y = next(iter(DataLoader(images, labels, batch_size=8, shuffle=False,
                                normalize=Normalize((0.5,), (0.25,)))))
    np.testing.assert_allclose(x, (images[:8] / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    assert x.dtype == np.float32


def test_float_images_are_not_rescaled():
    images = np.random.default_rng(0).random((10, 3, 4, 4)).astype(np.float64)
    x, _ = next(iter(DataLoader(images, np.zeros(10, int), batch_size=10, shuffle=False)))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, images, rtol=1e-6)


def test_early_break_stops_the_prefetch_thread(dataset):
    before = threading.active_count()
    loader = DataLoader(*dataset, batch_size=4, prefetch=True)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    time.sleep(0.05)
    iterator = iter(loader)
    next(iterator)
    iterator.close()
    assert threading.active_count() == before


def test_error_in_transform_reaches_the_caller(dataset):
    def broken(x, rng):
        raise RuntimeError("augmentation failed")
    loader = DataLoader(*dataset, batch_size=8, transform=broken)
    with pytest.raises(RuntimeError, match="augmentation failed"):
        for _ in loader:
            pass


def test_transform_epochs_stop_the_augmentation_after_n_epochs(dataset):
    """Epochs 0..N-1 are augmented as without the limit; later ones as without a transform."""
    shift = RandomAffine(degrees=0, translate=(0.5, 0.5))
    limited = DataLoader(*dataset, batch_size=16, seed=3, transform=shift, transform_epochs=2)
    always = DataLoader(*dataset, batch_size=16, seed=3, transform=shift)
    plain = DataLoader(*dataset, batch_size=16, seed=3)
    for epoch in range(4):
        expected = collect(always if epoch < 2 else plain)
        unexpected = collect(plain if epoch < 2 else always)
        got = collect(limited)
        for (x, y), (xe, ye), (xu, _) in zip(got, expected, unexpected):
            np.testing.assert_array_equal(y, ye)
            np.testing.assert_array_equal(x, xe)
        assert not all(np.array_equal(x, xu) for (x, _), (xu, _) in zip(got, unexpected))
    for epoch, reference in ((1, always), (3, plain)):   # resuming goes by the epoch number
        limited.set_epoch(epoch)
        reference.set_epoch(epoch)
        np.testing.assert_array_equal(next(iter(limited))[0], next(iter(reference))[0])


def test_prefetch_hides_augmentation_cost(dataset):
    """A 20 ms augmentation overlaps a 20 ms training step when prefetched."""
    def slow(x, rng):
        time.sleep(0.02)
        return x

    def epoch_time(prefetch):
        loader = DataLoader(*dataset, batch_size=10, transform=slow, prefetch=prefetch)
        start = time.perf_counter()
        for _ in loader:
            time.sleep(0.02)  # the training step
        return time.perf_counter() - start

    serial, overlapped = epoch_time(False), epoch_time(True)
    assert serial > 11 * 0.04 * 0.95
    assert overlapped < 0.8 * serial, (serial, overlapped)


@pytest.mark.parametrize("kwargs,match", [
    (dict(images=np.zeros((4, 6, 6), np.uint8)), r"\(N, C, H, W\)"),
    (dict(images=np.zeros((4, 1, 6, 6), np.int32)), "uint8 or float"),
    (dict(labels=np.zeros(5, int)), r"shape \(4,\)"),
    (dict(labels=np.zeros(4, float)), "integers"),
    (dict(batch_size=0), "batch_size"),
    (dict(seed=-1), "seed"),
    (dict(normalize=((0.5,), (0.5, 0.5))), "mean has 1"),
    (dict(transform_epochs=-1), "transform_epochs"),
    (dict(transform_epochs=1.5), "transform_epochs"),
])
def test_bad_arguments(kwargs, match):
    args = dict(images=np.zeros((4, 1, 6, 6), np.uint8), labels=np.zeros(4, int), batch_size=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DataLoader(**args)
    with pytest.raises(ValueError, match="epoch"):
        DataLoader(np.zeros((4, 1, 6, 6), np.uint8), np.zeros(4, int), 2).set_epoch(-1)


# ------------------------------------------------------------------ train_val_split

def test_split_is_disjoint_covering_and_stratified():
    labels = np.repeat(np.arange(5), [100, 200, 50, 150, 500])
    ids = np.arange(len(labels))
    (xt, yt), (xv, yv) = train_val_split(ids[:, None, None, None], labels, val_fraction=0.1, seed=0)
    assert len(yv) == 100 and len(yt) == 900
    train_ids, val_ids = xt[:, 0, 0, 0], xv[:, 0, 0, 0]
    assert not set(train_ids) & set(val_ids)
    assert sorted(np.concatenate([train_ids, val_ids])) == list(range(1000))
    np.testing.assert_array_equal(np.bincount(yv), [10, 20, 5, 15, 50])
    np.testing.assert_array_equal(yv, labels[val_ids])
    assert np.all(np.diff(val_ids) > 0) and np.all(np.diff(train_ids) > 0)  # order kept


def test_split_exact_size_and_determinism():
    labels = np.arange(103) % 7
    images = np.arange(103)[:, None, None, None]
    a = train_val_split(images, labels, val_size=11, seed=4)
    b = train_val_split(images, labels, val_size=11, seed=4)
    c = train_val_split(images, labels, val_size=11, seed=5)
    assert len(a[1][1]) == 11
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert not np.array_equal(a[1][0], c[1][0])
    counts = np.bincount(a[1][1], minlength=7)
    assert counts.max() - counts.min() <= 1
    plain = train_val_split(images, labels, val_size=11, seed=4, stratify=False)
    assert len(plain[1][1]) == 11 and len(plain[0][1]) == 92


@pytest.mark.parametrize("kwargs", [dict(), dict(val_fraction=0.1, val_size=3),
                                    dict(val_fraction=1.0), dict(val_size=0), dict(val_size=10)])
def test_split_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="train_val_split"):
        train_val_split(np.zeros((10, 1, 2, 2)), np.arange(10), **kwargs)

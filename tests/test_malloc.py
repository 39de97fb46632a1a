"""malloc.keep_freed_memory: glibc keeps freed memory for the next training step."""
import platform
import resource

import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from minivgg.functional import malloc

GLIBC = platform.libc_ver()[0] == "glibc"


def _set_now(monkeypatch, **env):
    """keep_freed_memory's answer for this environment (bypassing its once-per-process cache)."""
    for name in malloc._ENVIRONMENT_TUNING + ("MINIVGG_MALLOC",):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return malloc.keep_freed_memory.__wrapped__()


def test_opting_out_and_environment_tuning_leave_malloc_alone(monkeypatch):
    assert _set_now(monkeypatch, MINIVGG_MALLOC="default") is False
    assert _set_now(monkeypatch, MALLOC_ARENA_MAX="2") is False
    assert _set_now(monkeypatch, MALLOC_TRIM_THRESHOLD_="0") is False


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's: elsewhere nothing is tuned")
def test_glibc_is_tuned(monkeypatch):
    assert _set_now(monkeypatch) is True


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's: elsewhere nothing is tuned")
def test_after_a_convolution_a_freed_large_array_is_reused_without_page_faults(monkeypatch):
    for name in malloc._ENVIRONMENT_TUNING + ("MINIVGG_MALLOC",):
        monkeypatch.delenv(name, raising=False)
    malloc.keep_freed_memory.cache_clear()
    F.conv2d(np.zeros((2, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32))
    assert malloc.keep_freed_memory() is True
    size = 48 * 2**20 // 4  # 48 MB: glibc's defaults always mmap this size afresh
    np.ones(size, np.float32).sum()  # touched, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(size, np.float32).sum()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # glibc's defaults: ~12,000 faults (~500 with transparent huge pages); tuned: ~0
    assert faults < 50, f"{faults} page faults re-allocating 48 MB"


@pytest.mark.parametrize("shape, dtype", [((3, 5, 7), np.float32), (11, np.uint8), ((0, 4), np.float64),
                                          ((2, 3), "float32")])
def test_empty_starts_on_a_cache_line(shape, dtype):
    for _ in range(20):  # malloc's 16-byte alignment would miss 64 three times in four
        a = malloc.empty(shape, dtype)
        assert a.size == 0 or a.ctypes.data % malloc.ALIGNMENT == 0
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
        assert a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable


def test_a_training_step_streams_aligned_arrays():
    """What the compiled kernels read and write: conv2d's output and input gradient (direct
    and GEMM paths), BatchNorm's and max pooling's outputs and input gradients."""
    rng = np.random.default_rng(0)
    for side, channels in ((9, 4), (30, 4), (9, 32)):
        x = rng.standard_normal((16, channels, side + 1, side + 1), dtype=np.float32)
        x = minivgg.Tensor(x[:, :, 1:, 1:], requires_grad=True)  # strided: conv2d copies it
        w = rng.standard_normal((8, channels, 3, 3), dtype=np.float32)
        y = F.conv2d(x, minivgg.Tensor(w, requires_grad=True), padding=1)
        b = F.batch_norm(y, None, None, training=True)
        z = F.max_pool2d(b, 2)
        for a in (y, b, z):
            assert a.data.transpose(1, 2, 3, 0).ctypes.data % malloc.ALIGNMENT == 0
        grads = [fn.backward(np.ones(out.shape, np.float32))[0]
                 for fn, out in ((y._ctx, y), (b._ctx, b), (z._ctx, z))]
        for g in grads:
            assert g.transpose(1, 2, 3, 0).ctypes.data % malloc.ALIGNMENT == 0

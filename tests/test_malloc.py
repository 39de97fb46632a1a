"""malloc.keep_freed_memory: glibc keeps freed memory for the next training step."""
import platform
import resource

import numpy as np
import pytest

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

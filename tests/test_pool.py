"""max/avg/adaptive pooling: gradient checks, PyTorch parity in float32, input validation."""
import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from conftest import gradcheck
from parity import assert_op_matches_torch


def _distinct(shape, seed=0):
    """Values at least 0.1 apart, so no window maximum changes within the finite-difference eps."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))) * 0.1 - 1.0).reshape(shape)


POOL_GRID = [
    # kernel, stride, padding, input (H, W)
    (2, None, 0, (6, 8)),          # windows tile the input: max pooling's fast path
    ((2, 3), None, 0, (4, 9)),     # tiling, non-square kernel
    (3, 3, 0, (6, 3)),             # tiling, stride given explicitly
    (2, None, 0, (7, 9)),          # remainder rows/columns get no gradient
    (3, 2, 1, (7, 6)),             # overlapping windows with padding
    (3, 2, 0, (8, 9)),
    (3, 1, 1, (5, 4)),
    ((2, 3), (1, 2), (1, 1), (5, 7)),
    (2, 1, 1, (4, 5)),
    (1, 2, 0, (5, 5)),
    ((3, 2), None, (1, 0), (6, 6)),
]


@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_GRID)
def test_max_pool2d_gradcheck(kernel, stride, padding, hw):
    x = _distinct((2, 3) + hw)
    gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding), x)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_GRID)
def test_avg_pool2d_gradcheck(kernel, stride, padding, hw, count_include_pad):
    x = np.random.default_rng(1).standard_normal((2, 3) + hw)
    gradcheck(lambda x: F.avg_pool2d(x, kernel, stride, padding, count_include_pad), x)


ADAPTIVE_GRID = [
    ((7, 5), (3, 2)),   # bins overlap and differ in length
    ((7, 5), 4),
    ((6, 6), 1),        # global average pooling
    ((6, 8), (3, 4)),   # divisible
    ((4, 3), (4, 3)),   # identity
    ((3, 2), (5, 4)),   # larger than the input: bins repeat
]


@pytest.mark.parametrize("hw, output_size", ADAPTIVE_GRID)
def test_adaptive_avg_pool2d_gradcheck(hw, output_size):
    x = np.random.default_rng(2).standard_normal((2, 3) + hw)
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, output_size), x)


# ---- PyTorch parity (float32) ---------------------------------------------------------

def _parity(torch, ours_fn, torch_fn, x, seed=0):
    """Forward and input gradient of ours vs torch on float32 x, with a random output grad."""
    assert_op_matches_torch(
        torch, ours_fn, torch_fn, [x],
        lambda shape: np.random.default_rng(seed).standard_normal(shape, dtype=np.float32),
        rtol=1e-5, atol=1e-6, names=["dx"])


@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_GRID)
def test_max_pool2d_matches_torch_with_ties(torch, kernel, stride, padding, hw):
    # Small integers after a ReLU: most windows hold several equal maxima (often all 0),
    # so this checks that the gradient goes to the first maximum in each window, as in torch.
    rng = np.random.default_rng(3)
    x = np.maximum(rng.integers(-2, 3, (3, 4) + hw), 0).astype(np.float32)
    _parity(torch, lambda t: F.max_pool2d(t, kernel, stride, padding),
            lambda t: torch.nn.functional.max_pool2d(t, kernel, stride, padding), x)


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d,
                                  lambda x, kernel: F.adaptive_avg_pool2d(
                                      x, (x.shape[2] // kernel[0], x.shape[3] // kernel[1]))])
@pytest.mark.parametrize("kernel, hw", [((2, 2), (8, 6)), ((2, 3), (4, 9)), ((3, 1), (6, 5)),
                                        ((1, 1), (3, 4))])
def test_pooling_chwn_memory_equals_nchw(pool, kernel, hw):
    """The same values laid out as conv2d's (C, H, W, N) memory and as plain NCHW give the
    same bits forward and backward, ties included."""
    rng = np.random.default_rng(8)
    x = np.maximum(rng.integers(-2, 3, (2, 3) + hw), 0).astype(np.float32)
    grad = rng.standard_normal((2, 3, hw[0] // kernel[0], hw[1] // kernel[1]))
    chwn = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    results = []
    for layout in (x, chwn):
        xm = minivgg.Tensor(layout, requires_grad=True)
        out = pool(xm, kernel)
        out.backward(grad.astype(np.float32))
        results.append((np.ascontiguousarray(out.data), np.ascontiguousarray(xm.grad)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def _recording(apply, calls):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return apply(*args, **kwargs)
    return wrapped


def test_max_pool2d_matches_torch_on_negative_inputs_with_padding(torch):
    # Every value is negative: a zero-padded pool would wrongly pick the padding.
    x = -np.random.default_rng(4).random((2, 3, 9, 7), dtype=np.float32) - 1.0
    _parity(torch, lambda t: F.max_pool2d(t, 3, 2, 1),
            lambda t: torch.nn.functional.max_pool2d(t, 3, 2, 1), x)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_GRID)
def test_avg_pool2d_matches_torch(torch, kernel, stride, padding, hw, count_include_pad):
    x = np.random.default_rng(5).standard_normal((3, 4) + hw, dtype=np.float32)
    _parity(torch, lambda t: F.avg_pool2d(t, kernel, stride, padding, count_include_pad),
            lambda t: torch.nn.functional.avg_pool2d(t, kernel, stride, padding,
                                                     count_include_pad=count_include_pad), x)


@pytest.mark.parametrize("hw, output_size", ADAPTIVE_GRID + [((32, 32), 1), ((10, 13), (7, 7))])
def test_adaptive_avg_pool2d_matches_torch(torch, hw, output_size):
    x = np.random.default_rng(6).standard_normal((3, 4) + hw, dtype=np.float32)
    _parity(torch, lambda t: F.adaptive_avg_pool2d(t, output_size),
            lambda t: torch.nn.functional.adaptive_avg_pool2d(t, output_size), x)


def test_pooling_keeps_float64_and_records_nothing_under_no_grad():
    x = minivgg.Tensor(np.random.default_rng(7).standard_normal((1, 2, 6, 6)),
                       requires_grad=True)
    for op in (lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: F.avg_pool2d(t, 2),
               lambda t: F.adaptive_avg_pool2d(t, 4)):
        out = op(x)
        assert out.dtype == np.float64 and out.data.flags.c_contiguous
        with minivgg.no_grad():
            assert not op(x).requires_grad


def test_global_average_pooling_is_the_mean():
    x = np.random.default_rng(8).standard_normal((2, 3, 5, 7)).astype(np.float32)
    out = F.adaptive_avg_pool2d(x, 1)
    assert out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out.data[:, :, 0, 0], x.mean(axis=(2, 3)), rtol=1e-6)


# ---- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", [lambda x: F.max_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2),
                                lambda x: F.adaptive_avg_pool2d(x, 2)])
def test_pooling_rejects_wrong_rank(op):
    with pytest.raises(ValueError, match=r"expects a 4-D input \(N, C, H, W\).*\(3, 8, 8\)"):
        op(np.zeros((3, 8, 8), np.float32))


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pooling_padding_at_most_half_the_kernel(pool):
    x = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half of kernel_size \(3, 3\)"):
        pool(x, 3, 1, 2)
    with pytest.raises(ValueError, match=r"padding \(0, 2\) must be at most half"):
        pool(x, (2, 3), 1, (0, 2))
    assert pool(x, 3, 1, 1).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pooling_kernel_larger_than_padded_input(pool):
    with pytest.raises(ValueError, match=r"kernel_size \(4, 4\) is larger than the padded input \(5, 3\).*\(1, 2, 3, 1\)"):
        pool(np.zeros((1, 2, 3, 1), np.float32), 4, 1, 1)


@pytest.mark.parametrize("kwargs, name", [
    ({"kernel_size": 0}, "kernel_size"), ({"kernel_size": (2, -1)}, "kernel_size"),
    ({"kernel_size": "2"}, "kernel_size"), ({"kernel_size": 2, "stride": 0}, "stride"),
    ({"kernel_size": 2, "padding": -1}, "padding"), ({"kernel_size": 2, "padding": 0.5}, "padding"),
])
@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pooling_bad_options(pool, kwargs, name):
    with pytest.raises(ValueError, match=f"pool2d: {name}"):
        pool(np.zeros((1, 1, 6, 6), np.float32), **kwargs)


@pytest.mark.parametrize("output_size", [0, (2, 0), (2,), "2", None, 1.5])
def test_adaptive_avg_pool2d_bad_output_size(output_size):
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size"):
        F.adaptive_avg_pool2d(np.zeros((1, 1, 6, 6), np.float32), output_size)

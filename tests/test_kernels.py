"""The compiled kernels: each parallel kernel gives the same bits with 1 and 2 threads, and
the same bits on every run. (Their maths is checked through the ops that call them:
gradient checks and PyTorch parity in test_conv.py, test_norm.py and test_pool.py.)"""
import numba
import numpy as np
import pytest

from minivgg.kernels import conv, norm, pool, unfold, winograd

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                reason="needs Numba's pool to have 2 threads (2 cores)")


def _runs(kernel, make_args, outputs):
    """The output arrays of kernel(*args) with 1 and with 2 threads, twice each."""
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2, 1, 2):
            numba.set_num_threads(threads)
            args = make_args()
            returned = kernel(*args)
            results.append([args[i].copy() for i in outputs]
                           + ([] if returned is None else [np.asarray(returned)]))
    finally:
        numba.set_num_threads(before)
    return results


def _assert_all_equal(results):
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


RNG_SEED = 7
BATCH = 37  # not a multiple of any SIMD width


def _data(*shape):
    return np.random.default_rng(RNG_SEED + len(shape)).standard_normal(shape, dtype=np.float32)


def test_conv3x3_same_bits_for_any_thread_count():
    # 7 channels: a group of four and three taken one at a time; 60 * 37 positions per row:
    # more than one BLOCK, and not a multiple of it
    xp, w = _data(5, 9, 62 * BATCH), _data(7, 5, 3, 3)
    _assert_all_equal(_runs(conv.conv3x3,
                            lambda: (xp, w, _data(7), True, _data(7), _data(7), BATCH,
                                    np.full((7, 7, 60 * BATCH), np.nan, np.float32)),
                            [7]))


def test_conv3x3_weight_grad_same_bits_for_any_thread_count():
    # 5 output channels: two pairs and one channel paired with itself
    xp, g = _data(3, 6, 72 * BATCH), _data(5, 4, 70 * BATCH)
    _assert_all_equal(_runs(conv.conv3x3_weight_grad,
                            lambda: (xp, g, BATCH, np.empty((5, 3, 3, 3), np.float32)), [3]))


def test_conv5x5_same_bits_for_any_thread_count():
    xp, w = _data(3, 11, 64 * BATCH), _data(6, 3, 5, 5)  # 6 channels: a group and two
    _assert_all_equal(_runs(conv.conv5x5,
                            lambda: (xp, w, _data(6), False, _data(6), _data(6), BATCH,
                                    np.full((6, 7, 60 * BATCH), np.nan, np.float32)),
                            [7]))


def test_conv5x5_weight_grad_same_bits_for_any_thread_count():
    xp, g = _data(2, 8, 64 * BATCH), _data(3, 4, 60 * BATCH)
    _assert_all_equal(_runs(conv.conv5x5_weight_grad,
                            lambda: (xp, g, BATCH, np.empty((3, 2, 5, 5), np.float32)), [3]))


@pytest.mark.parametrize("relu, pool", [(False, False), (True, False), (True, True)])
def test_winograd3x3_same_bits_for_any_thread_count(relu, pool):
    # 6 output channels: a group of four and a group of two; 19 input channels: two passes
    # of eight and three single channels; 9 tile columns in blocks of 4: a short last block
    x, w = _data(19, 10, 18, BATCH), _data(6, 19, 3, 3)
    xq = np.empty((19, 12, 2, 10, BATCH), np.float32)
    winograd.pad_parity(x, 1, 1, xq)
    u, bias = winograd.winograd_weights(w), _data(6)
    out_shape = (6, 5, 9 * BATCH) if pool else (6, 10, 18 * BATCH)
    _assert_all_equal(_runs(
        winograd.winograd3x3,
        lambda: (xq, u, bias, relu, _data(6), _data(6) + 1, BATCH, 4, pool,
                 np.full(out_shape, np.nan, np.float32)),
        [9]))


@pytest.mark.parametrize("relu_before, relu_after, dropout",
                         [(False, False, False), (True, False, False), (False, True, False),
                          (False, True, True)])
def test_batch_norm_same_bits_for_any_thread_count(relu_before, relu_after, dropout):
    x, dy = _data(5, 30, BATCH) + 3, _data(5, 30, BATCH)
    w, b = _data(5), _data(5)
    drop = ((np.uint64(12345), np.uint32(2 ** 31), 2.0, 30 * BATCH, BATCH) if dropout
            else norm.NO_DROPOUT)

    def forward_args():
        return (x, w, b, 1e-5, relu_before, relu_after, drop, np.empty_like(x), np.empty(5),
                np.empty(5))
    forward = _runs(norm.batch_norm_forward, forward_args, [7, 8, 9])
    _assert_all_equal(forward)
    out, mean, invstd = forward[0][:3]
    if dropout:
        assert 0.3 < np.mean(out == 0) < 0.8

    for batch_stats in (True, False):  # training's gradient, eval's
        def backward_args():
            return (x, dy, out, w, mean, invstd, batch_stats, relu_before, relu_after, drop[2],
                    np.empty_like(x), np.empty(5, np.float32), np.empty(5, np.float32))
        _assert_all_equal(_runs(norm.batch_norm_backward, backward_args, [10, 11, 12]))


@pytest.mark.parametrize("window", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1)])
def test_max_pool_same_bits_for_any_thread_count(window):
    x = np.maximum(np.round(_data(6, 9, 9, BATCH)), 0)  # ties, as after a ReLU
    kh, kw, sh, sw, ph, pw = window
    oh, ow = (9 + 2 * ph - kh) // sh + 1, (9 + 2 * pw - kw) // sw + 1
    forward = _runs(pool.max_pool, lambda: (x, *window, np.empty((6, oh, ow, BATCH), np.float32),
                                            np.empty((6, oh, ow, BATCH), np.uint8)), [7, 8])
    _assert_all_equal(forward)
    argmax = forward[0][1]
    g = _data(6, oh, ow, BATCH)
    _assert_all_equal(_runs(pool.max_pool_backward,
                            lambda: (g, argmax, *window, np.empty_like(x)), [8]))


@pytest.mark.parametrize("taps, stride, top, left, out_hw", [
    ((3, 3), (1, 1), 1, 1, (9, 9)),   # im2col, padded
    ((2, 3), (2, 3), 0, 1, (4, 3)),   # im2col, strided
    ((1, 3), (1, 1), 2, 1, (13, 9))])  # row GEMMs' unfolding: every padded row
def test_unfold_same_bits_for_any_thread_count_and_fold_is_its_adjoint(taps, stride, top, left,
                                                                        out_hw):
    x = _data(5, 9, 9, BATCH)
    cols_shape = (*taps, 5, *out_hw, BATCH)
    results = _runs(unfold.unfold, lambda: (x, *stride, top, left,
                                            np.full(cols_shape, np.nan, np.float32)), [5])
    _assert_all_equal(results)
    cols, d_cols = results[0][0], _data(*cols_shape)
    folded = _runs(unfold.fold, lambda: (d_cols, *stride, top, left, np.full_like(x, np.nan)),
                   [5])
    _assert_all_equal(folded)
    # <unfold(x), d_cols> = <x, fold(d_cols)>
    assert np.isclose(np.vdot(cols.astype(np.float64), d_cols),
                      np.vdot(x.astype(np.float64), folded[0][0]), rtol=1e-5)
    # and unfold is the windows: the tap (i, j) value at (oh, ow) is x at the shifted place
    i, j, oh, ow = taps[0] - 1, taps[1] - 1, out_hw[0] - 1, 0
    h, w = stride[0] * oh + i - top, stride[1] * ow + j - left
    expected = x[2, h, w] if 0 <= h < 9 and 0 <= w < 9 else 0
    np.testing.assert_array_equal(cols[i, j, 2, oh, ow], expected)


def test_avg_pool_same_bits_for_any_thread_count():
    x, g = _data(6, 9, 9, BATCH), _data(6, 3, 4, BATCH)
    rows = np.array([[0, 3], [2, 6], [5, 9]])  # overlapping, as adaptive bins and strides make
    columns = np.array([[0, 2], [1, 4], [4, 7], [6, 9]])
    divisor = _data(3, 4) + 5
    _assert_all_equal(_runs(pool.avg_pool, lambda: (x, rows, columns, divisor,
                                                    np.empty((6, 3, 4, BATCH), np.float32)), [4]))
    _assert_all_equal(_runs(pool.avg_pool_backward,
                            lambda: (g, rows, columns, divisor, np.empty_like(x)), [4]))


def test_kernels_launched_from_two_threads_at_once_take_turns():
    """Numba's workqueue layer aborts on concurrent launches; `serialised` makes them wait."""
    import threading
    x = np.maximum(np.round(_data(6, 8, 8, BATCH)), 0)
    expected = np.empty((6, 4, 4, BATCH), np.float32)
    pool.max_pool(x, 2, 2, 2, 2, 0, 0, expected, np.empty((6, 4, 4, BATCH), np.uint8))
    failures = []

    def work():
        for _ in range(20):
            out = np.empty((6, 4, 4, BATCH), np.float32)
            pool.max_pool(x, 2, 2, 2, 2, 0, 0, out, np.empty((6, 4, 4, BATCH), np.uint8))
            if not np.array_equal(out, expected):
                failures.append(1)
    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


@pytest.mark.parametrize("shape", [(37, 300, 2050), (2050, 300, 37), (3, 5, 7), (64, 1, 40000)])
def test_gemm_split_across_threads_gives_the_same_bits(shape):
    from minivgg.functional import gemm
    rows, inner, columns = shape
    a, b = _data(rows, inner), _data(inner, columns)[::-1]  # a strided b as well
    results = _runs(lambda a, b, out: gemm.gemm(a, b, out=out),
                    lambda: (a, b, np.empty((rows, columns), np.float32)), outputs=[2])
    _assert_all_equal(results)
    np.testing.assert_allclose(results[0][0], a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    assert gemm.blas_threads() in (1, None)  # minivgg runs OpenBLAS single-threaded



def test_elementwise_kernels_same_bits_for_any_thread_count():
    from minivgg.kernels import elementwise
    size = 3 * elementwise.CHUNK + 5
    x, g = _data(size), _data(2, size)[1]
    key = np.uint64(np.random.default_rng(RNG_SEED).bit_generator.random_raw())
    threshold, scale = np.uint32(0.3 * 2 ** 32), np.float32(1 / 0.7)
    _assert_all_equal(_runs(elementwise.relu, lambda: (x, np.empty_like(x)), outputs=[1]))
    _assert_all_equal(_runs(elementwise.relu_backward,
                            lambda: (g, x, np.empty_like(x)), outputs=[2]))
    _assert_all_equal(_runs(elementwise.dropout,
                            lambda: (x, key, threshold, scale, np.empty_like(x)), outputs=[4]))
    alpha = np.float32(0.7)
    for forward, backward, parameter in [(elementwise.elu, elementwise.elu_backward, alpha),
                                         (elementwise.leaky_relu, elementwise.leaky_relu_backward,
                                          alpha),
                                         (elementwise.gelu, elementwise.gelu_backward, False),
                                         (elementwise.gelu, elementwise.gelu_backward, True)]:
        _assert_all_equal(_runs(forward, lambda: (x, parameter, np.empty_like(x)), outputs=[2]))
        _assert_all_equal(_runs(backward, lambda: (g, x, parameter, np.empty_like(x)),
                                outputs=[3]))


def test_elu_float32_exponential_rounds_like_float64():
    """ELU's own float32 exponential (kernels/elementwise.py): outputs within a unit in the
    last place of float64's expm1 rounded to float32, gradients within two (exp rounded,
    then times alpha), over the whole range where they are not 0 or -1; NaN, infinities
    and -0.0 as the NumPy formula gives them."""
    from minivgg.kernels import elementwise
    x = np.concatenate([np.linspace(-110, 2, 400_001), -np.logspace(-45, 2, 20_001)]).astype(
        np.float32)
    special = np.float32([np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-45])
    x = np.concatenate([x, special])
    alpha = np.float32(1.3)
    out, dx, ones = np.empty_like(x), np.empty_like(x), np.ones_like(x)
    elementwise.elu(x, alpha, out)
    elementwise.elu_backward(ones, x, alpha, dx)
    x64 = np.minimum(x.astype(np.float64), 0)
    with np.errstate(invalid="ignore"):
        expected = np.where(x > 0, x, np.float32(alpha) * np.expm1(x64).astype(np.float32))
        expected_dx = np.where(x > 0, 1.0, np.float32(alpha) * np.exp(x64).astype(np.float32))
    finite = np.isfinite(expected)
    ulp = np.spacing(np.abs(expected[finite]).astype(np.float32)).astype(np.float64)
    assert (np.abs(out[finite] - expected[finite]) <= ulp).all()
    ulp_dx = np.spacing(np.abs(expected_dx[finite]).astype(np.float32)).astype(np.float64)
    assert (np.abs(dx[finite] - expected_dx[finite]) <= 2 * ulp_dx).all()
    np.testing.assert_array_equal(out[-6:], [np.nan, -alpha, np.inf, -0.0, 0.0, -1e-45 * alpha])
    assert np.signbit(out[-3]) and not np.signbit(out[-2])
    np.testing.assert_array_equal(dx[-6:], [np.nan, 0.0, 1.0, alpha, alpha, alpha])


def test_dropout_bits_are_splitmix64():
    # SplitMix64 seeded with 1234567 first outputs 6457827717110365317 (the published
    # reference sequence); random_bits(key, i) is the high half of its i-th output
    from minivgg.kernels.elementwise import random_bits
    assert random_bits(np.uint64(1234567), 1) == 6457827717110365317 >> 32
    key = np.uint64(0xDEADBEEFCAFEF00D)
    compiled = [int(random_bits(key, i)) for i in range(64)]
    with np.errstate(over="ignore"):  # the Python version wraps around as the compiled one does
        assert compiled == [int(random_bits.py_func(key, i)) for i in range(64)]
    assert len(set(compiled)) == 64


def test_batch_norm_affine_same_bits_for_any_thread_count_and_as_numpy():
    x, scale, shift = _data(6, 11, BATCH), _data(6), _data(1, 6)[0]
    for relu_before in (False, True):
        for relu_after in (False, True):
            results = _runs(norm.batch_norm_affine, lambda: (x, scale, shift, relu_before,
                                                             relu_after, np.empty_like(x)),
                            outputs=[5])
            _assert_all_equal(results)
            expected = (np.maximum(x, 0) if relu_before else x) * scale[:, None, None]
            expected += shift[:, None, None]
            if relu_after:
                expected = np.maximum(expected, 0)
            np.testing.assert_array_equal(results[0][0], expected)


def test_gemm_splits_stacked_products_with_the_same_bits():
    from minivgg.functional import gemm
    a, b = _data(64, 33, 2000), _data(64, 2000, 7)
    results = _runs(lambda a, b, out: gemm.gemm(a, b, out=out),
                    lambda: (a, b, np.empty((64, 33, 7), np.float32)), outputs=[2])
    _assert_all_equal(results)
    np.testing.assert_array_equal(results[0][0], np.matmul(a, b))

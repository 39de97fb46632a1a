"""conv2d: gradient checks over a grid, PyTorch parity in float32, and input validation."""
import itertools

import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from minivgg.functional import conv as conv_module
from conftest import gradcheck
from parity import assert_op_matches_torch


@pytest.fixture(params=["im2col", "rows", "direct"])
def path(request, monkeypatch):
    """Run a test through each conv2d algorithm: im2col + one GEMM, the row GEMMs (which
    production uses for stride 1 and KW * C >= ROW_GEMM_MIN_K), or the direct 3x3 kernels
    (every 3x3 stride-1 case with padding <= 2; the others then take the GEMM paths)."""
    direct = request.param == "direct"
    monkeypatch.setattr(conv_module, "DIRECT_MAX_CO", 10 ** 9 if direct else 0)
    monkeypatch.setattr(conv_module, "DIRECT_MIN_SPAN", 0)
    if not direct:
        threshold = 0 if request.param == "rows" else 10 ** 9
        monkeypatch.setattr(conv_module, "ROW_GEMM_MIN_K", threshold)
        monkeypatch.setattr(conv_module, "ROW_GEMM_MIN_OH", 0)
    return request.param


def _grid():
    for kernel, padding, stride, bias in itertools.product(
            (1, 2, 3, 5), (0, 1, 2, "same", "valid"), (1, 2), (True, False)):
        if padding == "same" and stride != 1:
            continue  # an error, tested below
        yield kernel, padding, stride, bias


@pytest.mark.parametrize("kernel, padding, stride, bias", list(_grid()))
def test_conv2d_gradcheck_grid(kernel, padding, stride, bias, path):
    rng = np.random.default_rng(kernel * 100 + stride)
    x = rng.standard_normal((2, 2, 5, 6))  # non-square
    w = rng.standard_normal((3, 2, kernel, kernel))
    if bias:
        b = rng.standard_normal(3)
        gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), x, w, b)
    else:
        gradcheck(lambda x, w: F.conv2d(x, w, stride=stride, padding=padding), x, w)


@pytest.mark.parametrize("kernel, stride, padding", [
    ((2, 3), (1, 2), (1, 0)),
    ((3, 1), (2, 1), (0, 2)),
    ((2, 4), 1, "same"),
])
def test_conv2d_gradcheck_non_square_kernel_and_stride(kernel, stride, padding, path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((2, 3) + kernel)
    b = rng.standard_normal(2)
    gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), x, w, b)


def _assert_conv_matches_torch(torch, x, w, b, grad, needs, **options):
    """Output and the needed gradients (dx, dweight, dbias) float32 and within 1e-5 of torch's,
    absolute tolerance relative to the largest value (at least 1)."""
    return assert_op_matches_torch(
        torch, lambda x, w, b: F.conv2d(x, w, b, **options),
        lambda x, w, b: torch.nn.functional.conv2d(x, w, b, **options), [x, w, b], grad,
        rtol=1e-5, atol=1e-5, scale_floor=1.0, requires_grad=needs,
        names=["dx", "dweight", "dbias"])


PARITY_CASES = [
    # x shape, weight shape, stride, padding
    ((4, 8, 12, 10), (6, 8, 3, 3), 1, 1),
    ((4, 8, 12, 10), (6, 8, 3, 3), 2, 1),
    ((3, 5, 11, 9), (7, 5, 5, 5), 1, "same"),
    ((3, 5, 11, 9), (7, 5, 2, 2), 1, "same"),  # even kernel: extra row/column at the end
    ((3, 5, 11, 9), (7, 5, 4, 3), 1, "same"),
    ((3, 5, 11, 9), (7, 5, 3, 2), (2, 3), (2, 0)),
    ((2, 1, 28, 28), (6, 1, 5, 5), 1, "valid"),
    ((2, 16, 4, 4), (32, 16, 3, 3), 1, 1),
    ((2, 3, 7, 7), (4, 3, 1, 1), 2, 0),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", PARITY_CASES)
def test_conv2d_matches_torch_float32(torch, x_shape, w_shape, stride, padding, path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    b = rng.standard_normal(w_shape[0], dtype=np.float32)
    options = {"stride": stride, "padding": padding}
    out_shape = F.conv2d(x, w, b, **options).shape
    grad = rng.standard_normal(out_shape, dtype=np.float32)
    (_, grads), _ = _assert_conv_matches_torch(torch, x, w, b, grad, (True, True, True),
                                               **options)
    assert all(g is not None for g in grads)


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (True, True, False)])
def test_conv2d_partial_gradients_match_torch(torch, needs, path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 9, 8), dtype=np.float32)
    w = rng.standard_normal((5, 4, 3, 3), dtype=np.float32)
    b = rng.standard_normal(5, dtype=np.float32)
    grad = rng.standard_normal((3, 5, 9, 8), dtype=np.float32)
    (_, grads), _ = _assert_conv_matches_torch(torch, x, w, b, grad, needs, padding=1)
    for name, need, ours in zip(("dx", "dweight", "dbias"), needs, grads):
        if not need:
            assert ours is None, f"{name} should not be computed"


@pytest.mark.parametrize("channels", [3, 16])
def test_conv2d_skips_input_gradient_when_not_needed(monkeypatch, channels):
    def fail(*args, **kwargs):
        raise AssertionError("_fold ran although the input needs no gradient")
    monkeypatch.setattr(conv_module, "_fold", fail)  # 3 channels: im2col; 16: row GEMMs
    monkeypatch.setattr(conv_module, "DIRECT_MAX_CO", 0)
    rng = np.random.default_rng(3)
    x = minivgg.Tensor(rng.standard_normal((2, channels, 6, 6), dtype=np.float32))
    w = minivgg.Tensor(rng.standard_normal((4, channels, 3, 3), dtype=np.float32),
                       requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    assert w.grad is not None and w.grad.shape == (4, channels, 3, 3)
    assert x.grad is None


@pytest.mark.parametrize("channels, kernel, stride, size, expected", [
    (8, (3, 3), 1, 6, True), (7, (3, 3), 1, 6, False), (16, (3, 3), 2, 6, False),
    (16, (3, 3), 1, 5, False),  # 3x3 output: below ROW_GEMM_MIN_OH
    (64, (1, 1), 1, 6, False), (64, (1, 3), 1, 6, False), (3, (3, 3), 1, 6, False)])
def test_conv2d_takes_row_gemms_for_wide_stride_one_layers(monkeypatch, channels, kernel,
                                                           stride, size, expected):
    calls = []
    forward_gemm = conv_module.Conv2dOp._forward_gemm
    monkeypatch.setattr(conv_module.Conv2dOp, "_forward_gemm",
                        lambda op, *a: calls.append(op.row_gemms) or forward_gemm(op, *a))
    monkeypatch.setattr(conv_module, "DIRECT_MAX_CO", 0)  # the direct kernels out of the way
    x = np.ones((2, channels, size, size), np.float32)
    F.conv2d(x, np.ones((64, channels) + kernel, np.float32), stride=stride)
    assert calls == [expected]


@pytest.mark.parametrize("channels, out_channels, kernel, stride, padding, batch, expected", [
    (1, 6, 3, 1, 0, 64, True), (1, 16, 3, 1, 1, 64, True), (2, 8, 3, 1, 2, 64, True),
    (6, 12, 3, 1, 0, 64, True), (16, 16, 3, 1, 0, 64, True), (32, 32, 3, 1, 1, 64, True),
    (64, 64, 3, 1, 1, 64, True), (64, 65, 3, 1, 1, 64, False), (64, 256, 3, 1, 1, 64, False),
    (1, 6, 3, 2, 0, 64, False), (1, 6, 3, 1, 3, 64, False),
    (1, 6, 5, 1, 2, 64, True), (6, 16, 5, 1, 0, 128, True), (1, 32, 5, 1, 0, 128, True),
    (1, 6, 5, 1, 5, 64, False), (1, 6, 5, 2, 0, 64, False), (2, 6, 4, 1, 0, 64, False),
    (1, 6, 7, 1, 0, 64, False),
    (1, 6, 3, 1, 0, 2, False)])  # an output row of 6 * 2 values: below DIRECT_MIN_SPAN
def test_conv2d_takes_direct_kernels_for_thin_3x3_and_5x5_layers(
        monkeypatch, channels, out_channels, kernel, stride, padding, batch, expected):
    monkeypatch.setattr(conv_module, "WINOGRAD_MIN_C", 10 ** 9)  # (no gradient is needed)
    calls = []
    for size, (convolve, weight_grad) in list(conv_module.DIRECT_KERNELS.items()):
        monkeypatch.setitem(conv_module.DIRECT_KERNELS, size, (
            lambda *a, convolve=convolve: calls.append(1) or convolve(*a), weight_grad))
    x = np.ones((batch, channels, 8, 8), np.float32)
    F.conv2d(x, np.ones((out_channels, channels, kernel, kernel), np.float32), stride=stride,
             padding=padding)
    assert bool(calls) == expected


# ---- Winograd F(2x2, 3x3): the forward pass when no gradient is needed ------------------

WINOGRAD_CASES = [
    # x shape, weight shape, padding: C >= WINOGRAD_MIN_C, even output sizes
    ((4, 16, 12, 10), (6, 16, 3, 3), 1),  # O = 6: a group of four and one of two
    ((3, 19, 8, 8), (4, 19, 3, 3), "same"),  # C = 19: two passes of eight, three single
    ((2, 32, 10, 6), (32, 32, 3, 3), 0),  # 'valid': 8x4 output
    ((5, 16, 6, 6), (8, 16, 3, 3), 2),  # 8x8 output from a wider border
    ((1, 24, 14, 14), (5, 24, 3, 3), 1),  # a single sample
    ((37, 16, 4, 4), (16, 16, 3, 3), 1),  # a batch that is no multiple of a SIMD width
]


def _winograd_calls(monkeypatch):
    calls = []
    kernel = conv_module.winograd3x3
    monkeypatch.setattr(conv_module, "winograd3x3", lambda *a: calls.append(1) or kernel(*a))
    return calls


@pytest.mark.parametrize("x_shape, w_shape, padding", WINOGRAD_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_winograd_matches_torch_float32(torch, monkeypatch, x_shape, w_shape, padding,
                                               bias):
    calls = _winograd_calls(monkeypatch)
    rng = np.random.default_rng(8)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    b = rng.standard_normal(w_shape[0], dtype=np.float32) if bias else None
    with minivgg.no_grad():
        ours = F.conv2d(minivgg.Tensor(x), minivgg.Tensor(w, requires_grad=True),
                        None if b is None else minivgg.Tensor(b), padding=padding)
    theirs = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w),
                                        None if b is None else torch.tensor(b), padding=padding)
    assert calls, "the Winograd kernel did not run"
    assert ours.dtype == np.float32
    # today's conv2d tolerance: 1e-5, absolute relative to the largest value (at least 1)
    atol = 1e-5 * max(float(theirs.abs().max()), 1.0)
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-5, atol=atol)


def test_conv2d_winograd_float64_matches_the_direct_sum(monkeypatch):
    calls = _winograd_calls(monkeypatch)
    rng = np.random.default_rng(9)
    x, w, b = (rng.standard_normal((3, 17, 8, 6)), rng.standard_normal((5, 17, 3, 3)),
               rng.standard_normal(5))
    out = F.conv2d(x, w, b, padding=1)
    assert calls and out.dtype == np.float64
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = b[None, :, None, None] + sum(
        np.einsum("nchw,oc->nohw", xp[:, :, i:i + 8, j:j + 6], w[:, :, i, j])
        for i in range(3) for j in range(3))
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels, size, padding, grad, expected", [
    (16, 8, 1, False, True), (64, 4, 1, False, True), (32, 7, 0, False, False),  # 5x5 output
    (32, 7, 1, False, False),  # odd output: no 2x2 tiling
    (15, 8, 1, False, False),  # below WINOGRAD_MIN_C
    (32, 8, 1, True, False)])  # training: the direct kernels, which keep what backward needs
def test_conv2d_takes_winograd_for_inference_of_wide_3x3_layers(monkeypatch, channels, size,
                                                                padding, grad, expected):
    calls = _winograd_calls(monkeypatch)
    x = minivgg.Tensor(np.ones((4, channels, size, size), np.float32), requires_grad=grad)
    F.conv2d(x, np.ones((8, channels, 3, 3), np.float32), padding=padding)
    assert bool(calls) == expected


def test_conv2d_max_pool_2x2_is_max_pool2d_of_its_output_on_every_path(monkeypatch):
    """max_pool_2x2=True gives max_pool2d(conv2d(...), 2) to the bit: inside the Winograd
    kernel (each output tile a window, NaN winning as in max_pool2d), after the others."""
    calls = _winograd_calls(monkeypatch)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 80, 7, 7), dtype=np.float32)
    x[1, :, 2, 3] = np.nan  # reaches some windows of every output channel
    w = rng.standard_normal((60, 80, 3, 3), dtype=np.float32)
    b = rng.standard_normal(60, dtype=np.float32)
    scale, shift = rng.standard_normal(60, dtype=np.float32), rng.standard_normal(60, dtype=np.float32)
    paths = [  # (channels in, channels out, input size, options, Winograd)
        (16, 6, 6, {"padding": 1}, True), (19, 4, 6, {"padding": 0}, True),
        (16, 5, 7, {"padding": 0}, False),  # 5x5 output: odd, pooled to 2x2
        (3, 6, 7, {"padding": 1}, False),  # the direct kernel
        (16, 6, 7, {"stride": 2, "padding": 1}, False),  # im2col
        (80, 60, 5, {"padding": 1}, False)]  # row GEMMs
    for channels, out_channels, size, options, winograd in paths:
        xs, ws = x[:, :channels, :size, :size], w[:out_channels, :channels]
        fusions = [{}, {"relu": True}, {"relu": True, "affine": (scale[:out_channels],
                                                               shift[:out_channels])}]
        for fused in fusions:
            calls.clear()
            with minivgg.no_grad():
                pooled = F.conv2d(xs, ws, b[:out_channels], max_pool_2x2=True, **options,
                                  **fused).data
                apart = F.max_pool2d(F.conv2d(xs, ws, b[:out_channels], **options, **fused),
                                     2).data
            assert bool(calls) == winograd
            assert np.isnan(pooled).any() and not np.isnan(pooled).all()
            np.testing.assert_array_equal(pooled, apart)


def test_conv2d_max_pool_2x2_with_a_graph_is_the_two_ops():
    rng = np.random.default_rng(13)
    x = minivgg.Tensor(rng.standard_normal((2, 16, 6, 6)), requires_grad=True)
    w = minivgg.Tensor(rng.standard_normal((4, 16, 3, 3)), requires_grad=True)
    fused = F.conv2d(x, w, padding=1, relu=True, max_pool_2x2=True)
    fused.sum().backward()
    dx, dw = x.grad.copy(), w.grad.copy()
    x.grad = w.grad = None
    apart = F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
    apart.sum().backward()
    np.testing.assert_array_equal(fused.data, apart.data)
    np.testing.assert_array_equal(dx, x.grad)
    np.testing.assert_array_equal(dw, w.grad)
    with pytest.raises(ValueError, match="max_pool_2x2 needs an output of at least 2x2"):
        F.conv2d(np.ones((1, 16, 3, 3)), np.ones((2, 16, 3, 3)), max_pool_2x2=True)


def test_conv2d_float64_stays_float64_and_no_grad_records_nothing():
    rng = np.random.default_rng(4)
    x = minivgg.Tensor(rng.standard_normal((1, 2, 5, 5)), requires_grad=True)
    w = minivgg.Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    out = F.conv2d(x, w)
    assert out.dtype == np.float64 and out.shape == (1, 3, 3, 3)
    out.sum().backward()
    assert x.grad.dtype == np.float64 and w.grad.dtype == np.float64
    # outputs are NCHW in shape and indexing; for batch > 1 their memory may be (C, H, W, N)
    # (see tests/test_layout.py). Weight gradients are plain C-ordered (O, C, KH, KW) arrays.
    assert w.grad.flags.c_contiguous and x.grad.shape == x.shape
    with minivgg.no_grad():
        out = F.conv2d(x, w)
    assert not out.requires_grad and out.is_leaf


def test_conv2d_accepts_plain_arrays_and_pairs():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 7, 6), dtype=np.float32)
    w = rng.standard_normal((3, 2, 3, 2), dtype=np.float32)
    out = F.conv2d(x, w, stride=(2, 1), padding=[1, 0])
    assert out.shape == (1, 3, 4, 5)
    assert isinstance(out, minivgg.Tensor) and not out.requires_grad


# ---- errors ---------------------------------------------------------------------------

def _x(*shape):
    return np.zeros(shape, np.float32)


def test_conv2d_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"conv2d expects a 4-D input.*\(3, 8, 8\)"):
        F.conv2d(_x(3, 8, 8), _x(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d expects a 4-D weight.*\(4, 3, 3\)"):
        F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3))


def test_conv2d_channel_mismatch_names_both_shapes():
    with pytest.raises(ValueError) as info:
        F.conv2d(_x(2, 3, 8, 8), _x(4, 5, 3, 3))
    message = str(info.value)
    assert "conv2d" in message and "(2, 3, 8, 8)" in message and "(4, 5, 3, 3)" in message


def test_conv2d_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"kernel \(5, 5\) is larger than the padded input \(6, 4\)"):
        F.conv2d(_x(1, 1, 4, 2), _x(1, 1, 5, 5), padding=1)
    assert F.conv2d(_x(1, 1, 3, 3), _x(1, 1, 5, 5), padding=1).shape == (1, 1, 1, 1)


def test_conv2d_same_padding_with_stride_two():
    with pytest.raises(ValueError, match="padding='same'.*stride 1"):
        F.conv2d(_x(1, 1, 8, 8), _x(1, 1, 3, 3), stride=2, padding="same")


@pytest.mark.parametrize("padding", [-1, (1, -1), "full", (1, 2, 3), 1.5, None, True])
def test_conv2d_bad_padding(padding):
    with pytest.raises(ValueError, match="conv2d: padding"):
        F.conv2d(_x(1, 1, 8, 8), _x(1, 1, 3, 3), padding=padding)


@pytest.mark.parametrize("stride", [0, -2, (1, 0), "2", 2.0])
def test_conv2d_bad_stride(stride):
    with pytest.raises(ValueError, match="conv2d: stride"):
        F.conv2d(_x(1, 1, 8, 8), _x(1, 1, 3, 3), stride=stride)


def test_conv2d_bad_bias_and_dtypes():
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\).*got \(3,\)"):
        F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), _x(3))
    with pytest.raises(ValueError, match="dtype"):
        F.conv2d(_x(1, 3, 8, 8), np.zeros((4, 3, 3, 3)))
    with pytest.raises(ValueError, match="floating-point"):
        F.conv2d(np.zeros((1, 3, 8, 8), np.uint8), _x(4, 3, 3, 3))

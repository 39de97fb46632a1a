"""2-D convolution, three paths: direct 3x3 and 5x5 kernels (kernels/conv.py) for the
thin layers (see DIRECT_MAX_CO); GEMMs on the unfolded input (kernels/unfold.py) for the
rest, im2col and one GEMM (first layers, strided convs, small maps) or row GEMMs for the
wide stride-1 layers (see ROW_GEMM_MIN_K); Winograd F(2x2, 3x3) for inference.

Inside, conv2d works in a (C, H, W, N) layout, the batch innermost: every copy of the
unfolding moves a run of N contiguous values, every kernel's innermost loop runs along the
batch whatever the channel count, and the output is returned as the (N, C, H, W) transpose
of the (C, H, W, N) array computed, over the same memory (see layout.py). It was measured
against cols built from a (C, N, H, W) copy and against NHWC cols (N*OH*OW, KH*KW*C) @ W.T
and was the fastest of the three on the VGG-width layers (the figures are in the commit
that chose it).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor, as_tensor, is_grad_enabled
from ..kernels import elementwise as elementwise_kernels
from ..kernels import start_threads
from ..kernels.norm import batch_norm_affine
from ..kernels.unfold import fold, unfold
from ..kernels.conv import conv3x3, conv3x3_weight_grad, conv5x5, conv5x5_weight_grad
from ..kernels.winograd import pad_parity, winograd3x3, winograd_weights
from . import activation
from .gemm import gemm, split
from .layout import as_chwn, from_chwn, padded_chwn
from .malloc import empty, keep_freed_memory
from .pool import max_pool2d, max_pool_2x2_values
from .windows import check_input, out_length, pair

__all__ = ["conv2d"]


def conv_padding(padding, kernel: tuple, stride: tuple, op: str = "conv2d") -> tuple:
    """padding (int, pair, 'same' or 'valid') -> (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"{op}: padding='same' is only supported with stride 1 (got stride "
                    f"{stride}): as in PyTorch, strided convolutions need the padding given "
                    f"as numbers")
            # PyTorch puts the odd extra row/column of an even kernel at the bottom/right.
            top, left = (kernel[0] - 1) // 2, (kernel[1] - 1) // 2
            return top, kernel[0] - 1 - top, left, kernel[1] - 1 - left
        raise ValueError(f"{op}: padding must be an int, a pair of ints, 'same' or 'valid', "
                         f"got {padding!r}")
    ph, pw = pair(padding, "padding", op, minimum=0)
    return ph, ph, pw, pw


# ---- conv2d -----------------------------------------------------------------------------

class Conv2dOp(Function):
    """out[n, o] = sum over c, i, j of weight[o, c, i, j] * x_padded[n, c, s*oh + i, s*ow + j].

    Three ways: the direct kernels (`_forward_direct`), Winograd's for inference, and GEMMs
    on the unfolded input (`_forward_gemm`: im2col, or row GEMMs for the wide layers). The
    output is returned over the (O, OH, OW, N) memory it was computed in, as (N, O, OH, OW).
    """

    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), relu=False,
                affine=None, max_pool_2x2=False):
        """relu: rectify the output; affine: (scale, shift) per output channel, applied after
        that; max_pool_2x2: then a 2x2 stride-2 max pool (all three only where nothing needs
        a gradient: see conv2d). The compiled kernels do relu and affine in their last pass
        over each block, the GEMM paths in `_output`; Winograd's also pools its 2x2 tiles."""
        batch, channels, height, width = x.shape
        out_channels, _, kh, kw = weight.shape
        top, bottom, left, right = padding
        oh = out_length(height, kh, stride[0], top, bottom)
        ow = out_length(width, kw, stride[1], left, right)

        self.shapes = (x.shape, weight.shape, (oh, ow))
        self.stride, self.padding = stride, padding
        if not self.requires_grad and use_winograd(channels, (kh, kw), stride, (oh, ow)):
            return self._forward_winograd(x, weight, bias, relu, affine, max_pool_2x2)
        self.direct = use_direct(channels, out_channels, (kh, kw), stride, padding, ow * batch)
        self.row_gemms = not self.direct and use_row_gemms(channels, (kh, kw), stride, oh)
        convolve = self._forward_direct if self.direct else self._forward_gemm
        out = convolve(x, weight, bias, relu, affine)
        return max_pool_2x2_values(out) if max_pool_2x2 else out

    def _output(self, out, bias, unfolded, w_mat, relu=False, affine=None):
        """Adds the bias to out (O, OH*OW*N) and applies the epilogue (relu, affine: see
        forward), keeps what backward needs (the unfolded input for dW, the weight matrix
        for dX) and returns out as (N, O, OH, OW)."""
        (batch, *_), (out_channels, *_), (oh, ow) = self.shapes
        if bias is not None:
            out += bias[:, None]
        if affine is not None:
            rows = out.reshape(out_channels, 1, -1)
            batch_norm_affine(rows, affine[0], affine[1], relu, False, rows)
        elif relu:
            elementwise_kernels.relu(out.reshape(-1), out.reshape(-1))
        need_x, need_w = self.needs_input_grad[0], self.needs_input_grad[1]
        self.unfolded = unfolded if need_w else None
        self.w_mat = w_mat if need_x else None
        return from_chwn(out.reshape(out_channels, oh, ow, batch))

    def backward(self, grad):
        g = as_chwn(grad).reshape(grad.shape[1], -1)  # (O, OH*OW*N)
        gx, gw = self._backward_direct(g) if self.direct else self._backward_gemm(g)
        return gx, gw, g.sum(axis=1) if self.needs_input_grad[2] else None

    # ---- the direct path: 3x3 and 5x5 stride-1 kernels for the thin layers -------------

    def _forward_direct(self, x, weight, bias, relu, affine):
        (batch, channels, height, width), (out_channels, _, k, _), (oh, ow) = self.shapes
        xp = as_chwn(x) if self.padding == (0, 0, 0, 0) else padded_chwn(x, self.padding)
        out = empty((out_channels, oh * ow * batch), x.dtype)
        DIRECT_KERNELS[k][0](xp.reshape(channels, oh + k - 1, -1), np.ascontiguousarray(weight),
                             _bias_or_zeros(bias, out_channels, x.dtype), relu,
                             *_scale_shift(affine, x.dtype), batch,
                             out.reshape(out_channels, oh, -1))
        return self._output(out, None, xp, weight)  # the kernel added the bias

    def _backward_direct(self, g):
        (batch, channels, height, width), (out_channels, _, k, _), (oh, ow) = self.shapes
        need_x, need_w, _ = self.needs_input_grad
        convolve, weight_grad = DIRECT_KERNELS[k]
        gw = gx = None
        if need_w:
            xp, self.unfolded = self.unfolded, None  # (C, OH + k - 1, OW + k - 1, N)
            gw = np.empty((out_channels, channels, k, k), g.dtype)
            weight_grad(xp.reshape(channels, oh + k - 1, -1), g.reshape(out_channels, oh, -1),
                        batch, gw)
        if need_x:
            # dx is the k x k convolution of g, padded by k - 1 - padding, with the kernel
            # flipped and its channel axes swapped.
            weight, self.w_mat = self.w_mat, None
            flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            pad = tuple(k - 1 - p for p in self.padding)  # (top, bottom, left, right)
            gp = padded_chwn(from_chwn(g.reshape(out_channels, oh, ow, batch)), pad)
            dx = empty((channels, height, width, batch), g.dtype)
            convolve(gp.reshape(out_channels, height + k - 1, -1), flipped,
                     np.zeros(channels, g.dtype), False, *_scale_shift(None, g.dtype), batch,
                     dx.reshape(channels, height, -1))
            gx = from_chwn(dx)
        return gx, gw

    # ---- Winograd F(2x2, 3x3), forward only: inference --------------------------------

    def _forward_winograd(self, x, weight, bias, relu, affine, pool):
        (batch, channels, _, _), (out_channels, *_), (oh, ow) = self.shapes
        top, _, left, _ = self.padding
        xq = empty((channels, oh + 2, 2, ow // 2 + 1, batch), x.dtype)
        pad_parity(as_chwn(x), top, left, xq)
        tile_rows, tile_cols = oh // 2, ow // 2
        if pool:  # each 2x2 tile is a pooling window: only the pooled map is written
            oh, ow = tile_rows, tile_cols
        out = empty((out_channels, oh, ow * batch), x.dtype)
        winograd3x3(xq, winograd_weights(np.ascontiguousarray(weight)),
                    _bias_or_zeros(bias, out_channels, x.dtype), relu,
                    *_scale_shift(affine, x.dtype), batch,
                    winograd_block(channels, batch, tile_rows, tile_cols), pool, out)
        return from_chwn(out.reshape(out_channels, oh, ow, batch))

    # ---- the GEMM paths: im2col, or row GEMMs on bands of the rows unfolded along W ----

    def _gemm_geometry(self) -> tuple:
        """(bands, kernel rows per band, unfolding stride, unfolded rows). im2col unfolds all
        KH x KW taps: one band, out = W @ cols one GEMM. Row GEMMs unfold the KW taps of
        every padded row, and kernel row b reads the band of rows b..b+OH-1: KH GEMMs."""
        (_, _, height, _), (_, _, kh, _), (oh, _) = self.shapes
        if self.row_gemms:
            return kh, 1, (1, 1), height + self.padding[0] + self.padding[1]
        return 1, kh, self.stride, oh

    def _forward_gemm(self, x, weight, bias, relu, affine):
        (batch, channels, _, _), (out_channels, _, kh, kw), (oh, ow) = self.shapes
        bands, taps, stride, rows = self._gemm_geometry()
        cols = _unfold(x, (taps, kw), stride, self.padding, rows)  # (taps*KW*C, rows*OW*N)
        # w_bands[b][o, (i*KW + j)*C + c] = weight[o, c, b*taps + i, j]
        w_bands = weight.reshape(out_channels, channels, bands, taps, kw).transpose(
            2, 0, 3, 4, 1).reshape(bands, out_channels, taps * kw * channels)
        span = ow * batch  # one output row of every sample
        out = gemm(w_bands[0], cols[:, :oh * span])
        for b in range(1, bands):
            add_product(out, w_bands[b], cols[:, b * span:(b + oh) * span])
        return self._output(out, bias, cols, w_bands, relu, affine)

    def _backward_gemm(self, g):
        (batch, channels, _, _), (out_channels, _, kh, kw), (oh, ow) = self.shapes
        need_x, need_w, _ = self.needs_input_grad
        bands, taps, stride, rows = self._gemm_geometry()
        span = ow * batch
        gw = gx = None
        cols, self.unfolded = self.unfolded, None
        if need_w:
            gw = np.empty((bands, out_channels, taps * kw * channels), g.dtype)
            for b in range(bands):
                gw[b] = _weight_grad(cols[:, b * span:(b + oh) * span], g)
            gw = gw.reshape(bands, out_channels, taps, kw, channels).transpose(1, 4, 0, 2, 3)
            gw = np.ascontiguousarray(gw).reshape(out_channels, channels, kh, kw)
        if need_x:
            # cols is dead once dW is done: its memory takes d(cols).
            d_cols = cols if cols is not None else empty((taps * kw * channels, rows * span),
                                                         g.dtype)
            w_bands, self.w_mat = self.w_mat, None
            gemm(w_bands[0].T, g, out=d_cols[:, :oh * span])
            d_cols[:, oh * span:] = 0
            for b in range(1, bands):
                add_product(d_cols[:, b * span:(b + oh) * span], w_bands[b].T, g)
            gx = _fold(d_cols, (taps, kw), stride, self.padding, self.shapes)
        return gx, gw


# ---- which path a layer takes ----------------------------------------------------------

# Direct convolution (kernels/conv.py) for 3x3 and 5x5 stride-1 layers with C*O <=
# DIRECT_MAX_CO: every such layer of the MNIST, LeNet and VGG nets (1 to 64 channels) and
# airbench94's first two.
# Its 256-channel layers stay on the GEMM paths, where OpenBLAS's packed products win
# (BENCHMARKS.md, "Convolution paths", one thread). vgg_v1's 32 -> 64 layer on a 6x6 output
# is about even there, but its training step is faster on two threads with the direct
# kernels, which split into many parallel tasks where a GEMM splits into two bands. The
# kernels' inner loops run along an output row of the whole batch, OW*N values: below
# DIRECT_MIN_SPAN (small maps at small batches) their start-up costs more than the GEMMs do.
DIRECT_MAX_CO = 4096
DIRECT_MIN_SPAN = 320


DIRECT_KERNELS = {3: (conv3x3, conv3x3_weight_grad), 5: (conv5x5, conv5x5_weight_grad)}


def use_direct(channels: int, out_channels: int, kernel: tuple, stride: tuple,
               padding: tuple, span: int) -> bool:
    size = kernel[0]
    return (size in DIRECT_KERNELS and tuple(kernel) == (size, size) and tuple(stride) == (1, 1)
            and max(padding) <= size - 1  # the input gradient's padding, size - 1 - p, >= 0
            and channels * out_channels <= DIRECT_MAX_CO and span >= DIRECT_MIN_SPAN)


# Row GEMMs: for stride 1 and enough input channels, conv2d unfolds the input along W only:
# rows[j, c, h, ow, n] = x_padded[c, h, j + ow, n], KW copies instead of im2col's KH*KW.
# In (KW*C, Hp*OW*N) form, kernel row i needs the columns of output rows h = i..i+OH-1, a
# contiguous band of columns, so out = sum over i of W_i @ rows[:, band i] is KH GEMMs on
# strided views, with no copy. The buffer kept for backward is about a third of im2col's
# for 3x3 kernels. Measured per layer, forward + backward, row GEMMs are as fast as im2col
# or faster once K = KW*C >= 24 and OH >= 4; first layers (K of 3-9) make products too thin,
# and 1x1 or 2x2 outputs too short. Hence the two thresholds.
ROW_GEMM_MIN_K = 24
ROW_GEMM_MIN_OH = 4


def use_row_gemms(channels: int, kernel: tuple, stride: tuple, out_h: int) -> bool:
    return (tuple(stride) == (1, 1) and kernel[0] > 1 and kernel[1] * channels >= ROW_GEMM_MIN_K
            and out_h >= ROW_GEMM_MIN_OH)


# Winograd F(2x2, 3x3) (kernels/winograd.py) for 3x3 stride-1 layers when no gradient is
# needed, from WINOGRAD_MIN_C input channels: below that the products are too short to
# pay for the transforms (the per-layer figures are in the commit that added it). The
# output must split into 2x2 tiles (even OH and OW); other layers keep their
# training-time path (airbench94's, on 31x31 to 3x3 maps, all do).
WINOGRAD_MIN_C = 16
# Positions (tiles x samples) per parallel task: the products' loops run along them, and
# longer loops won over keeping the block's transformed inputs (64 bytes per position and
# input channel) inside L2, up to about a thousand positions on the 32- and 64-channel
# layers (the commit that set these has the figures); the transformed inputs are kept
# under WINOGRAD_BLOCK_BYTES for wider layers.
WINOGRAD_BLOCK_POSITIONS = 1024
WINOGRAD_BLOCK_BYTES = 4 << 20


def use_winograd(channels: int, kernel: tuple, stride: tuple, out_size: tuple) -> bool:
    return (tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and channels >= WINOGRAD_MIN_C
            and out_size[0] % 2 == 0 and out_size[1] % 2 == 0)


def winograd_block(channels: int, batch: int, tile_rows: int, tile_cols: int) -> int:
    """Tiles per parallel task of winograd3x3: WINOGRAD_BLOCK_POSITIONS positions, within
    WINOGRAD_BLOCK_BYTES of transformed inputs, but never fewer tasks than two per thread
    when the layer has that many tile columns."""
    tiles = max(1, min(tile_cols, WINOGRAD_BLOCK_POSITIONS // batch,
                       WINOGRAD_BLOCK_BYTES // (64 * channels * batch)))
    wanted = 2 * start_threads()
    while tiles > 1 and tile_rows * -(-tile_cols // tiles) < wanted:
        tiles -= 1
    return tiles


# ---- helpers of the paths ---------------------------------------------------------------

def _unfold(x: np.ndarray, taps: tuple, stride: tuple, padding: tuple, out_h: int) -> np.ndarray:
    """The (N, C, H, W) x unfolded (kernels/unfold.py) for taps (KH, KW) and out_h rows, as
    the (KH*KW*C, OH*OW*N) matrix of the GEMMs; padding (top, bottom, left, right)."""
    channels, width, batch = x.shape[1], x.shape[3], x.shape[0]
    out_w = out_length(width, taps[1], stride[1], padding[2], padding[3])
    cols = empty((*taps, channels, out_h, out_w, batch), x.dtype)
    unfold(as_chwn(x), *stride, padding[0], padding[2], cols)
    return cols.reshape(taps[0] * taps[1] * channels, -1)


def _fold(d_cols: np.ndarray, taps: tuple, stride: tuple, padding: tuple, shapes: tuple):
    """The adjoint of _unfold: the (N, C, H, W) input gradient from d_cols."""
    (batch, channels, height, width), _, (_, out_w) = shapes
    dx = empty((channels, height, width, batch), d_cols.dtype)
    fold(d_cols.reshape(*taps, channels, -1, out_w, batch), *stride, padding[0], padding[2], dx)
    return from_chwn(dx)


SLAB_BYTES = 1 << 20  # add_product's scratch product: well inside L2


def add_product(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """out += a @ b, a slab of columns at a time: the product of each slab lands in a small
    scratch buffer that is added while still in cache, never in an out-sized temporary.
    Each thread takes its own range of slabs (gemm.split)."""
    step = max(4096, SLAB_BYTES // (out.shape[0] * out.itemsize))

    def slabs(lo, hi):
        scratch = np.empty((out.shape[0], min(step, hi - lo)), out.dtype)
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            part = scratch[:, :stop - start]
            np.matmul(a, b[:, start:stop], out=part)
            out[:, start:stop] += part

    split(slabs, out.shape[1], out.size * a.shape[1])


def _weight_grad(cols: np.ndarray, g: np.ndarray) -> np.ndarray:
    """dW = g @ cols.T for cols (K, P) and g (O, P): (O, K), as a transposed view (cols @ g.T
    is the faster operand order on every shape measured)."""
    return gemm(cols, g.T).T


def _bias_or_zeros(bias, out_channels: int, dtype) -> np.ndarray:
    """The bias the compiled kernels add (they always add one)."""
    return np.zeros(out_channels, dtype) if bias is None else bias


def _scale_shift(affine, dtype) -> tuple:
    """(scale, shift) for the kernels' epilogue: empty arrays when there is none."""
    return affine if affine is not None else (np.empty(0, dtype), np.empty(0, dtype))


def conv2d(x, weight, bias=None, stride=1, padding=0, relu: bool = False,
           affine=None, max_pool_2x2: bool = False) -> Tensor:
    """2-D convolution (cross-correlation), as torch.nn.functional.conv2d without groups.

    x: (N, C, H, W); weight: (O, C, KH, KW); bias: (O,) or None; stride: int or pair;
    padding: int, pair, 'valid' (none) or 'same' (stride 1 only; output size = input size);
    relu: relu(conv2d(...)), in the same pass where nothing needs a gradient; affine:
    (scale, shift), arrays of O values, for relu?(conv2d(...)) * scale + shift per output
    channel in that pass (an eval-mode batch norm after the ReLU), only without a graph;
    max_pool_2x2: max_pool2d(..., 2) of all that (where the kernel's output tiles are the
    pooling windows, the full-size map is never written).
    Returns (N, O, OH, OW), laid out as (O, OH, OW, N) in memory (see the module docstring;
    np.ascontiguousarray gives C order).
    """
    x, weight = as_tensor(x), as_tensor(weight)
    check_input(x, "conv2d")
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects a 4-D weight (out_channels, in_channels, KH, KW), "
                         f"got shape {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"conv2d: input has {x.shape[1]} channels but the weight expects "
            f"{weight.shape[1]} (input shape {tuple(x.shape)}, weight shape "
            f"{tuple(weight.shape)}); the weight's dim 1 must equal the input's channels")
    if weight.dtype != x.dtype:
        raise ValueError(f"conv2d: input dtype {x.dtype} and weight dtype {weight.dtype} "
                         f"differ; convert both to the same float dtype")
    if bias is not None:
        bias = as_tensor(bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"conv2d: bias must have shape ({weight.shape[0]},) to match "
                             f"weight shape {tuple(weight.shape)}, got {tuple(bias.shape)}")
        if bias.dtype != x.dtype:
            raise ValueError(f"conv2d: bias dtype {bias.dtype} differs from input dtype "
                             f"{x.dtype}; convert it")
    if 0 in x.shape or 0 in weight.shape:
        raise ValueError(f"conv2d: empty input {tuple(x.shape)} or weight "
                         f"{tuple(weight.shape)}")
    kernel = tuple(weight.shape[2:])
    stride = pair(stride, "stride", "conv2d", minimum=1)
    pads = conv_padding(padding, kernel, stride)
    padded = (x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3])
    if padded[0] < kernel[0] or padded[1] < kernel[1]:
        raise ValueError(
            f"conv2d: kernel {kernel} is larger than the padded input {padded} (input shape "
            f"{tuple(x.shape)}, padding {padding!r}); use a smaller kernel, more padding or "
            f"a larger input")
    if max_pool_2x2 and min(out_length(padded[0], kernel[0], stride[0], 0, 0),
                            out_length(padded[1], kernel[1], stride[1], 0, 0)) < 2:
        raise ValueError(f"conv2d: max_pool_2x2 needs an output of at least 2x2; input shape "
                         f"{tuple(x.shape)}, kernel {kernel}, padding {padding!r} give less")
    # im2col buffers and activations are megabytes, allocated and freed every step: from
    # the first convolution on, keep freed memory for the next step (see malloc.py).
    keep_freed_memory()
    recording = is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in (x, weight, bias))
    if affine is not None:
        if recording:
            raise ValueError("conv2d: affine= is for inference (no gradient flows through it); "
                             "call it under minivgg.no_grad(), or apply the scale and shift "
                             "as separate ops")
        affine = tuple(np.ascontiguousarray(a, dtype=x.dtype) for a in affine)
        if len(affine) != 2 or any(a.shape != (weight.shape[0],) for a in affine):
            raise ValueError(f"conv2d: affine must be (scale, shift), each of shape "
                             f"({weight.shape[0]},) (one value per output channel)")
    if recording and (relu or max_pool_2x2):  # the same maths as separate ops, for backward
        out = Conv2dOp.apply(x, weight, bias, stride=stride, padding=pads)
        out = activation.relu(out) if relu else out
        return max_pool2d(out, 2) if max_pool_2x2 else out
    return Conv2dOp.apply(x, weight, bias, stride=stride, padding=pads, relu=bool(relu),
                          affine=affine, max_pool_2x2=bool(max_pool_2x2))

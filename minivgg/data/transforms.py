"""Batch transforms: `t(x, rng) -> x` on float (N, C, H, W) batches.

Every transform works on the whole batch at once and draws each sample's own random
parameters from the explicit `numpy.random.Generator` it is given, so the same seed
gives the same batch. Parameters follow torchvision's conventions (RandomCrop,
RandomHorizontalFlip, RandomRotation, RandomAffine, RandomErasing). Inputs are never
modified; the dtype (float32 or float64) is kept.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .warp import affine


def check_batch(x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype.kind != "f":
        shown = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{name}: expects a float batch (N, C, H, W); got {shown}. "
                         f"Convert uint8 images with x.astype(np.float32) / 255 first")
    return x


def check_rng(rng, name: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: rng must be a numpy.random.Generator "
                        f"(np.random.default_rng(seed)); got {type(rng).__name__}")
    return rng


def _range(value, name: str, owner: str, center: float = 0.0) -> tuple[float, float]:
    """torchvision's ranges: a number v means (center - v, center + v), else (lo, hi)."""
    if isinstance(value, numbers.Number):
        if value < 0:
            raise ValueError(f"{owner}: {name} as a single number must be >= 0; got {value}")
        return (center - float(value), center + float(value))
    value = tuple(float(v) for v in value)
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{owner}: {name} must be a number or a (min, max) pair with "
                         f"min <= max; got {value}")
    return value


def _pair(value, name: str, owner: str) -> tuple[int, int]:
    if isinstance(value, numbers.Integral):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{owner}: {name} must be an int or an (h, w) pair; got {value}")
    return value


class Transform:
    """Base class: subclasses implement __call__(x, rng) and keep their options as attributes.

    A transform that depends on which images it is given and when (`uses_positions = True`) is
    called as t(x, rng, indices=..., epoch=..., seed=...): each image's index in the dataset,
    the epoch, and the loader's seed; DataLoader and Compose pass them.
    """

    uses_positions = False

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"


class Compose(Transform):
    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable as t(x, rng)")
        self.uses_positions = any(getattr(t, "uses_positions", False) for t in self.transforms)

    def __call__(self, x, rng, **positions):
        for t in self.transforms:
            x = t(x, rng, **positions) if getattr(t, "uses_positions", False) else t(x, rng)
        return x


class Normalize(Transform):
    """(x - mean) / std per channel."""

    def __init__(self, mean, std):
        self.mean = tuple(float(m) for m in np.atleast_1d(mean))
        self.std = tuple(float(s) for s in np.atleast_1d(std))
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: mean has {len(self.mean)} values, std {len(self.std)}")
        if min(self.std) <= 0:
            raise ValueError(f"Normalize: std must be positive; got {self.std}")

    def __call__(self, x, rng=None):
        check_batch(x, "Normalize")
        if x.shape[1] != len(self.mean):
            raise ValueError(f"Normalize: batch {x.shape} has {x.shape[1]} channels, mean/std "
                             f"have {len(self.mean)}")
        mean = np.asarray(self.mean, dtype=x.dtype).reshape(-1, 1, 1)
        inv_std = (1 / np.asarray(self.std, dtype=np.float64)).astype(x.dtype).reshape(-1, 1, 1)
        return (x - mean) * inv_std


PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


class RandomCrop(Transform):
    """Pad every side, then crop `size` at a random offset per sample.

    padding: int (all sides), (left/right, top/bottom) or (left, top, right, bottom).
    padding_mode: torchvision's: constant (`fill`), edge, reflect (mirror without repeating
    the border pixel) or symmetric (repeating it).
    """

    def __init__(self, size, padding=0, fill=0.0, padding_mode="constant"):
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"RandomCrop: padding_mode must be one of {', '.join(PADDING_MODES)}; "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.size = _pair(size, "size", "RandomCrop")
        pad = (padding,) * 4 if isinstance(padding, numbers.Integral) else tuple(padding)
        if len(pad) == 2:
            pad = (pad[0], pad[1], pad[0], pad[1])
        if len(pad) != 4 or min(pad) < 0:
            raise ValueError(f"RandomCrop: padding must be a non-negative int, 2 or 4 values; "
                             f"got {padding}")
        self.padding = tuple(int(p) for p in pad)  # left, top, right, bottom
        self.fill = fill

    def __call__(self, x, rng):
        check_batch(x, "RandomCrop")
        check_rng(rng, "RandomCrop")
        n, _, height, width = x.shape
        left, top, right, bottom = self.padding
        out_h, out_w = self.size
        padded_h, padded_w = height + top + bottom, width + left + right
        if out_h > padded_h or out_w > padded_w:
            raise ValueError(f"RandomCrop: crop {out_h}x{out_w} is larger than the padded "
                             f"image {padded_h}x{padded_w} (batch {x.shape}, padding "
                             f"{self.padding})")
        if self.padding_mode != "constant" and (max(top, bottom) >= height
                                                or max(left, right) >= width):
            raise ValueError(f"RandomCrop: {self.padding_mode} padding must be smaller than the "
                             f"image ({height}x{width}); got {self.padding}")
        widths = ((0, 0), (0, 0), (top, bottom), (left, right))
        if self.padding_mode == "constant":
            padded = np.pad(x, widths, constant_values=self.fill)          # (N, C, Hp, Wp)
        else:
            padded = np.pad(x, widths, mode=self.padding_mode)
        rows = rng.integers(0, padded_h - out_h + 1, size=n)
        cols = rng.integers(0, padded_w - out_w + 1, size=n)
        windows = sliding_window_view(padded, (out_h, out_w), axis=(2, 3))  # (N, C, i, j, h, w)
        return windows[np.arange(n), :, rows, cols]                          # (N, C, h, w)


class RandomHorizontalFlip(Transform):
    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1]; got {p}")
        self.p = float(p)

    def __call__(self, x, rng):
        check_batch(x, "RandomHorizontalFlip")
        flip = check_rng(rng, "RandomHorizontalFlip").random(x.shape[0]) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)


class AlternatingFlip(Transform):
    """Derandomised horizontal flip (airbench, Jordan 2024): each image has a fixed random bit
    (from the loader's seed and its index) and is mirrored in epoch e when that bit differs
    from e's parity. So each epoch mirrors half of the images, as a random flip does, and every
    image is seen both ways in each pair of epochs, which a random flip leaves to chance."""

    uses_positions = True

    def __call__(self, x, rng, indices=None, epoch=None, seed=0):
        check_batch(x, "AlternatingFlip")
        if indices is None or epoch is None:
            raise ValueError("AlternatingFlip: needs each image's dataset index and the epoch "
                             "(indices=, epoch=); DataLoader passes them")
        indices = np.asarray(indices)
        if indices.shape != (x.shape[0],):
            raise ValueError(f"AlternatingFlip: {indices.shape} indices for a batch of {x.shape[0]}")
        flip = image_bits(seed, indices) ^ bool(epoch % 2)
        return np.where(flip[:, None, None, None], x[..., ::-1], x)


def image_bits(seed: int, indices: np.ndarray) -> np.ndarray:
    """One pseudo-random bit per index, a fixed function of (seed, index): SplitMix64's mix."""
    z = np.asarray(indices, dtype=np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2 ** 64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(63)).astype(bool)


class RandomAffine(Transform):
    """torchvision.transforms.RandomAffine on a batch, bilinear, one draw per sample.

    degrees: d -> angle in (-d, d), or (min, max); clockwise as torchvision's F.affine.
    translate: (a, b) fractions: shift in (-a*W, a*W) x (-b*H, b*H), rounded to pixels.
    scale: (min, max). shear: s -> x-shear in (-s, s); (min, max) x-shear;
    (xmin, xmax, ymin, ymax) both. fill: number or one value per channel.
    """

    def __init__(self, degrees, translate=None, scale=None, shear=None, fill=0.0):
        name = type(self).__name__
        self.degrees = _range(degrees, "degrees", name)
        if translate is not None:
            translate = tuple(float(t) for t in translate)
            if len(translate) != 2 or not all(0 <= t <= 1 for t in translate):
                raise ValueError(f"{name}: translate must be two fractions in [0, 1]; "
                                 f"got {translate}")
        self.translate = translate
        if scale is not None:
            scale = tuple(float(s) for s in scale)
            if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
                raise ValueError(f"{name}: scale must be (min, max) with 0 < min <= max; "
                                 f"got {scale}")
        self.scale = scale
        if shear is not None:
            if isinstance(shear, numbers.Number) or len(shear) == 2:
                shear = _range(shear, "shear", name) + (0.0, 0.0)
            elif len(shear) == 4:
                shear = _range(shear[:2], "shear", name) + _range(shear[2:], "shear", name)
            else:
                raise ValueError(f"{name}: shear must be a number, 2 or 4 values; got {shear}")
        self.shear = shear
        self.fill = fill

    def sample(self, n: int, height: int, width: int, rng: np.random.Generator) -> dict:
        """Each sample's parameters, drawn as torchvision's get_params does."""
        params = {"angle": rng.uniform(*self.degrees, size=n),
                  "translate": np.zeros((n, 2)), "scale": np.ones(n), "shear": np.zeros((n, 2))}
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * width, self.translate[1] * height
            params["translate"] = np.round(np.stack([rng.uniform(-max_dx, max_dx, size=n),
                                                     rng.uniform(-max_dy, max_dy, size=n)], 1))
        if self.scale is not None:
            params["scale"] = rng.uniform(*self.scale, size=n)
        if self.shear is not None:
            params["shear"] = np.stack([rng.uniform(*self.shear[:2], size=n),
                                        rng.uniform(*self.shear[2:], size=n)], 1)
        return params

    def __call__(self, x, rng):
        check_batch(x, type(self).__name__)
        check_rng(rng, type(self).__name__)
        n, _, height, width = x.shape
        return affine(x, fill=self.fill, **self.sample(n, height, width, rng))


class RandomRotation(RandomAffine):
    """torchvision.transforms.RandomRotation: counter-clockwise by an angle drawn from
    (-d, d) or (min, max), about the image centre, bilinear."""

    def __init__(self, degrees, fill=0.0):
        super().__init__(degrees, fill=fill)

    def sample(self, n, height, width, rng):
        params = super().sample(n, height, width, rng)
        params["angle"] = -params["angle"]  # F.rotate(a) is F.affine(-a)
        return params


def _fill_boxes(x, top, left, height, width, value, apply) -> np.ndarray:
    """x with box [top, top+height) x [left, left+width) of each applied sample set to value."""
    rows = np.arange(x.shape[2])
    cols = np.arange(x.shape[3])
    inside_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])   # (N, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])  # (N, W)
    box = inside_rows[:, :, None] & inside_cols[:, None, :] & apply[:, None, None]
    return np.where(box[:, None], value, x)


def _erase_value(value, x, rng, owner):
    if isinstance(value, str):
        if value != "random":
            raise ValueError(f"{owner}: value must be a number, one per channel or 'random'; "
                             f"got {value!r}")
        return rng.standard_normal(x.shape, dtype=np.float32).astype(x.dtype, copy=False)
    value = np.asarray(value, dtype=x.dtype).reshape(-1, 1, 1)
    if value.shape[0] not in (1, x.shape[1]):
        raise ValueError(f"{owner}: value has {value.shape[0]} entries, the batch "
                         f"{x.shape} has {x.shape[1]} channels")
    return value


class RandomErasing(Transform):
    """torchvision.transforms.RandomErasing on a batch: with probability p, erase a
    rectangle of area fraction in `scale` and aspect ratio in `ratio` (log-uniform),
    up to 10 tries per sample. value: number, one per channel, or 'random' (N(0, 1))."""

    ATTEMPTS = 10

    def __init__(self, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomErasing: p must be in [0, 1]; got {p}")
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomErasing: need 0 < scale min <= max <= 1 and 0 < ratio "
                             f"min <= max; got scale={scale}, ratio={ratio}")
        self.p, self.scale, self.ratio, self.value = float(p), tuple(scale), tuple(ratio), value

    def __call__(self, x, rng):
        check_batch(x, "RandomErasing")
        check_rng(rng, "RandomErasing")
        n, _, height, width = x.shape
        apply = rng.random(n) < self.p
        tries = (n, self.ATTEMPTS)
        area = height * width * rng.uniform(*self.scale, size=tries)
        aspect = np.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), size=tries))
        h = np.round(np.sqrt(area * aspect)).astype(np.int64)
        w = np.round(np.sqrt(area / aspect)).astype(np.int64)
        fits = (h < height) & (w < width)
        first = np.argmax(fits, axis=1)          # first try that fits
        apply &= fits.any(axis=1)                # none fits: leave the image alone
        h, w = h[np.arange(n), first] * apply, w[np.arange(n), first] * apply
        top = rng.integers(0, height - h + 1)
        left = rng.integers(0, width - w + 1)
        value = _erase_value(self.value, x, rng, "RandomErasing")
        return _fill_boxes(x, top, left, h, w, value, apply)


class Cutout(Transform):
    """Cutout (DeVries & Taylor 2017): a size x size square centred on a uniformly drawn
    pixel, clipped at the borders, set to `value`, with probability p."""

    def __init__(self, size, p=1.0, value=0.0):
        self.size = _pair(size, "size", "Cutout")
        if min(self.size) <= 0 or not 0 <= p <= 1:
            raise ValueError(f"Cutout: size must be positive and p in [0, 1]; got "
                             f"size={size}, p={p}")
        self.p, self.value = float(p), value

    def __call__(self, x, rng):
        check_batch(x, "Cutout")
        check_rng(rng, "Cutout")
        n, _, height, width = x.shape
        apply = rng.random(n) < self.p
        top = rng.integers(0, height, size=n) - self.size[0] // 2
        left = rng.integers(0, width, size=n) - self.size[1] // 2
        value = _erase_value(self.value, x, rng, "Cutout")
        return _fill_boxes(x, top, left, np.full(n, self.size[0]), np.full(n, self.size[1]),
                           value, apply)

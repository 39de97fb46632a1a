"""What the page asks of the model: the bytes of an image in, everything it shows out.

An upload is decoded with Pillow under limits (bytes are checked by the server, pixels here),
preprocessed as the model's training images were made (MNIST-style for digits, a plain resize
otherwise), classified with the recipe's test-time augmentation as `minivgg predict` does,
and run once more to collect each conv layer's feature maps, which come back as PNG images.
"""
from __future__ import annotations

import base64
import io
import math
import threading
import time
import warnings

import numpy as np

from .. import checkpoint
from ..autograd import no_grad
from ..inference import locate_weights
from ..inspect import feature_maps
from ..preprocess import light_background, mnist_style
from ..train import averaged_logits
from ..tta import describe_tta, saved_tta

MAX_PIXELS = 25_000_000  # a 5000x5000 photo; a bigger one is refused before it is decoded
PREPROCESS_MODES = ("auto", "mnist", "resize")


class UploadError(ValueError):
    """An upload the page cannot use; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _png_data_url(pixels: np.ndarray) -> str:
    """uint8 (H, W) or (H, W, 3) as a data: URL the page can show without another request."""
    from PIL import Image

    buffer = io.BytesIO()
    # the images are small and sent once: encoding time matters more than their size
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _viridis() -> np.ndarray:
    """(256, 3) uint8 lookup table of matplotlib's viridis colour map."""
    from matplotlib import colormaps

    return np.rint(colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def map_grid(maps: np.ndarray, lut: np.ndarray, gap: int = 1) -> np.ndarray:
    """One layer's maps (C, H, W) as a near-square grid of tiles, (rows*(H+gap)-gap,
    cols*(W+gap)-gap, 3) uint8; each map scaled to its own min..max (a flat map is dark),
    the gaps white."""
    channels, height, width = maps.shape
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    grid = np.full((rows * (height + gap) - gap, cols * (width + gap) - gap, 3), 255, np.uint8)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    levels = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0)
    indices = np.rint(levels * 255).astype(np.intp)
    for c in range(channels):
        r, k = divmod(c, cols)
        top, left = r * (height + gap), k * (width + gap)
        grid[top:top + height, left:left + width] = lut[indices[c]]
    return grid


class Predictor:
    """A saved model ready to answer the page; `predict` may be called from many threads."""

    def __init__(self, model_path, top_k: int = 5, preprocess: str = "auto"):
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}")
        self.weights = locate_weights(model_path)
        self.model, self.meta = checkpoint.load_model(self.weights)
        self.channels, self.height, self.width = self.meta["input_shape"]
        self.classes = list(self.meta.get("class_names") or map(str, range(self.meta["num_classes"])))
        self.top_k = min(int(top_k), len(self.classes))
        if preprocess == "auto":
            preprocess = "mnist" if self.meta.get("dataset") == "mnist" else "resize"
        if preprocess == "mnist" and self.channels != 1:
            raise ValueError(f"MNIST-style preprocessing is for greyscale models; this one takes "
                             f"{self.channels}-channel images: use --preprocess resize")
        self.preprocess = preprocess
        self.tta_flip, self.tta_shift = saved_tta(self.meta)
        self.mean = np.asarray(self.meta["mean"], np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(self.meta["std"], np.float32).reshape(1, -1, 1, 1)
        self.lut = _viridis()
        # one forward pass at a time: the layers keep work buffers between calls
        self._lock = threading.Lock()

    def info(self) -> dict:
        """What the page shows about the model before any image."""
        return {"model": self.meta.get("model"), "dataset": self.meta.get("dataset"),
                "classes": self.classes, "input_shape": [self.channels, self.height, self.width],
                "preprocess": self.preprocess, "top_k": self.top_k,
                "tta": describe_tta(self.tta_flip, self.tta_shift),
                "weights": self.weights.name}

    def decode(self, data: bytes) -> np.ndarray:
        """The upload as uint8 (C, H, W) in the model's input size, preprocessed."""
        from PIL import Image, UnidentifiedImageError

        if not data:
            raise UploadError(400, "the upload is empty: send the bytes of a PNG or JPEG image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    if img.width * img.height > MAX_PIXELS:
                        raise UploadError(413, f"the image is {img.width}x{img.height} pixels; the "
                                               f"largest accepted has {MAX_PIXELS:,} pixels")
                    img.load()
                    img = self._flatten_alpha(img)
        except UploadError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(400, "the upload is not an image Pillow can read (PNG, JPEG, GIF, "
                                   "BMP or WebP expected)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise UploadError(400, f"the image is damaged or truncated ({error})") from None
        if self.preprocess == "mnist":
            try:
                digit = mnist_style(np.asarray(img.convert("L")))
            except ValueError as error:
                raise UploadError(422, str(error)) from None
            if digit.shape != (self.height, self.width):
                digit = np.asarray(_resize(digit, self.width, self.height))
            return digit[None]
        img = img.convert("L" if self.channels == 1 else "RGB")
        pixels = np.asarray(_resize(img, self.width, self.height), np.uint8)
        if self.channels == 1:
            # the MNIST-family datasets are light on dark; a dark-on-light picture is inverted
            return (255 - pixels if light_background(pixels) else pixels)[None]
        return pixels.transpose(2, 0, 1)

    @staticmethod
    def _flatten_alpha(img):
        """Transparent pixels count as white paper, not as black."""
        from PIL import Image

        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(paper, rgba).convert("RGB")
        return img.copy()

    def predict(self, data: bytes) -> dict:
        """Top classes, every probability, the image as the net saw it, and the feature maps."""
        start = time.perf_counter()
        pixels = self.decode(data)                                        # (C, H, W) uint8
        batch = pixels[None].astype(np.float32) / 255.0                    # (1, C, H, W)
        with self._lock, no_grad():
            logits = averaged_logits(self.model, batch, self.mean, self.std, self.tta_flip,
                                     self.tta_shift)[0].astype(np.float64)
            maps = feature_maps(self.model, (batch - self.mean) / self.std)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs)[:self.top_k]
        shown = pixels[0] if self.channels == 1 else pixels.transpose(1, 2, 0)
        return {
            "prediction": self.classes[order[0]],
            "top": [{"label": self.classes[i], "probability": float(probs[i])} for i in order],
            "probabilities": [float(p) for p in probs],
            "input": _png_data_url(shown),
            "feature_maps": [{"layer": name, "channels": int(m.shape[1]),
                              "size": [int(m.shape[2]), int(m.shape[3])],
                              "image": _png_data_url(map_grid(m[0], self.lut))}
                             for name, m in maps],
            "milliseconds": round((time.perf_counter() - start) * 1000, 1),
        }


def _resize(img, width: int, height: int):
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    return img if img.size == (width, height) else img.resize((width, height), Image.BILINEAR)

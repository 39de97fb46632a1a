import numpy as np
import pytest

from minivgg.preprocess import MNIST_BOX, MNIST_SIZE, mnist_style


def _centre_of_mass(img):
    rows, cols = np.indices(img.shape)
    mass = img.astype(np.float64)
    return (rows * mass).sum() / mass.sum(), (cols * mass).sum() / mass.sum()


def test_dark_digit_on_light_page_is_inverted_boxed_and_centred():
    page = np.full((120, 90), 240, np.uint8)  # an off-white page, a dark "7" near a corner
    page[5:15, 5:60] = 20
    page[15:100, 50:60] = 20
    out = mnist_style(page)
    assert out.shape == (MNIST_SIZE, MNIST_SIZE) and out.dtype == np.uint8
    assert out[0, 0] == 0 and out.max() == 255  # light ink on black
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 == MNIST_BOX  # the taller side fills the 20-pixel box
    assert cols[-1] - cols[0] + 1 < MNIST_BOX  # aspect ratio kept
    r, c = _centre_of_mass(out)
    assert abs(r - 13.5) <= 0.6 and abs(c - 13.5) <= 0.6


def test_light_ink_on_dark_is_not_inverted():
    img = np.zeros((28, 28), np.uint8)
    img[2:26, 12:16] = 255
    out = mnist_style(img)
    assert out[0, 0] == 0 and out[14, 13] > 0


def test_forced_invert_and_no_invert_differ():
    img = np.zeros((40, 40), np.uint8)
    img[10:30, 18:22] = 200
    assert mnist_style(img, invert=False).sum() != mnist_style(img, invert=True).sum()


@pytest.mark.parametrize("bad", [np.full((28, 28), 255, np.uint8), np.zeros((28, 28), np.uint8)])
def test_blank_image_is_refused_with_a_message(bad):
    with pytest.raises(ValueError, match="blank"):
        mnist_style(bad)


def test_colour_array_is_refused():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mnist_style(np.zeros((28, 28, 3), np.uint8))

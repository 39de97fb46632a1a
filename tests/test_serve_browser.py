"""The drawing page in a real browser: headless Chromium from the distribution, driven by
Playwright pointed at it (never `playwright install`, which downloads a browser).

A digit is drawn on the canvas with the mouse; the page must show the right label, the image
as the net saw it and feature maps that are not blank, refuse a bad file with a message, and
go on answering. The model is a small MNIST net trained for this test (tests/data/README.md).
Set MINIVGG_SERVE_SCREENSHOT=path.png to keep a screenshot of the page.
"""
import base64
import math
import os
import shutil
import threading
from pathlib import Path

import pytest

from minivgg.serve import Predictor, make_server

MODEL = Path(os.environ.get("MINIVGG_TEST_DIGITS_MODEL") or Path(__file__).parent / "data" / "mnist_20k_digits.safetensors")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-default-apps", "--disable-extensions"]


def _chromium() -> str | None:
    path = os.environ.get("MINIVGG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.path.exists(path) else None


def _unavailable(reason: str):
    """In CI the browser test is the point: a missing browser fails it; elsewhere it skips."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser test: .ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page_url():
    server = make_server(Predictor(MODEL), port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    if chromium is None:
        _unavailable("no Chromium found (apt-get install chromium, or set MINIVGG_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        # Playwright gives the browser a fresh, empty profile of its own
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _settled(page):
    """Wait until every image the page sent has been answered."""
    page.wait_for_function("document.body.dataset.idle === 'yes'", timeout=30_000)


def _draw(page, points):
    """One stroke through `points`, given as fractions of the canvas's width and height."""
    box = page.locator("#pad").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()
    _settled(page)


# distinct colours in an <img>, counted in the page: a blank map is one flat colour
_COLOURS = """img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set();
    for (let i = 0; i < data.length; i += 4) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    return seen.size;
}"""


# pixels of an <img> brighter than mid-grey
_INK = """img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) lit += data[i] > 128 ? 1 : 0;
    return lit;
}"""


def test_draw_a_digit_see_label_input_and_feature_maps(browser, page_url, tmp_path):
    # the page's Content-Security-Policy forbids eval, which wait_for_function uses
    page = browser.new_page(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    outside = []

    def only_loopback(route):
        if route.request.url.startswith(page_url) or route.request.url.startswith("data:"):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", only_loopback)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_url)
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=30_000)
    assert "mnist_20k" in page.inner_text("#model-info")

    _draw(page, [(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)])                       # a one
    assert page.inner_text("#prediction") == "1"
    probabilities = page.locator("#top .p").all_inner_texts()
    assert len(probabilities) == 5 and float(probabilities[0].rstrip("%")) > 50
    assert page.eval_on_selector("#seen", _INK) > 30            # the fitted one: a bar of light ink
    maps = page.locator("img.feature-map")
    assert maps.count() == 7                                    # mnist_20k's seven convolutions
    for i in range(maps.count()):
        assert maps.nth(i).evaluate(_COLOURS) > 20, f"feature map {i} is blank"

    page.click("#clear")
    circle = [(0.5 + 0.27 * math.sin(t / 36 * 2 * math.pi), 0.5 - 0.33 * math.cos(t / 36 * 2 * math.pi))
              for t in range(39)]
    _draw(page, circle)                                                         # a zero
    assert page.inner_text("#prediction") == "0"
    shot = os.environ.get("MINIVGG_SERVE_SCREENSHOT") or str(tmp_path / "serve.png")
    page.screenshot(path=shot, full_page=True)

    # a file that is not an image: a message on the page, and the page keeps working
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                          "buffer": b"not an image"}])
    _settled(page)
    assert page.is_visible("#message") and "415" in page.inner_text("#message")
    page.set_input_files("#file", files=[{"name": "fake.png", "mimeType": "image/png",
                                          "buffer": b"\x89PNG\r\n\x1a\n broken"}])
    _settled(page)
    assert "400" in page.inner_text("#message")
    page.click("#clear")
    _draw(page, [(0.5, 0.15), (0.5, 0.85)])
    assert page.inner_text("#prediction") == "1" and not page.is_visible("#message")

    assert outside == [] and errors == []
    page.close()


def test_drop_a_photo_on_a_colour_model(browser, tmp_path):
    """A CIFAR-style model (3x32x32, a user's own five classes): a photo dropped on the pad."""
    from minivgg import checkpoint
    from minivgg.models import build

    classes = ["apple", "boat", "cloud", "dune", "elm"]
    weights = tmp_path / "model.safetensors"
    checkpoint.save_weights(weights, build("minivggnet", in_channels=3, num_classes=5, image_size=32), {
        "input_shape": [3, 32, 32], "num_classes": 5, "class_names": classes,
        "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "dataset": "my-photos"})
    server = make_server(Predictor(weights), port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page(bypass_csp=True)
        page.goto(server.url)
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=30_000)
        photo = base64.b64encode(_photo_png()).decode()
        transfer = page.evaluate_handle("""b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'photo.png', {type: 'image/png'}));
            return transfer;
        }""", photo)
        page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
        _settled(page)
        assert page.inner_text("#prediction") in classes
        assert page.locator("#top li").count() == 5
        assert page.eval_on_selector("#seen", "img => [img.naturalWidth, img.naturalHeight]") == [32, 32]
        maps = page.locator("img.feature-map")
        assert maps.count() == 4
        for i in range(4):
            assert maps.nth(i).evaluate(_COLOURS) > 20, f"feature map {i} is blank"
        page.close()
    finally:
        server.shutdown()
        server.server_close()


def _photo_png() -> bytes:
    """A smooth colour picture (gradients and a disc), 96x80."""
    import io

    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:80, 0:96]
    rgb = np.stack([x * 255 // 95, y * 255 // 79, np.full_like(x, 120)], axis=-1).astype(np.uint8)
    rgb[(x - 48) ** 2 + (y - 40) ** 2 < 300] = (250, 240, 30)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()

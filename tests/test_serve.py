"""`minivgg serve` over HTTP: the answers, the refusals (each a 4xx with a message, the server
still serving after), the files it will and will not hand out, and many requests in a row."""
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minivgg import checkpoint
from minivgg.autograd import Tensor, no_grad
from minivgg.cli import main
from minivgg.models import build
from minivgg.preprocess import mnist_style
from minivgg.serve import Predictor, make_server
from minivgg.serve.predictor import map_grid

ROOT = Path(__file__).resolve().parents[1]


def _png(array, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _digit_one(size=120) -> np.ndarray:
    """Dark ink on white paper, as a person draws it."""
    img = np.full((size, size), 255, np.uint8)
    img[size // 6:-size // 6, size // 2 - 6:size // 2 + 6] = 0
    return img


def _save(path, name, shape, classes, dataset):
    model = build(name, in_channels=shape[0], num_classes=len(classes), image_size=shape[1], seed=4)
    checkpoint.save_weights(path, model, {
        "input_shape": list(shape), "num_classes": len(classes), "class_names": list(classes),
        "mean": [0.1307] * shape[0], "std": [0.3081] * shape[0], "dataset": dataset})
    return path


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("m") / "model.safetensors", "mnist_20k", (1, 28, 28),
                 [str(i) for i in range(10)], "mnist")


@pytest.fixture(scope="module")
def server(digits_model):
    server = make_server(Predictor(digits_model, top_k=3), port=0, max_upload=200_000, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _request(server, method, path, body=None, headers=None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _raw(server, data: bytes) -> bytes:
    """Bytes sent as they are (a malformed request), the whole answer back."""
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)                   # the server reads to the end, then EOF
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _predict(server, body, content_type="image/png"):
    status, headers, data = _request(server, "POST", "/api/predict", body,
                                     {"Content-Type": content_type})
    return status, json.loads(data)


def test_page_files_and_info(server):
    status, headers, body = _request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<canvas id="pad"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in ("app.js", "style.css"):
        status, _, body = _request(server, "GET", f"/static/{name}?v=1")
        assert status == 200 and body
    html = _request(server, "GET", "/")[2].decode()
    assert "http://" not in html and "https://" not in html      # nothing from elsewhere
    status, _, body = _request(server, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and info["model"] == "mnist_20k" and info["preprocess"] == "mnist"
    assert info["classes"] == [str(i) for i in range(10)] and info["input_shape"] == [1, 28, 28]


@pytest.mark.parametrize("path", [
    "/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/%2e%2e/cli.py",
    "/static//etc/passwd", "/../../../../etc/passwd", "/static/", "/static/static",
    "/minivgg/serve/server.py", "/static/app.js/..", "/etc/passwd",
])
def test_nothing_outside_the_static_files_is_served(server, path):
    raw = _raw(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 404"), raw[:80]
    assert b"import" not in raw and b"root:" not in raw


def test_prediction_is_the_models_on_the_mnist_style_image(server, digits_model):
    image = _digit_one()
    status, result = _predict(server, _png(image))
    assert status == 200
    model, meta = checkpoint.load_model(digits_model)
    x = (mnist_style(image)[None, None].astype(np.float32) / 255 - 0.1307) / 0.3081
    with no_grad():
        logits = model(Tensor(x)).data[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    np.testing.assert_allclose(result["probabilities"], probs, rtol=1e-5, atol=1e-7)
    assert result["prediction"] == str(int(np.argmax(probs)))
    assert [t["label"] for t in result["top"]] == [str(i) for i in np.argsort(-probs)[:3]]
    seen = np.asarray(Image.open(io.BytesIO(_data_url_bytes(result["input"]))))
    np.testing.assert_array_equal(seen, mnist_style(image))
    layers = [(m["layer"], m["channels"], m["size"]) for m in result["feature_maps"]]
    assert [c for _, c, _ in layers] == [8, 16, 10, 16, 16, 16, 12]
    for entry in result["feature_maps"]:
        grid = np.asarray(Image.open(io.BytesIO(_data_url_bytes(entry["image"]))))
        assert grid.ndim == 3 and len(np.unique(grid.reshape(-1, 3), axis=0)) > 10


def _data_url_bytes(url: str) -> bytes:
    import base64

    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix):])


def test_map_grid_scales_each_map_and_leaves_flat_maps_dark():
    lut = np.stack([np.arange(256)] * 3, axis=1).astype(np.uint8)
    maps = np.stack([np.arange(4.0).reshape(2, 2), np.full((2, 2), 7.0), -np.arange(4.0).reshape(2, 2)])
    grid = map_grid(maps, lut)
    assert grid.shape == (5, 5, 3)                       # 2x2 tiles of 2x2 with a 1-pixel gap
    np.testing.assert_array_equal(grid[:2, :2, 0], [[0, 85], [170, 255]])
    np.testing.assert_array_equal(grid[:2, 3:, 0], 0)
    np.testing.assert_array_equal(grid[3:, :2, 0], [[255, 170], [85, 0]])
    assert (grid[2] == 255).all() and (grid[3:, 3:] == 255).all()    # gaps and the empty tile


def _big_canvas_png() -> bytes:
    return _png(np.zeros((6000, 4200), np.uint8))       # 25.2 Mpixels in a few kB


@pytest.mark.parametrize("body, content_type, status, words", [
    (b"hello, not an image", "image/png", 400, "not an image"),
    (b"hello", "text/plain", 415, "expected an image"),
    (b"{}", "application/json", 415, "expected an image"),
    (b"", "image/png", 400, "empty"),
    ("truncated", "image/png", 400, "damaged or truncated"),
    ("blank", "image/png", 422, "blank"),
    ("bomb", "image/png", 413, "pixels"),
])
def test_bad_uploads_get_a_4xx_with_a_message(server, body, content_type, status, words):
    if body == "truncated":
        noise = np.random.default_rng(1).integers(0, 255, (120, 120), dtype=np.uint8)
        body = _png(noise)[:3000]
    elif body == "blank":
        body = _png(np.full((50, 50), 255, np.uint8))
    elif body == "bomb":
        body = _big_canvas_png()
    got, payload = _predict(server, body, content_type)
    assert got == status and words in payload["error"], payload
    assert _predict(server, _png(_digit_one()))[0] == 200        # still serving


def test_malformed_and_oversized_requests(server):
    too_big = _raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 999999999\r\n\r\n")
    assert too_big.startswith(b"HTTP/1.1 413") and b"largest accepted is 200,000 bytes" in too_big
    no_length = _raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\r\n")
    assert no_length.startswith(b"HTTP/1.1 411")
    bad_length = _raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    assert bad_length.startswith(b"HTTP/1.1 400") and b"whole number" in bad_length
    short = _raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 100\r\n\r\nonly a few bytes")
    assert short.startswith(b"HTTP/1.1 400") and b"ended after 16 of 100 bytes" in short
    garbage = _raw(server, b"NONSENSE\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400") or garbage.startswith(b"HTTP/1.0 400")
    assert b'"error"' in garbage
    put = _raw(server, b"PUT /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert put.startswith(b"HTTP/1.1 405")
    wrong_route = _request(server, "POST", "/api/other", b"x", {"Content-Type": "image/png"})
    assert wrong_route[0] == 404
    assert _predict(server, _png(_digit_one()))[0] == 200


def test_colour_model_from_an_image_folder_takes_a_dropped_photo(tmp_path):
    classes = ["apple", "boat", "cloud", "dune", "elm"]
    path = _save(tmp_path / "colour.safetensors", "minivggnet", (3, 32, 32), classes, "my-photos")
    predictor = Predictor(path, top_k=10)
    assert predictor.preprocess == "resize" and predictor.top_k == 5
    photo = np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    result = predictor.predict(_png(photo, "JPEG"))
    assert result["prediction"] in classes and len(result["top"]) == 5
    assert abs(sum(result["probabilities"]) - 1) < 1e-6
    assert [m["size"] for m in result["feature_maps"]] == [[32, 32], [32, 32], [16, 16], [16, 16]]
    seen = np.asarray(Image.open(io.BytesIO(_data_url_bytes(result["input"]))))
    assert seen.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="greyscale models"):
        Predictor(path, preprocess="mnist")


def test_transparent_drawing_counts_as_white_paper(digits_model):
    predictor = Predictor(digits_model)
    rgba = np.zeros((100, 100, 4), np.uint8)             # transparent everywhere ...
    rgba[20:80, 45:55] = (0, 0, 0, 255)                  # ... but an opaque black stroke
    from_alpha = predictor.decode(_png(rgba))
    from_white = predictor.decode(_png(_digit_one(100)[..., None].repeat(3, axis=2)))
    assert from_alpha.max() == 255
    assert np.abs(from_alpha.astype(int) - predictor.decode(_png(_paper(rgba))).astype(int)).max() == 0
    assert from_white.shape == (1, 28, 28)


def _paper(rgba):
    rgb = np.full(rgba.shape[:2] + (3,), 255, np.uint8)
    opaque = rgba[..., 3] == 255
    rgb[opaque] = rgba[opaque, :3]
    return rgb


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_many_requests_in_a_row_neither_leak_nor_slow_down(server):
    """A bounded loopback load test: 100 predictions after 20 to warm up, on one keep-alive
    connection (the full 1,000 with figures is benchmarks/serve_load.py)."""
    host, port = server.server_address[:2]
    images = [_png(np.roll(_digit_one(), shift, axis=1)) for shift in range(-20, 21, 5)]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    # CPU time of this process (client and server threads) per request: unlike wall time it
    # does not grow when other processes share the cores
    cpu = []
    try:
        for i in range(120):
            if i == 20:
                rss_before = _rss_kib()
            start = time.process_time()
            connection.request("POST", "/api/predict", body=images[i % len(images)],
                               headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            cpu.append(time.process_time() - start)
    finally:
        connection.close()
    growth_mib = (_rss_kib() - rss_before) / 1024
    assert growth_mib < 20, f"RSS grew {growth_mib:.1f} MiB over 100 predictions"
    first, last = np.median(cpu[20:60]), np.median(cpu[-40:])
    assert last < 2 * first, f"median CPU time per request {first * 1000:.1f} ms -> {last * 1000:.1f} ms"


def test_cli_serve_says_where_and_stops_on_ctrl_c(digits_model):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "minivgg", "serve", str(digits_model),
                                "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert "mnist_20k (mnist, 10 classes, mnist preprocessing)" in lines[0]
        url = lines[1].split("open ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:") and "this machine only" in lines[1]
        host, port = url[len("http://"):].rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/api/info")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "stopped" in out, err


def test_cli_serve_errors_are_one_line(tmp_path, digits_model, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "no model found" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(digits_model), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_fashion_model_gets_the_whole_picture_resized_and_inverted(tmp_path):
    """Fashion-MNIST items fill their frame, light on dark: no cropping to the ink, and a
    dark-on-light photo is inverted."""
    path = _save(tmp_path / "f.safetensors", "lenet5", (1, 28, 28), [f"c{i}" for i in range(10)],
                 "fashion-mnist")
    predictor = Predictor(path)
    assert predictor.preprocess == "resize"
    photo = np.full((56, 56), 255, np.uint8)
    photo[14:42, 20:36] = 0                              # a dark item on white, in the middle
    pixels = predictor.decode(_png(photo))[0]
    inside = np.zeros((28, 28), bool)
    inside[8:20, 11:17] = True                           # the item at half size, less its edge
    outside = np.ones((28, 28), bool)
    outside[6:22, 9:19] = False
    assert (pixels[inside] >= 250).all() and (pixels[outside] <= 5).all()
    assert Predictor(path, preprocess="mnist").decode(_png(photo))[0][4:24].any(axis=1).all()

"""Downloads against a local HTTP server on 127.0.0.1 (never the internet).

The server serves a good payload, a corrupt one (wrong bytes, same length), a 404,
and a connection cut short; a download must either leave a verified file under its
final name or nothing at all (no partial file that later looks valid).
"""
import dataclasses
import hashlib
import http.server
import threading

import numpy as np
import pytest

import minivgg.data as data
from minivgg.data.errors import ChecksumError, DownloadError
from minivgg.data.registry import DATASETS
import synthetic

PAYLOAD = bytes(range(256)) * 4000  # about 1 MB: several chunks and progress updates
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """A threaded HTTP server with a dict of path -> bytes and a request log."""

    def __init__(self):
        self.files = {"/good/file.bin": PAYLOAD,
                      "/corrupt/file.bin": PAYLOAD[:-1] + b"\x00"}
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                if self.path.startswith("/cut/"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    self.wfile.write(PAYLOAD[:1000])
                    self.close_connection = True
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_payload(server, tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    path = data.download_file([f"{server.url}/good/file.bin"], dest, md5=MD5, sha256=SHA256,
                              progress=False)
    assert path == dest and dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["file.bin"]  # no .part file left behind


def test_corrupt_payload_leaves_nothing(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(ChecksumError) as info:
        data.download_file([f"{server.url}/corrupt/file.bin"], dest, md5=MD5, progress=False)
    assert "checksum mismatch" in str(info.value) and MD5 in str(info.value)
    assert "/corrupt/file.bin" in str(info.value)
    assert leftovers(tmp_path) == []


def test_sha256_alone_is_checked(server, tmp_path):
    with pytest.raises(ChecksumError, match="sha256"):
        data.download_file([f"{server.url}/corrupt/file.bin"], tmp_path / "f", sha256=SHA256,
                           progress=False)
    assert leftovers(tmp_path) == []


def test_mirror_fallback(server, tmp_path):
    urls = [f"{server.url}/missing/file.bin", f"{server.url}/corrupt/file.bin",
            f"{server.url}/good/file.bin", f"{server.url}/never/file.bin"]
    dest = data.download_file(urls, tmp_path / "file.bin", md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == ["/missing/file.bin", "/corrupt/file.bin", "/good/file.bin"]


def test_all_mirrors_fail_lists_each(server, tmp_path):
    urls = [f"{server.url}/missing/file.bin", f"{server.url}/cut/file.bin",
            "http://127.0.0.1:9/refused/file.bin"]
    with pytest.raises(DownloadError) as info:
        data.download_file(urls, tmp_path / "file.bin", md5=MD5, progress=False, timeout=5)
    message = str(info.value)
    assert not isinstance(info.value, ChecksumError)
    for url in urls:
        assert url in message
    assert "404" in message and "1000 of" in message
    assert "by hand" in message
    assert leftovers(tmp_path) == []


def test_failed_download_keeps_existing_file(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"previous")
    with pytest.raises(ChecksumError):
        data.download_file([f"{server.url}/corrupt/file.bin"], dest, md5=MD5, progress=False)
    assert dest.read_bytes() == b"previous"
    assert leftovers(tmp_path) == ["file.bin"]


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    from minivgg.data import download

    def interrupted(url, part, name, progress, timeout):
        part.write_bytes(PAYLOAD[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_fetch_to", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.download_file([f"{server.url}/good/file.bin"], tmp_path / "file.bin", md5=MD5)
    assert leftovers(tmp_path) == []


def test_progress_bar_is_shown(server, tmp_path, capsys):
    data.download_file([f"{server.url}/good/file.bin"], tmp_path / "file.bin", md5=MD5,
                       progress=True)
    err = capsys.readouterr().err
    assert "file.bin" in err and "100%" in err


def test_load_dataset_downloads_missing_files(server, tmp_path, monkeypatch):
    # Serve a small MNIST built by the test, registered with its own checksums.
    source = tmp_path / "served"
    written = synthetic.write_dataset("mnist", source, 20, 10)
    files = []
    for f in DATASETS["mnist"].files:
        payload = (source / "mnist" / f.name).read_bytes()
        server.files[f"/mnist/{f.name}"] = payload
        files.append(dataclasses.replace(f, md5=hashlib.md5(payload).hexdigest(),
                                         sha256=hashlib.sha256(payload).hexdigest()))
    info = dataclasses.replace(DATASETS["mnist"], num_train=20, num_test=10, files=tuple(files),
                               mirrors=(f"{server.url}/offline/", f"{server.url}/mnist/"))
    monkeypatch.setitem(DATASETS, "mnist", info)
    root = tmp_path / "data"

    with pytest.raises(data.DatasetNotFoundError):
        data.load_dataset("mnist", "test", data_dir=root)  # download=False: never fetches
    assert server.requests == []

    images, labels = data.load_dataset("mnist", "test", data_dir=root, download=True,
                                       progress=False)
    np.testing.assert_array_equal(images, written["test"][0])
    np.testing.assert_array_equal(labels, written["test"][1])
    assert leftovers(root / "mnist") == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    fetched = len(server.requests)
    data.load_dataset("mnist", "test", data_dir=root, download=True)
    assert len(server.requests) == fetched  # present files are not fetched again


def test_load_dataset_with_corrupt_mirror_fails_cleanly(server, tmp_path, monkeypatch):
    server.files["/bad/t10k-images-idx3-ubyte.gz"] = b"\x1f\x8b not really"
    info = dataclasses.replace(DATASETS["mnist"], mirrors=(f"{server.url}/bad/",))
    monkeypatch.setitem(DATASETS, "mnist", info)
    with pytest.raises(DownloadError) as error:
        data.load_dataset("mnist", "test", data_dir=tmp_path, download=True, progress=False)
    assert "t10k-images-idx3-ubyte.gz" in str(error.value)
    assert leftovers(tmp_path / "mnist") == []

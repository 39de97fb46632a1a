"""The page's HTTP server, on the standard library: a fixed set of files and two JSON routes.

    GET  /                 the page (static/index.html)
    GET  /static/<name>    one of the files shipped in static/, looked up by exact name
    GET  /api/info         the model: name, dataset, classes, input shape, preprocessing
    POST /api/predict      body: the image's bytes, Content-Type image/*; answer: JSON

The static files are read once at start into a table, and a request is answered from that
table only, so no path a client sends ever reaches the file system. Every refusal is a 4xx
with a JSON body {"error": message} that the page shows; an unexpected failure is a 500 of the
same shape, and the server goes on serving.
"""
from __future__ import annotations

import ipaddress
import json
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from .predictor import Predictor, UploadError

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp")
DEFAULT_MAX_UPLOAD = 8 * 1024 * 1024
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
                  ".ico": "image/x-icon"}
# the page needs nothing from elsewhere: the browser is told to fetch nothing from elsewhere
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type) of every file shipped in minivgg/serve/static/."""
    table = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _CONTENT_TYPES:
            table[entry.name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])
    return table


class PageServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding what its handlers share: the predictor and the files."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, predictor: Predictor, max_upload: int = DEFAULT_MAX_UPLOAD,
                 quiet: bool = False):
        self.predictor = predictor
        self.max_upload = int(max_upload)
        self.quiet = quiet
        self.files = static_files()
        super().__init__(address, PageHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer
    protocol_version = "HTTP/1.1"
    # a request line too broken to name its version still gets a status line and headers
    default_request_version = "HTTP/1.0"
    server_version = "minivgg"
    sys_version = ""
    timeout = 15  # a client that stops sending mid-request does not hold a thread for long
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers on every keep-alive request.
    disable_nagle_algorithm = True

    # ---- answers -------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, close: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict, close: bool = False):
        self._send(status, json.dumps(payload).encode(), "application/json", close)

    def _error(self, status: int, message: str, close: bool = False):
        self._json(status, {"error": message, "status": status}, close)

    def send_error(self, code, message=None, explain=None):
        """The standard library's own refusals (a malformed request line, an unknown method,
        an overlong header) in the page's JSON shape too."""
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = message or "error"
        self.log_error("%d %s", code, text)
        self._error(code, f"{text}", close=True)

    def log_message(self, format, *args):
        if not self.server.quiet:
            sys.stderr.write(f"minivgg serve: {self.address_string()} {format % args}\n")

    def log_request(self, code="-", size="-"):
        if isinstance(code, HTTPStatus):
            code = code.value
        if isinstance(code, int) and code >= 400:
            self.log_message('"%s" %s', self.requestline, code)

    # ---- routes --------------------------------------------------------------------
    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/":
            path = "/static/index.html"
        if path == "/api/info":
            return self._json(200, self.server.predictor.info())
        if path.startswith("/static/"):
            entry = self.server.files.get(path[len("/static/"):])
            if entry is not None:
                return self._send(200, entry[0], entry[1])
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        self._error(404, f"nothing at {path[:200]!r}: the page is at /")

    do_HEAD = do_GET

    def do_POST(self):
        path = urlsplit(self.path).path
        if path != "/api/predict":
            return self._error(404, f"nothing to POST at {path[:200]!r}: images go to /api/predict",
                               close=True)
        text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            return self._error(411, "send the image with a Content-Length, not chunked", close=True)
        if text is None:
            return self._error(411, "a Content-Length header is required", close=True)
        length = int(text) if text.strip().isdigit() else -1
        if length < 0:
            return self._error(400, f"Content-Length must be a whole number of bytes, got "
                                    f"{text[:40]!r}", close=True)
        limit = self.server.max_upload
        if length > limit:
            return self._error(413, f"the upload is {length:,} bytes; the largest accepted is "
                                    f"{limit:,} bytes ({limit / 2 ** 20:.0f} MiB)", close=True)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in IMAGE_TYPES:
            return self._error(415, f"expected an image ({', '.join(IMAGE_TYPES)}), got Content-Type "
                                    f"{content_type[:80] or 'none'!r}", close=True)
        data = self.rfile.read(length)
        if len(data) != length:
            return self._error(400, f"the upload ended after {len(data):,} of {length:,} bytes",
                               close=True)
        try:
            result = self.server.predictor.predict(data)
        except UploadError as error:
            return self._error(error.status, str(error))
        except Exception as error:  # a bug must not take the page down with it
            traceback.print_exc(file=sys.stderr)
            return self._error(500, f"the server failed on this image ({type(error).__name__}: "
                                    f"{error}); it keeps serving")
        self._json(200, result)

    def _not_allowed(self):
        self.send_response(405)
        body = json.dumps({"error": f"{self.command} is not supported here (GET the page, POST "
                                    f"images to /api/predict)", "status": 405}).encode()
        self.send_header("Allow", "GET, HEAD, POST")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def make_server(predictor: Predictor, host: str = "127.0.0.1", port: int = 8000,
                max_upload: int = DEFAULT_MAX_UPLOAD, quiet: bool = False) -> PageServer:
    """A PageServer bound to host:port (port 0: a free one); call serve_forever() to run it."""
    try:
        return PageServer((host, port), predictor, max_upload=max_upload, quiet=quiet)
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}; choose another "
                      f"--port (0 picks a free one)") from None


def serve(model_path, host: str = "127.0.0.1", port: int = 8000, top_k: int = 5,
          preprocess: str = "auto", max_upload: int = DEFAULT_MAX_UPLOAD) -> None:
    """Serve the page for a saved model until Ctrl-C."""
    predictor = Predictor(model_path, top_k=top_k, preprocess=preprocess)
    server = make_server(predictor, host, port, max_upload=max_upload)
    info = predictor.info()
    print(f"minivgg serve: {info['model']} ({info['dataset']}, {len(info['classes'])} classes, "
          f"{info['preprocess']} preprocessing) from {predictor.weights}")
    where = ("this machine only" if is_loopback(host)
             else "WARNING: reachable from other machines on the network")
    print(f"minivgg serve: open {server.url} (listening on {host}, {where}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("minivgg serve: stopped")
    finally:
        server.server_close()

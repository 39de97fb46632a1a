"""`minivgg serve`: a local page to draw a digit on or drop an image, with the model's answer."""
from .predictor import Predictor, UploadError
from .server import PageServer, make_server, serve

__all__ = ["Predictor", "UploadError", "PageServer", "make_server", "serve"]

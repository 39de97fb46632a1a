"""minivgg: small-image CNNs whose every layer is written from scratch on NumPy."""
from .autograd import Tensor, Function, no_grad, enable_grad, is_grad_enabled, as_tensor
from . import functional, init, nn, optim, data, models

__version__ = "0.1.0"

__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "as_tensor",
           "functional", "init", "nn", "optim", "data", "models", "__version__"]

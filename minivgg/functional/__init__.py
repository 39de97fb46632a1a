"""Hand-written differentiable operations, grouped by kind (like torch.nn.functional)."""
from .basic import add, sub, mul, div, matmul, reshape, flatten, sum, mean, linear  # noqa: A004
from .conv import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403

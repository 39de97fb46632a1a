"""Optimizers (SGD, Adam, AdamW, and Lookahead around any of them) and learning-rate schedules (see lr_scheduler)."""
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW
from .lookahead import Lookahead
from . import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Lookahead", "lr_scheduler"]

"""Trainer: the fit/evaluate loop with the tools people expect.

Epoch- or iteration-based training; evaluation on the test set (and an optional
validation split) each epoch; per-epoch log lines and history; early stopping; label
smoothing; gradient clipping; weight EMA; flip test-time augmentation; NaN/Inf detection;
Ctrl-C handling. Checkpointing is delegated to callbacks so the loop stays readable.

Determinism: shuffling is a function of (seed, epoch) and augmentation/dropout randomness
comes from generators whose state is saved in resume checkpoints, so a run interrupted at
any iteration and resumed ends with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import functional as F
from .autograd import Tensor, no_grad
from .optim import Lookahead
from .tta import tta_views, tta_weights


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C: a resume checkpoint was written (its path is in the message)."""


@dataclass
class LoopState:
    """Where the loop is; everything here is saved in resume checkpoints."""
    epoch: int = 0                 # epochs completed
    iteration: int = 0             # optimizer steps taken
    batch_in_epoch: int = 0        # batches of the current epoch already trained
    best_monitor: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    iter_log: list = field(default_factory=list)   # (iteration, loss, step_ms) for iteration runs
    epoch_loss_sum: float = 0.0
    epoch_correct: int = 0
    epoch_seen: int = 0
    epoch_time: float = 0.0
    stopped_early: bool = False
    restored_epoch: int = 0        # the epoch whose weights restore_best_weights put back

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "LoopState":
        state = cls()
        for key, value in d.items():
            if not hasattr(state, key):
                raise ValueError(f"resume checkpoint has an unknown loop field {key!r}")
            setattr(state, key, value)
        return state


class WeightEMA:
    """Exponential moving average of a model's parameters. Its buffers (BatchNorm running
    statistics) are not averaged: each update copies the live model's.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) so that early averages
    are not dominated by the random initialisation.
    """

    def __init__(self, model, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.model, self.decay, self.updates = model, decay, 0
        self.shadow = {k: v.copy() for k, v in model.state_dict().items()}
        self._params = dict(model.named_parameters())
        self._buffers = dict(model.named_buffers())

    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in self._params.items():
            s = self.shadow[name]
            s *= d
            s += (1 - d) * p.data
        for name, b in self._buffers.items():
            if b is not None and name in self.shadow:
                self.shadow[name][...] = b

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k][...] = v

    def swapped_in(self):
        """Context manager: the model holds the averaged weights inside the block."""
        ema = self

        class _Swap:
            def __enter__(self):
                self.saved = {k: v.copy() for k, v in ema.model.state_dict().items()}
                ema.model.load_state_dict(ema.shadow)

            def __exit__(self, *exc):
                ema.model.load_state_dict(self.saved)

        return _Swap()


def evaluate(model, images: np.ndarray, labels: np.ndarray, normalize=None, batch_size: int = 1000,
             tta_flip: bool = False, tta_shift: int = 0, tta_translate: int = 0) -> dict:
    """Loss, accuracy, predictions and per-image losses of `model` on uint8 NCHW images, in
    eval mode; with `tta_flip` / `tta_shift` / `tta_translate`, of the logits averaged over the
    views of minivgg.tta."""
    was_training = model.training
    model.eval()
    losses, predictions = [], []
    mean, std = _norm_arrays(normalize, images.shape[1])
    try:
        with no_grad():
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size].astype(np.float32) / 255.0
                y = labels[start:start + batch_size]
                logits = averaged_logits(model, x, mean, std, tta_flip, tta_shift, tta_translate)
                losses.append(F.cross_entropy(Tensor(logits), y, reduction="none").data)
                predictions.append(logits.argmax(axis=1))
    finally:
        model.train(was_training)
    predictions = np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)
    losses = np.concatenate(losses) if losses else np.zeros(0, dtype=np.float32)
    n = max(len(labels), 1)
    return {"loss": float(losses.sum(dtype=np.float64)) / n,
            "acc": float((predictions == labels).mean()) if len(labels) else 0.0,
            "predictions": predictions, "losses": losses}


def averaged_logits(model, x: np.ndarray, mean=None, std=None, tta_flip: bool = False,
                    tta_shift: int = 0, tta_translate: int = 0) -> np.ndarray:
    """The model's logits for float NCHW images `x` in pixel scale, normalised by the `mean` and
    `std` arrays (None: as they are), averaged over the test-time views of minivgg.tta with
    their weights. The caller puts the model in eval mode and turns gradients off."""
    views = tta_views(x, flip=tta_flip, shift=tta_shift, translate=tta_translate)
    weights = tta_weights(tta_flip, tta_shift, tta_translate)
    if mean is not None:
        views = [(v - mean) / std for v in views]
    if len(views) == 1 or len(set(weights.tolist())) == 1:
        return sum(model(Tensor(v)).data for v in views) / len(views)
    return sum(model(Tensor(v)).data * x.dtype.type(w) for v, w in zip(views, weights))


def _norm_arrays(normalize, channels):
    if normalize is None:
        return None, None
    mean, std = normalize
    shape = (1, channels, 1, 1)
    return (np.asarray(mean, np.float32).reshape(shape), np.asarray(std, np.float32).reshape(shape))


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Scale all gradients so that their global L2 norm is at most max_norm; returns the norm."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    if total > max_norm:
        scale = np.float32(max_norm / (total + 1e-6))
        for g in grads:
            g *= scale
    return total


class Trainer:
    """Runs the loop; knows nothing about files (callbacks do)."""

    def __init__(self, model, optimizer, train_loader, *, scheduler=None, schedule_per_batch=True,
                 test_data=None, val_data=None, normalize=None, epochs=None, iters=None,
                 label_smoothing=0.0, grad_clip=None, ema=None, tta_flip=False, tta_shift=0, patience=None,
                 restore_best_weights=None, log_every=100, eval_every=None, progress=None, log=print,
                 callbacks=(), tta_translate=0, tta_final_only=False,
                 train_epochs_of=None):
        if (epochs is None) == (iters is None):
            raise ValueError("give exactly one of epochs or iters")
        if epochs is not None and epochs < 1 or iters is not None and iters < 1:
            raise ValueError(f"epochs/iters must be at least 1, got epochs={epochs} iters={iters}")
        self.model, self.optimizer, self.loader = model, optimizer, train_loader
        self.scheduler, self.schedule_per_batch = scheduler, schedule_per_batch
        self.test_data, self.val_data, self.normalize = test_data, val_data, normalize
        self.epochs, self.iters = epochs, iters
        self.label_smoothing, self.grad_clip = label_smoothing, grad_clip
        self.tta_flip, self.tta_shift, self.tta_translate = tta_flip, tta_shift, tta_translate
        self.tta_final_only = tta_final_only
        # parameters trained in the first N epochs only, e.g. {"0.bias": 3}
        named = dict(model.named_parameters())
        unknown = sorted(set(train_epochs_of or {}) - set(named))
        if unknown:
            raise ValueError(f"train_epochs_of names {unknown}, which the model does not have")
        self.train_epochs_of = {named[k]: int(n) for k, n in (train_epochs_of or {}).items()}
        self.ema = WeightEMA(model, ema) if ema else None
        self.patience, self.log_every, self.eval_every = patience, log_every, eval_every
        # Keras' EarlyStopping(restore_best_weights=True): on by default when patience is set
        self.restore_best_weights = bool(patience) if restore_best_weights is None else restore_best_weights
        self.best_weights = None  # the evaluated weights of the best validation epoch
        self.last_test = None     # the latest test-set evaluation ({"acc", "loss", "predictions"})
        self.progress = progress_wanted() if progress is None else progress
        self.log, self.callbacks = log, list(callbacks)
        self.state = LoopState()
        self.parameters = [p for p in model.parameters() if p.requires_grad]

    # ---- the loop -------------------------------------------------------------------
    def fit(self) -> LoopState:
        st = self.state
        iteration_based = self.iters is not None
        total_epochs = math.ceil(self.iters / len(self.loader)) if iteration_based else self.epochs
        self.model.train()
        self.stop_requested = False
        self._notify("on_train_begin")
        with _deferred_interrupt(self):
            self._loop(total_epochs, iteration_based)
        self._restore_best()
        self._notify("on_train_end")
        return st

    def request_stop(self) -> None:
        """Stop after the current step, write a resume checkpoint and raise TrainingInterrupted."""
        self.stop_requested = True

    def _notify(self, hook: str, *args) -> None:
        """Call `hook` on every callback that has it: a callback need not subclass Callback, nor
        define hooks it does not use."""
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is not None:
                method(self, *args)

    def _loop(self, total_epochs: int, iteration_based: bool) -> None:
        from tqdm.auto import tqdm

        st = self.state
        while st.epoch < total_epochs and not st.stopped_early:
            if iteration_based and st.iteration >= self.iters:
                break
            self.loader.set_epoch(st.epoch)
            for param, epochs in self.train_epochs_of.items():
                param.requires_grad = st.epoch < epochs
                param.grad = None
            batches = len(self.loader)
            if iteration_based:
                batches = min(batches, self.iters - st.iteration + st.batch_in_epoch)
            bar = tqdm(total=batches, initial=st.batch_in_epoch, disable=not self.progress,
                       desc=f"epoch {st.epoch + 1}/{total_epochs}", leave=False, file=sys.stderr)
            if st.batch_in_epoch == 0:
                self._notify("on_epoch_begin", st.epoch)
            start = time.perf_counter()
            for index, (x, y) in enumerate(self.loader):
                if index < st.batch_in_epoch:
                    continue  # resuming mid-epoch: these batches were trained before
                if index >= batches:
                    break
                self._notify("on_batch_begin", index)
                loss, step_ms = self._step(x, y)
                self._notify("on_batch_end", index, {"loss": loss, "iteration": self.state.iteration,
                                                     "step_ms": step_ms})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if iteration_based:
                    self._log_iteration(loss, step_ms)
                if self.stop_requested:
                    st.epoch_time += time.perf_counter() - start
                    bar.close()
                    self._interrupt()
            st.epoch_time += time.perf_counter() - start
            bar.close()
            self._end_epoch()

    def _interrupt(self):
        self._notify("on_interrupt")
        st = self.state
        raise TrainingInterrupted(f"interrupted after iteration {st.iteration} "
                                  f"(epoch {st.epoch + 1}, batch {st.batch_in_epoch})")

    def _step(self, x: np.ndarray, y: np.ndarray):
        st = self.state
        t0 = time.perf_counter()
        logits = self.model(Tensor(x))
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        loss_value = float(loss.data)
        if not math.isfinite(loss_value):
            self._notify("on_diverged")
            raise TrainingDiverged(
                f"the training loss became {loss_value} at epoch {st.epoch + 1}, iteration "
                f"{st.iteration + 1}; training stopped. Try a lower --lr or --grad-clip.")
        self.optimizer.zero_grad()
        loss.backward()
        if self.grad_clip:
            clip_grad_norm(self.parameters, self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None and self.schedule_per_batch:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        step_ms = (time.perf_counter() - t0) * 1000
        st.iteration += 1
        st.batch_in_epoch += 1
        st.epoch_loss_sum += loss_value * len(y)
        st.epoch_correct += int((logits.data.argmax(axis=1) == y).sum())
        st.epoch_seen += len(y)
        return loss_value, step_ms

    def _log_iteration(self, loss: float, step_ms: float) -> None:
        st = self.state
        done = st.iteration - 1
        st.iter_log.append([done, loss, step_ms])  # every step for the plot; printed every log_every
        if done % self.log_every == 0:
            self.log(f"{done}/{self.iters}  loss {loss:.4f}  {step_ms:.2f} ms/step")
        if self.eval_every and st.iteration % self.eval_every == 0 and st.iteration < self.iters:
            result = self._evaluate(self.test_data)
            self.log(f"iteration {st.iteration}: test loss {result['loss']:.4f}  acc {result['acc']:.4f}")

    def _evaluate(self, data, final: bool = True):
        if data is None:
            return None
        images, labels = data
        tta = dict(tta_flip=self.tta_flip, tta_shift=self.tta_shift, tta_translate=self.tta_translate)
        if self.tta_final_only and not final:
            tta = {}
        if self.ema is not None:
            with self.ema.swapped_in():
                return evaluate(self.model, images, labels, self.normalize, **tta)
        return evaluate(self.model, images, labels, self.normalize, **tta)

    def _end_epoch(self) -> None:
        st = self.state
        if self.scheduler is not None and not self.schedule_per_batch:
            self.scheduler.step()
        total = self.epochs or math.ceil(self.iters / len(self.loader))
        final = st.epoch + 1 >= total or (self.iters is not None and st.iteration >= self.iters)
        if final and isinstance(self.optimizer, Lookahead):
            self.optimizer.reset_to_slow()
        val = self._evaluate(self.val_data, final)
        test = self._evaluate(self.test_data, final)
        record = {
            "epoch": st.epoch + 1, "iteration": st.iteration, "time": round(st.epoch_time, 3),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "train_loss": st.epoch_loss_sum / max(st.epoch_seen, 1),
            "train_acc": st.epoch_correct / max(st.epoch_seen, 1),
            "val_loss": val["loss"] if val else None, "val_acc": val["acc"] if val else None,
            "test_loss": test["loss"] if test else None, "test_acc": test["acc"] if test else None,
            "images_per_s": st.epoch_seen / st.epoch_time if st.epoch_time > 0 else None,
        }
        st.history.append(record)
        self.last_test = test
        self.log(format_epoch(record, self.epochs or math.ceil(self.iters / len(self.loader))))
        st.epoch += 1
        st.batch_in_epoch = 0
        st.epoch_loss_sum, st.epoch_correct, st.epoch_seen, st.epoch_time = 0.0, 0, 0, 0.0
        self._early_stopping(record)
        self._notify("on_epoch_end", record)

    def _early_stopping(self, record: dict) -> None:
        st = self.state
        monitor = record["val_loss"]  # never the test set: that would be tuning on it
        if monitor is None:
            return
        if monitor < st.best_monitor:
            st.best_monitor, st.best_epoch, st.bad_epochs = monitor, record["epoch"], 0
            if self.restore_best_weights:
                self.best_weights = {k: v.copy() for k, v in self.evaluated_weights().items()}
            return
        st.bad_epochs += 1
        self.log(f"validation loss has not improved since epoch {st.best_epoch} "
                 f"({st.best_monitor:.4f}); count {st.bad_epochs}"
                 + (f" of {self.patience}" if self.patience else ""))
        if self.patience and st.bad_epochs >= self.patience:
            st.stopped_early = True
            self.log(f"early stopping: no improvement for {self.patience} epochs")

    def evaluated_weights(self) -> dict:
        """The state_dict that evaluation scores: the EMA's when there is one."""
        return self.ema.shadow if self.ema is not None else self.model.state_dict()

    def _restore_best(self) -> None:
        """restore_best_weights: end with the weights of the best validation epoch (and score
        them on the test set) when a later epoch was worse."""
        st = self.state
        if not (self.restore_best_weights and self.best_weights) or st.best_epoch == st.epoch:
            return
        if self.ema is not None:
            self.ema.load_state_dict({"updates": self.ema.updates, "shadow": self.best_weights})
        self.model.load_state_dict(self.best_weights)
        st.restored_epoch = st.best_epoch
        self.log(f"restored the weights of epoch {st.best_epoch} (best validation loss "
                 f"{st.best_monitor:.4f}; restore_best_weights)")
        test = self._evaluate(self.test_data)
        if test is not None:
            self.last_test = test
            self.log(f"test loss {test['loss']:.4f}  acc {test['acc']:.4f} with the restored weights")

    # ---- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "best": self.best_weights,
            "loop": self.state.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {"loader": self.loader.state_dict(), "model": _module_rng_states(self.model)},
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.loader.load_state_dict(state["rng"]["loader"])
        _load_module_rng_states(self.model, state["rng"]["model"])
        self.state = LoopState.from_dict(state["loop"])
        self.best_weights = state.get("best")


@contextlib.contextmanager
def _deferred_interrupt(trainer):
    """The first Ctrl-C asks the loop to stop after the current step (so a checkpoint never
    holds half a step); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _module_rng_states(model) -> dict:
    """The bit-generator state of every stochastic module (dropout), by module name."""
    return {name: m.rng.bit_generator.state for name, m in model.named_modules()
            if isinstance(getattr(m, "rng", None), np.random.Generator)}


def _load_module_rng_states(model, states: dict) -> None:
    modules = dict(model.named_modules())
    for name, bg_state in states.items():
        if name not in modules or not hasattr(modules[name], "rng"):
            raise ValueError(f"resume checkpoint has RNG state for module {name!r}, "
                             f"which this model does not have")
        modules[name].rng.bit_generator.state = bg_state


def format_epoch(r: dict, total_epochs: int) -> str:
    parts = [f"Epoch {r['epoch']}/{total_epochs}", f"time {r['time']:.1f}s", f"lr {r['lr']:.3g}",
             f"train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}"]
    if r.get("val_loss") is not None:
        parts.append(f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}")
    if r.get("test_loss") is not None:
        parts.append(f"test loss {r['test_loss']:.4f} acc {r['test_acc']:.4f}")
    return "  ".join(parts)


def progress_wanted() -> bool:
    """Progress bars by default where someone watches: a terminal or a Jupyter kernel (tqdm.auto
    draws widgets there), not a log file."""
    if sys.stderr.isatty():
        return True
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class Callback:
    """Hooks the loop calls, as Keras' callbacks; override the ones you need. `batch` is the
    batch's index in its epoch; `logs` holds the batch's loss, the iteration count after
    it, and the step's milliseconds."""

    def on_train_begin(self, trainer): ...

    def on_epoch_begin(self, trainer, epoch): ...

    def on_batch_begin(self, trainer, batch): ...

    def on_batch_end(self, trainer, batch, logs): ...

    def on_epoch_end(self, trainer, record): ...

    def on_train_end(self, trainer): ...

    def on_interrupt(self, trainer): ...

    def on_diverged(self, trainer): ...

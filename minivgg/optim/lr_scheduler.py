"""Learning-rate schedules: each LR is a pure function of the step; the classes are thin wrappers.

The module-level functions (`step_lr`, `multi_step_lr`, `linear_lr`, `cosine_annealing_lr`,
`inverse_time_lr`, `one_cycle_lr`, `one_cycle_momentum`) give the LR at step `step`
(0, 1, 2, ...) and nothing else: use them to plot or inspect a schedule. The classes mirror torch.optim.lr_scheduler:
constructing one records `initial_lr` in each param group (if absent) and sets the LR of
step 0; each `step()` moves to the next step and writes its LR into the optimizer;
`get_last_lr()`, `last_epoch`, `state_dict()` / `load_state_dict()` (plain JSON-able dicts,
no pickled callables) behave like torch's.

Per batch or per epoch: a schedule counts calls to `step()`. Call it after every
`optimizer.step()` for a per-batch schedule (OneCycleLR is meant for that: size it with
total_steps = epochs * batches_per_epoch), or once per epoch for a per-epoch one; the
step_size / milestones / T_max / total_iters are then in those units.

Differences from torch, all deliberate:
- The LR is computed from the step in closed form, not by multiplying the previous LR,
  so schedules are not chainable (two schedulers on one optimizer overwrite each other;
  use SequentialLR to run one after another). Trajectories equal torch's to float64
  round-off (~1e-15 relative); torch's StepLR, MultiStepLR, LinearLR and
  CosineAnnealingLR use recursive forms that reach the same values.
- CosineAnnealingLR past T_max follows the same closed form, i.e. the LR climbs back
  towards base_lr along the cosine (period 2 * T_max) as torch's recursion also does;
  it is not clamped at eta_min.
- load_state_dict() also writes the restored step's LR (and momentum) into the optimizer,
  so the order in which optimizer and scheduler are restored does not matter.
- OneCycleLR raises a ValueError naming the problem where torch divides by zero (a phase
  of zero length, e.g. pct_start * total_steps == 1).
"""
from __future__ import annotations

import math
import numbers
from bisect import bisect_right

from .optimizer import Optimizer

ANNEAL_STRATEGIES = ("cos", "linear")


# ---- pure functions of the step ---------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_step(fn: str, step) -> None:
    if not _is_int(step) or step < 0:
        raise ValueError(f"{fn}: step must be an int >= 0, got {step!r}")


def _check_positive_int(fn: str, name: str, value) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return int(value)


def step_lr(step: int, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """base_lr decayed by gamma every step_size steps."""
    _check_step("step_lr", step)
    _check_positive_int("step_lr", "step_size", step_size)
    return base_lr * gamma ** (step // step_size)


def multi_step_lr(step: int, base_lr: float, milestones, gamma: float = 0.1) -> float:
    """base_lr decayed by gamma at each milestone reached (a repeated milestone counts twice)."""
    _check_step("multi_step_lr", step)
    return base_lr * gamma ** bisect_right(sorted(milestones), step)


def linear_lr(step: int, base_lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
              total_iters: int = 5) -> float:
    """base_lr times a factor going linearly from start_factor to end_factor over total_iters."""
    _check_step("linear_lr", step)
    _check_positive_int("linear_lr", "total_iters", total_iters)
    if not 0.0 < start_factor <= 1.0:
        raise ValueError(f"linear_lr: start_factor must be in (0, 1], got {start_factor}")
    if not 0.0 <= end_factor <= 1.0:
        raise ValueError(f"linear_lr: end_factor must be in [0, 1], got {end_factor}")
    progress = min(total_iters, step) / total_iters
    return base_lr * (start_factor + (end_factor - start_factor) * progress)


def cosine_annealing_lr(step: int, base_lr: float, T_max: int, eta_min: float = 0.0) -> float:
    """Half a cosine from base_lr (step 0) down to eta_min (step T_max); periodic beyond."""
    _check_step("cosine_annealing_lr", step)
    _check_positive_int("cosine_annealing_lr", "T_max", T_max)
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * step / T_max)) / 2


def inverse_time_lr(step: int, base_lr: float, decay: float) -> float:
    """Keras' classic per-iteration `decay`: base_lr / (1 + decay * step)."""
    _check_step("inverse_time_lr", step)
    if not decay >= 0:
        raise ValueError(f"inverse_time_lr: decay must be >= 0, got {decay}")
    return base_lr * (1.0 / (1.0 + decay * step))


def _anneal(start: float, end: float, pct: float, strategy: str) -> float:
    """From start (pct 0) to end (pct 1), along half a cosine or a straight line (torch's forms)."""
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _one_cycle_phase(step: int, total_steps: int, pct_start: float, three_phase: bool):
    """(phase index, fraction of the phase done) at `step`, with torch's phase boundaries."""
    _check_step("one_cycle", step)
    _check_positive_int("one_cycle", "total_steps", total_steps)
    if not 0.0 <= pct_start <= 1.0:
        raise ValueError(f"one_cycle: pct_start must be in [0, 1], got {pct_start}")
    if step > total_steps:
        raise ValueError(
            f"one_cycle: step {step} is past total_steps={total_steps}; size the "
            f"schedule for every optimizer step (total_steps = epochs * steps_per_epoch)")
    warmup_end = float(pct_start * total_steps) - 1
    if three_phase:
        ends = [warmup_end, float(2 * pct_start * total_steps) - 2, total_steps - 1]
    else:
        ends = [warmup_end, total_steps - 1]
    start = 0.0
    for phase, end in enumerate(ends):
        if step <= end or phase == len(ends) - 1:
            if end == start:
                raise ValueError(
                    f"one_cycle: phase {phase} of the schedule has zero length at step {step} "
                    f"(pct_start={pct_start}, total_steps={total_steps}); change pct_start so "
                    f"that pct_start * total_steps is not 1 (or total_steps)")
            return phase, (step - start) / (end - start)
        start = end


def _one_cycle_lr_range(max_lr: float, div_factor: float, final_div_factor: float):
    """(initial LR, final minimum LR) of a one-cycle schedule peaking at max_lr."""
    if not (div_factor > 0 and final_div_factor > 0):
        raise ValueError(
            f"one_cycle_lr: div_factor and final_div_factor must be > 0, got {div_factor} and "
            f"{final_div_factor}")
    initial_lr = max_lr / div_factor
    return initial_lr, initial_lr / final_div_factor


def one_cycle_lr(step: int, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False) -> float:
    """The 1cycle LR (torch's OneCycleLR): up from max_lr/div_factor to max_lr over pct_start
    of the steps, then down to max_lr/div_factor/final_div_factor (in three phases: back down
    to the initial LR symmetrically, then on down to the minimum)."""
    if anneal_strategy not in ANNEAL_STRATEGIES:
        raise ValueError(
            f"one_cycle_lr: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    phase, pct = _one_cycle_phase(step, total_steps, pct_start, three_phase)
    initial_lr, min_lr = _one_cycle_lr_range(max_lr, div_factor, final_div_factor)
    if three_phase:
        points = [(initial_lr, max_lr), (max_lr, initial_lr), (initial_lr, min_lr)]
    else:
        points = [(initial_lr, max_lr), (max_lr, min_lr)]
    return _anneal(*points[phase], pct, anneal_strategy)


def one_cycle_momentum(step: int, total_steps: int, pct_start: float = 0.3,
                       anneal_strategy: str = "cos", base_momentum: float = 0.85,
                       max_momentum: float = 0.95, three_phase: bool = False) -> float:
    """The momentum (SGD) or beta1 (Adam) that OneCycleLR pairs with one_cycle_lr: it moves
    opposite to the LR, from max_momentum down to base_momentum at the LR peak and back."""
    if anneal_strategy not in ANNEAL_STRATEGIES:
        raise ValueError(
            f"one_cycle_momentum: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    phase, pct = _one_cycle_phase(step, total_steps, pct_start, three_phase)
    if three_phase:
        points = [(max_momentum, base_momentum), (base_momentum, max_momentum),
                  (max_momentum, max_momentum)]
    else:
        points = [(max_momentum, base_momentum), (base_momentum, max_momentum)]
    return _anneal(*points[phase], pct, anneal_strategy)


# ---- stateful wrappers ------------------------------------------------------------------
def _per_group(name: str, optimizer: Optimizer, value) -> list:
    """One value per param group: a list of exactly that length, or one value for all."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"{name} has {len(value)} values but the optimizer has {n} param groups; give "
                f"one value per group or a single value")
        return [float(v) for v in value]
    return [float(value)] * n


class LRScheduler:
    """Base class: subclasses define `lrs_at(step)` (one LR per param group) and `_config()`
    (their hyper-parameters by attribute name, for state_dict)."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: {type(optimizer).__name__} is not a "
                            f"minivgg Optimizer")
        self.optimizer = optimizer
        self.base_lrs = self._start_lrs()
        self.lrs_at(0)  # validates the settings before anything in the optimizer changes
        self._install()
        self._set(0)

    def lrs_at(self, step: int) -> list:
        """The LR of each param group at `step` (pure: changes nothing)."""
        raise NotImplementedError

    def _config(self) -> dict:
        raise NotImplementedError

    def _start_lrs(self) -> list:
        """The LRs the schedule scales: each group's initial_lr, or its lr when it has none."""
        return [group.get("initial_lr", group["lr"]) for group in self.optimizer.param_groups]

    def _install(self) -> None:
        """Record what the schedule starts from in the param groups, as torch does."""
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group.setdefault("initial_lr", base_lr)

    def _set(self, step: int) -> None:
        lrs = self.lrs_at(step)  # may raise (OneCycleLR past its end): then nothing changes
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.last_epoch = step
        self._last_lr = list(lrs)

    def step(self) -> None:
        """Advance one step (one batch or one epoch: the caller's choice) and set its LR."""
        self._set(self.last_epoch + 1)

    def get_last_lr(self) -> list:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"type": type(self).__name__, "last_epoch": self.last_epoch,
                "base_lrs": list(self.base_lrs), **self._config()}

    def load_state_dict(self, state_dict: dict) -> None:
        name = f"{type(self).__name__}.load_state_dict"
        expected = set(self.state_dict())
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{name}: expected keys {sorted(expected)}, got {got}")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"{name}: the state was saved from a {state_dict['type']}")
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{name}: the state has {len(state_dict['base_lrs'])} base LRs but the "
                f"optimizer has {len(self.optimizer.param_groups)} param groups")
        self._restore(state_dict)
        self._install()
        self._set(int(state_dict["last_epoch"]))

    def _restore(self, state_dict: dict) -> None:
        self.base_lrs = [float(lr) for lr in state_dict["base_lrs"]]
        for key in self._config():
            value = state_dict[key]
            setattr(self, key, list(value) if isinstance(value, (list, tuple)) else value)


class StepLR(LRScheduler):
    """LR = base_lr * gamma ** (step // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = _check_positive_int("StepLR", "step_size", step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def lrs_at(self, step: int) -> list:
        return [step_lr(step, lr, self.step_size, self.gamma) for lr in self.base_lrs]

    def _config(self) -> dict:
        return {"step_size": self.step_size, "gamma": self.gamma}


class MultiStepLR(LRScheduler):
    """LR = base_lr * gamma ** (number of milestones <= step)."""

    def __init__(self, optimizer: Optimizer, milestones, gamma: float = 0.1):
        milestones = list(milestones)
        if not all(_is_int(m) and m >= 0 for m in milestones):
            raise ValueError(f"MultiStepLR: milestones must be ints >= 0, got {milestones}")
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def lrs_at(self, step: int) -> list:
        return [multi_step_lr(step, lr, self.milestones, self.gamma) for lr in self.base_lrs]

    def _config(self) -> dict:
        return {"milestones": list(self.milestones), "gamma": self.gamma}


class LinearLR(LRScheduler):
    """LR = base_lr * factor, the factor going linearly from start_factor to end_factor over
    total_iters steps, then staying there (a linear warm-up with the defaults)."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5):
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = _check_positive_int("LinearLR", "total_iters", total_iters)
        super().__init__(optimizer)

    def lrs_at(self, step: int) -> list:
        return [linear_lr(step, lr, self.start_factor, self.end_factor, self.total_iters)
                for lr in self.base_lrs]

    def _config(self) -> dict:
        return {"start_factor": self.start_factor, "end_factor": self.end_factor,
                "total_iters": self.total_iters}


class CosineAnnealingLR(LRScheduler):
    """LR = eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        self.T_max = _check_positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer)

    def lrs_at(self, step: int) -> list:
        return [cosine_annealing_lr(step, lr, self.T_max, self.eta_min) for lr in self.base_lrs]

    def _config(self) -> dict:
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class InverseTimeLR(LRScheduler):
    """LR = base_lr / (1 + decay * step): the `decay` argument of Keras' legacy optimizers,
    which counts batches, so step it once per batch to reproduce Keras recipes. (torch has
    no such class; LambdaLR with the same function gives the same values.)"""

    def __init__(self, optimizer: Optimizer, decay: float):
        self.decay = float(decay)
        super().__init__(optimizer)

    def lrs_at(self, step: int) -> list:
        return [inverse_time_lr(step, lr, self.decay) for lr in self.base_lrs]

    def _config(self) -> dict:
        return {"decay": self.decay}


class OneCycleLR(LRScheduler):
    """The 1cycle policy (torch's OneCycleLR), stepped once per batch; with cycle_momentum it
    also cycles SGD's momentum or Adam's beta1 opposite to the LR. Stepping past
    total_steps raises a ValueError."""

    def __init__(self, optimizer: Optimizer, max_lr, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum=0.85, max_momentum=0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"OneCycleLR: {type(optimizer).__name__} is not a minivgg Optimizer")
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(
                    "OneCycleLR: give total_steps, or both epochs and steps_per_epoch")
            total_steps = (_check_positive_int("OneCycleLR", "epochs", epochs)
                           * _check_positive_int("OneCycleLR", "steps_per_epoch", steps_per_epoch))
        self.total_steps = _check_positive_int("OneCycleLR", "total_steps", total_steps)
        self.pct_start = float(pct_start)
        self.anneal_strategy = anneal_strategy
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.three_phase = bool(three_phase)
        self.max_lrs = _per_group("OneCycleLR: max_lr", optimizer, max_lr)
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum and not ("momentum" in optimizer.defaults
                                        or "betas" in optimizer.defaults):
            raise ValueError(
                f"OneCycleLR: cycle_momentum=True needs an optimizer with momentum or betas, "
                f"got {type(optimizer).__name__}; pass cycle_momentum=False")
        self.base_momentums = _per_group("OneCycleLR: base_momentum", optimizer, base_momentum)
        self.max_momentums = _per_group("OneCycleLR: max_momentum", optimizer, max_momentum)
        super().__init__(optimizer)

    def lrs_at(self, step: int) -> list:
        return [one_cycle_lr(step, max_lr, self.total_steps, self.pct_start, self.anneal_strategy,
                             self.div_factor, self.final_div_factor, self.three_phase)
                for max_lr in self.max_lrs]

    def _start_lrs(self) -> list:
        return [_one_cycle_lr_range(max_lr, self.div_factor, self.final_div_factor)[0]
                for max_lr in self.max_lrs]

    def momentums_at(self, step: int) -> list:
        """The momentum (or beta1) of each param group at `step`."""
        return [one_cycle_momentum(step, self.total_steps, self.pct_start, self.anneal_strategy,
                                   base, top, self.three_phase)
                for base, top in zip(self.base_momentums, self.max_momentums)]

    def _install(self) -> None:
        groups = self.optimizer.param_groups
        for group, max_lr in zip(groups, self.max_lrs):
            initial_lr, min_lr = _one_cycle_lr_range(max_lr, self.div_factor, self.final_div_factor)
            group["initial_lr"] = initial_lr
            group["max_lr"] = max_lr
            group["min_lr"] = min_lr
        if self.cycle_momentum:
            for group, base, top in zip(groups, self.base_momentums, self.max_momentums):
                group["max_momentum"] = top
                group["base_momentum"] = base

    def _set(self, step: int) -> None:
        momentums = self.momentums_at(step) if self.cycle_momentum else None
        super()._set(step)
        if momentums is None:
            return
        use_beta1 = "betas" in self.optimizer.defaults
        for group, momentum in zip(self.optimizer.param_groups, momentums):
            if use_beta1:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum

    def _config(self) -> dict:
        return {"max_lrs": list(self.max_lrs), "total_steps": self.total_steps,
                "pct_start": self.pct_start, "anneal_strategy": self.anneal_strategy,
                "cycle_momentum": self.cycle_momentum,
                "base_momentums": list(self.base_momentums),
                "max_momentums": list(self.max_momentums), "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor, "three_phase": self.three_phase}


class SequentialLR(LRScheduler):
    """Runs `schedulers` one after another, switching at `milestones` (global steps): from
    milestone m on, the next scheduler runs from its own step 0, i.e. at step m + k it gives
    its LR of step k. Typical use: LinearLR warm-up, then CosineAnnealingLR."""

    def __init__(self, optimizer: Optimizer, schedulers, milestones):
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR: expects at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"SequentialLR: scheduler {i} is a {type(scheduler).__name__}, "
                                f"not a minivgg LRScheduler")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {i} ({type(scheduler).__name__}) "
                                 f"belongs to another optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR: needs one milestone fewer than schedulers, got "
                f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        if not all(_is_int(m) and m >= 0 for m in milestones):
            raise ValueError(f"SequentialLR: milestones must be ints >= 0, got {milestones}")
        milestones = [int(m) for m in milestones]
        if any(a >= b for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"SequentialLR: milestones must increase strictly, got {milestones}")
        self.schedulers = schedulers
        self.milestones = milestones
        super().__init__(optimizer)

    def _active(self, step: int):
        """(scheduler, its own step) that runs at global `step`."""
        index = bisect_right(self.milestones, step)
        start = self.milestones[index - 1] if index > 0 else 0
        return self.schedulers[index], step - start

    def lrs_at(self, step: int) -> list:
        scheduler, local_step = self._active(step)
        return scheduler.lrs_at(local_step)

    def _set(self, step: int) -> None:
        scheduler, local_step = self._active(step)
        scheduler._set(local_step)
        self.last_epoch = step
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def _restore(self, state_dict: dict) -> None:
        saved = state_dict["schedulers"]
        if len(saved) != len(self.schedulers):
            raise ValueError(
                f"SequentialLR.load_state_dict: the state has {len(saved)} schedulers, this "
                f"SequentialLR has {len(self.schedulers)}")
        for scheduler, state in zip(self.schedulers, saved):
            scheduler.load_state_dict(state)
        super()._restore(state_dict)

    def _config(self) -> dict:
        return {"milestones": list(self.milestones)}

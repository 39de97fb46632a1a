"""Trainer: exact resume, early stopping, divergence, clipping, EMA, iteration runs."""
import math

import numpy as np
import pytest

from minivgg import optim
from minivgg.data import DataLoader, RandomRotation
from minivgg.experiment import load_trainer_checkpoint, save_trainer_checkpoint
from minivgg.models import build
from minivgg.optim import lr_scheduler
from minivgg.train import (Callback, Trainer, TrainingDiverged, TrainingInterrupted, WeightEMA,
                           clip_grad_norm, evaluate)
from minivgg.autograd import Tensor

NORM = ((0.5,), (0.25,))


def _data(n=192, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    return images, labels


def _trainer(epochs=2, iters=None, callbacks=(), **kwargs):
    images, labels = _data()
    model = build("mnist_8k_b", in_channels=1, image_size=28, seed=0)  # has dropout and BN
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loader = DataLoader(images, labels, batch_size=32, seed=1, transform=RandomRotation(10),
                        normalize=NORM)
    total = iters or epochs * len(loader)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=total)
    test = _data(64, seed=9)
    return Trainer(model, opt, loader, scheduler=sched, test_data=test, normalize=NORM,
                   epochs=None if iters else epochs, iters=iters, ema=0.9, log=lambda line: None,
                   callbacks=callbacks, progress=False, **kwargs)


class StopAt:
    """A callback-free way to press Ctrl-C: ask the trainer to stop after step k."""

    def __init__(self, trainer, k):
        step = trainer.optimizer.step

        def wrapped(*a, **kw):
            step(*a, **kw)
            if trainer.state.iteration + 1 == k:
                trainer.request_stop()

        trainer.optimizer.step = wrapped


@pytest.mark.parametrize("stop_at", [4, 6, 9])  # mid-epoch, at an epoch boundary, in epoch 2
def test_interrupted_then_resumed_run_ends_with_identical_weights(tmp_path, stop_at):
    reference = _trainer()
    reference.fit()

    interrupted = _trainer()
    StopAt(interrupted, stop_at)
    with pytest.raises(TrainingInterrupted, match=f"after iteration {stop_at}"):
        interrupted.fit()
    path = tmp_path / "last.resume.safetensors"
    save_trainer_checkpoint(path, interrupted, {"recipe": {"name": "test"}})

    resumed = _trainer()  # fresh objects: everything must come from the file
    state, metadata = load_trainer_checkpoint(path)
    assert metadata["recipe"]["name"] == "test"
    resumed.load_state_dict(state)
    assert resumed.state.iteration == stop_at
    resumed.fit()

    ref_state, res_state = reference.model.state_dict(), resumed.model.state_dict()
    for key in ref_state:
        np.testing.assert_array_equal(res_state[key], ref_state[key], err_msg=key)
    for key, value in reference.ema.shadow.items():
        np.testing.assert_array_equal(resumed.ema.shadow[key], value, err_msg=f"ema {key}")
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in h]
    assert strip(resumed.state.history) == strip(reference.state.history)


def test_same_seed_same_run():
    a, b = _trainer(epochs=1), _trainer(epochs=1)
    a.fit(), b.fit()
    assert a.state.history[0]["train_loss"] == b.state.history[0]["train_loss"]


def test_iteration_based_run_stops_exactly_and_logs():
    lines = []
    t = _trainer(iters=7)
    t.log = lines.append
    t.log_every = 3
    t.fit()
    assert t.state.iteration == 7
    logged = [line for line in lines if "ms/step" in line]
    assert [line.split()[0] for line in logged] == ["0/7", "3/7", "6/7"]
    assert len(t.state.iter_log) == 7
    assert len(t.state.history) == 2  # 6 batches per epoch: one full epoch and one partial


def test_early_stopping_uses_validation_loss_and_says_so():
    images, labels = _data(64)
    model = build("vgg_v1", in_channels=1, image_size=28, seed=0)  # no BN: nothing moves
    opt = optim.SGD(model.parameters(), lr=0.0)
    loader = DataLoader(images, labels, batch_size=32, seed=0, normalize=NORM)
    lines = []
    t = Trainer(model, opt, loader, val_data=_data(32, 3), normalize=NORM, epochs=10, patience=2,
                log=lines.append, progress=False)
    t.fit()
    assert t.state.stopped_early
    assert t.state.epoch < 10
    assert any("validation loss has not improved since" in line for line in lines)
    assert any("early stopping" in line for line in lines)


def test_nan_loss_stops_with_a_clear_message():
    t = _trainer(epochs=1)
    for p in t.model.parameters():
        p.data[...] = np.nan
    with pytest.raises(TrainingDiverged, match="loss became nan.*lower --lr"):
        t.fit()


def test_clip_grad_norm_scales_to_max_norm():
    params = [Tensor(np.zeros(3, np.float32), requires_grad=True) for _ in range(2)]
    params[0].grad = np.array([3, 0, 0], np.float32)
    params[1].grad = np.array([0, 4, 0], np.float32)
    total = clip_grad_norm(params, 1.0)
    assert total == pytest.approx(5.0)
    norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    assert norm == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm(params, 10.0) == pytest.approx(1.0, rel=1e-5)  # below: unchanged


def test_ema_averages_and_swaps_back():
    model = build("mnist_5k", in_channels=1, image_size=28, seed=0)
    ema = WeightEMA(model, 0.5)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.data += 1.0
    ema.update()  # warm-up decay min(0.5, 2/11) = 2/11
    d = 2 / 11
    key = "0.weight"
    np.testing.assert_allclose(ema.shadow[key], d * before[key] + (1 - d) * (before[key] + 1), rtol=1e-6)
    with ema.swapped_in():
        np.testing.assert_array_equal(model.state_dict()[key], ema.shadow[key])
    np.testing.assert_array_equal(model.state_dict()[key], before[key] + 1)


def test_evaluate_restores_training_mode_and_counts():
    model = build("mnist_5k", in_channels=1, image_size=28, seed=0)
    images, labels = _data(50)
    result = evaluate(model, images, labels, NORM, batch_size=16)
    assert model.training
    assert result["predictions"].shape == (50,)
    assert result["acc"] == pytest.approx(float((result["predictions"] == labels).mean()))


def test_trainer_rejects_bad_lengths():
    images, labels = _data(32)
    model = build("mnist_5k", in_channels=1, image_size=28)
    loader = DataLoader(images, labels, batch_size=8)
    with pytest.raises(ValueError, match="exactly one of epochs or iters"):
        Trainer(model, optim.SGD(model.parameters(), lr=0.1), loader, epochs=2, iters=5)
    with pytest.raises(ValueError, match="at least 1"):
        Trainer(model, optim.SGD(model.parameters(), lr=0.1), loader, epochs=0)


def test_recipe_validation_names_what_is_wrong():
    from minivgg.experiment import validate_recipe
    from minivgg.models import get_recipe
    validate_recipe(get_recipe("mnist_5k").override(augment_epochs=10))
    with pytest.raises(ValueError, match=r"augment_epochs must be 0 or more.*got -1"):
        validate_recipe(get_recipe("mnist_5k").override(augment_epochs=-1))
    with pytest.raises(ValueError, match=r"epochs must be at least 1"):
        validate_recipe(get_recipe("mnist_5k").override(epochs=0))


class _Sabotage(Callback):
    """After epoch 1, remember the weights and make the net confidently wrong, so that the
    validation loss of epoch 2 is far worse than epoch 1's."""

    def __init__(self):
        self.saved = None

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == 1:
            self.saved = {k: v.copy() for k, v in trainer.model.state_dict().items()}
            last = [m for m in trainer.model.modules() if hasattr(m, "out_features")][-1]
            last.weight.data *= 50.0


def _sabotaged_run(tmp_path=None, **kwargs):
    images, labels = _data(64)
    model = build("vgg_v1", in_channels=1, image_size=28, seed=0)  # no BN: lr 0 moves nothing
    opt = optim.SGD(model.parameters(), lr=0.0)
    loader = DataLoader(images, labels, batch_size=32, seed=0, normalize=NORM)
    sabotage, lines = _Sabotage(), []
    t = Trainer(model, opt, loader, val_data=_data(32, 3), test_data=_data(32, 4), normalize=NORM,
                epochs=5, patience=1, log=lines.append, progress=False, callbacks=[sabotage], **kwargs)
    t.fit()
    return t, sabotage, lines


def test_early_stopping_restores_the_best_weights_by_default():
    t, sabotage, lines = _sabotaged_run()
    assert t.state.stopped_early and t.state.epoch == 2 and t.state.restored_epoch == 1
    for key, value in t.model.state_dict().items():
        np.testing.assert_array_equal(value, sabotage.saved[key])
    assert any("restored the weights of epoch 1" in line for line in lines)
    assert t.last_test["loss"] < t.state.history[-1]["test_loss"]  # the test score is the restored one's


def test_restore_best_weights_can_be_turned_off():
    t, sabotage, _ = _sabotaged_run(restore_best_weights=False)
    assert t.state.stopped_early and t.state.restored_epoch == 0
    last = [k for k in sabotage.saved if k.endswith("weight")][-1]
    np.testing.assert_allclose(t.model.state_dict()[last], sabotage.saved[last] * 50.0)


def test_best_weights_survive_a_resume_checkpoint(tmp_path):
    t, _, _ = _sabotaged_run()
    save_trainer_checkpoint(tmp_path / "r.safetensors", t, {"recipe": {}})
    state, _ = load_trainer_checkpoint(tmp_path / "r.safetensors")
    for key, value in t.best_weights.items():
        np.testing.assert_array_equal(state["best"][key], value)


def test_batch_and_epoch_hooks_are_called_in_order():
    calls = []

    class Record(Callback):
        def on_epoch_begin(self, trainer, epoch):
            calls.append(("epoch", epoch))

        def on_batch_begin(self, trainer, batch):
            calls.append(("begin", batch))

        def on_batch_end(self, trainer, batch, logs):
            assert math.isfinite(logs["loss"]) and logs["step_ms"] >= 0
            calls.append(("end", batch, logs["iteration"]))

    images, labels = _data(64)
    model = build("vgg_v1", in_channels=1, image_size=28, seed=0)
    loader = DataLoader(images, labels, batch_size=32, seed=0, normalize=NORM)
    Trainer(model, optim.SGD(model.parameters(), lr=0.01), loader, epochs=2, log=lambda line: None,
            progress=False, callbacks=[Record()]).fit()
    assert calls == [("epoch", 0), ("begin", 0), ("end", 0, 1), ("begin", 1), ("end", 1, 2),
                     ("epoch", 1), ("begin", 0), ("end", 0, 3), ("begin", 1), ("end", 1, 4)]

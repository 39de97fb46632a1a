"""The airbench94 recipe's glue: its schedule, parameter groups, Lookahead, the whitening
bias trained for the first epochs only, an exact resume, and the recipe round trips."""
import json

import numpy as np
import pytest

from minivgg.cli import main
from minivgg.experiment import (load_trainer_checkpoint, make_scheduler, make_trainer, param_groups,
                                save_trainer_checkpoint, make_optimizer, validate_recipe)
from minivgg.models import Recipe, build, get_recipe
from minivgg.optim import Lookahead
from minivgg.train import TrainingInterrupted
from minivgg.whitening import patch_whitening_weights


def _airbench_triangle(steps, start, end, peak):
    """airbench94's `triangle` LR multiplier, step by step."""
    xp, fp = [0, int(peak * steps), steps], [start, 1, end]
    return np.interp(np.arange(steps + 1), xp, fp)


def test_triangle_schedule_is_airbenchs():
    recipe = get_recipe("airbench94")
    model = build("airbench94", widths=(8, 8, 8))
    optimizer = make_optimizer(recipe, param_groups(recipe, model))
    scheduler, per_batch = make_scheduler(recipe, optimizer, steps_per_epoch=48)
    assert per_batch
    expected = _airbench_triangle(480, 0.2, 0.07, 0.23)
    for step in range(481):
        lrs = [g["lr"] for g in optimizer.param_groups]
        np.testing.assert_allclose(lrs, [1.5 * expected[step], 96 * expected[step]], rtol=1e-9)
        if step < 480:
            scheduler.step()
    with pytest.raises(ValueError, match="peak"):
        make_scheduler(recipe.override(pct_start=0.0), optimizer, 48)


def test_param_groups_scale_the_norm_lr_and_keep_the_decay_per_step():
    recipe = get_recipe("airbench94")
    model = build("airbench94", widths=(8, 8, 8))
    others, norms = param_groups(recipe, model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in norms["params"]) == sorted(
        n for n, p in model.named_parameters() if n.endswith(".bias") and n != "0.bias")
    assert all(p.requires_grad for p in others["params"] + norms["params"])
    assert "0.bias" in [names[id(p)] for p in others["params"]]
    assert norms["lr"] == recipe.lr * 64
    assert norms["lr"] * norms["weight_decay"] == pytest.approx(recipe.lr * recipe.weight_decay)
    assert param_groups(recipe.override(norm_lr_scale=1.0), model) == list(model.parameters())


def _data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)


# 4 steps an epoch; Lookahead from step 4 every 5 steps: syncs at steps 5 and 10, so epoch 2
# ends 3 fast steps after a sync and the run ends 2 fast steps after one.
SMALL = dict(batch_size=16, epochs=3, lookahead=5, lookahead_start=1, whiten_images=32,
             train_epochs_of=(("0.bias", 1),))


def _trainer(recipe, callbacks=()):
    return make_trainer(recipe, _data(64, 0), _data(16, 1), model_options={"widths": (8, 16, 16)},
                        progress=False, log=lambda line: None, callbacks=callbacks)


class Watch:
    """Records the whitening bias, and whether the weights equal Lookahead's slow ones at each
    epoch's end and at the end of training."""

    def __init__(self):
        self.biases, self.on_slow = [], []

    def _on_slow(self, trainer):
        slow = trainer.optimizer.slow
        if slow is None:
            return None
        arrays = [p.data for g in trainer.optimizer.param_groups for p in g["params"]]
        return all(np.array_equal(a, s) for a, s in zip(arrays, slow))

    def on_epoch_end(self, trainer, record):
        self.biases.append(trainer.model[0].bias.data.copy())
        self.on_slow.append(self._on_slow(trainer))

    def on_train_end(self, trainer):
        self.on_slow.append(self._on_slow(trainer))


def test_pieces_work_together_in_a_short_run():
    recipe = get_recipe("airbench94").override(**SMALL)
    watch = Watch()
    trainer = _trainer(recipe, callbacks=[watch])
    assert isinstance(trainer.optimizer, Lookahead)
    train_images = _data(64, 0)[0][:32].astype(np.float32) / 255
    mean = np.array(trainer.normalize[0], np.float32)[:, None, None]
    std = np.array(trainer.normalize[1], np.float32)[:, None, None]
    np.testing.assert_allclose(trainer.model[0].weight.data,
                               patch_whitening_weights((train_images - mean) / std), rtol=1e-4, atol=1e-6)
    before = trainer.model[0].bias.data.copy()
    trainer.fit()
    assert len(trainer.state.history) == 3
    assert trainer.model[2].out_channels == 8
    assert not np.array_equal(watch.biases[0], before), "trained in the first epoch"
    np.testing.assert_array_equal(watch.biases[2], watch.biases[0])  # frozen afterwards
    # as airbench: no slow weights before the first sync, the fast steps since the last sync
    # kept at an epoch's end (not thrown away), and the run ending on the slow weights
    assert watch.on_slow == [None, False, True, True]
    assert trainer.state.history[-1]["test_acc"] is not None


def test_an_interrupted_run_resumes_exactly(tmp_path):
    recipe = get_recipe("airbench94").override(**SMALL)
    reference = _trainer(recipe)
    reference.fit()
    interrupted = _trainer(recipe)
    step = interrupted.optimizer.step

    def stop_after_six(*a, **kw):
        step(*a, **kw)
        if interrupted.state.iteration + 1 == 6:
            interrupted.request_stop()

    interrupted.optimizer.step = stop_after_six
    with pytest.raises(TrainingInterrupted):
        interrupted.fit()
    path = tmp_path / "last.resume.safetensors"
    save_trainer_checkpoint(path, interrupted, {"recipe": recipe.to_dict()})
    state, metadata = load_trainer_checkpoint(path)
    resumed = _trainer(Recipe.from_dict(metadata["recipe"]))
    resumed.load_state_dict(state)
    resumed.fit()
    ref, res = reference.model.state_dict(), resumed.model.state_dict()
    for key in ref:
        np.testing.assert_array_equal(res[key], ref[key], err_msg=key)


def test_recipe_round_trips_and_is_listed(capsys):
    recipe = get_recipe("airbench94")
    validate_recipe(recipe)
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe
    assert main(["recipes", "airbench94"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model"] == "airbench94" and shown["lookahead"] == 5
    assert shown["train_epochs_of"] == [["0.bias", 3]]
    for bad, match in [(dict(tta_shift=1), "not both"), (dict(norm_lr_scale=0.0), "norm_lr_scale"),
                       (dict(end_factor=2.0), "triangle"), (dict(lookahead=-1), "lookahead")]:
        with pytest.raises(ValueError, match=match):
            validate_recipe(recipe.override(**bad))


def test_tta_only_for_the_final_score(monkeypatch):
    import minivgg.train as train_module
    calls = []
    real = train_module.evaluate

    def recording(*args, **kwargs):
        calls.append(kwargs.get("tta_flip", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", recording)
    recipe = get_recipe("airbench94").override(**dict(SMALL, epochs=2, lookahead=0))
    _trainer(recipe).fit()
    assert calls == [False, True]   # epoch 1 plain, the final epoch with the recipe's TTA

"""summary(): leaf rows in execution order, shapes, parameter counts, totals, errors;
count_flops(): each layer's multiply-adds, equal to the speed benchmark's numbers."""
import numpy as np
import pytest

from minivgg import nn
from minivgg.autograd import Tensor
from minivgg.data import get_dataset_info
from minivgg.models import MODELS, build
from minivgg.summary import count_flops, summarize, summary

MB = 1024.0 ** 2


def small_net():
    # input (1, 12, 12)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),   # (4, 12, 12)   4*1*3*3 + 4 = 40
        nn.BatchNorm2d(4),               # (4, 12, 12)   4 + 4 = 8 (running stats are buffers)
        nn.ReLU(),                       # (4, 12, 12)
        nn.MaxPool2d(2),                 # (4, 6, 6)
        nn.Conv2d(4, 8, 3),              # (8, 4, 4)     8*4*3*3 + 8 = 296
        nn.ReLU(),                       # (8, 4, 4)
        nn.Flatten(),                    # (128,)
        nn.Linear(128, 10),              # (10,)         128*10 + 10 = 1290
    )


EXPECTED_ROWS = [
    ("Conv2d-1", "0", (-1, 4, 12, 12), 40),
    ("BatchNorm2d-2", "1", (-1, 4, 12, 12), 8),
    ("ReLU-3", "2", (-1, 4, 12, 12), 0),
    ("MaxPool2d-4", "3", (-1, 4, 6, 6), 0),
    ("Conv2d-5", "4", (-1, 8, 4, 4), 296),
    ("ReLU-6", "5", (-1, 8, 4, 4), 0),
    ("Flatten-7", "6", (-1, 128), 0),
    ("Linear-8", "7", (-1, 10), 1290),
]


def test_rows_shapes_and_counts():
    result = summarize(small_net(), (1, 12, 12))
    got = [(r.layer, r.name, r.output_shape, r.num_params) for r in result.rows]
    assert got == EXPECTED_ROWS
    assert result.total_params == 1634
    assert result.trainable_params == 1634
    assert result.non_trainable_params == 0
    outputs = 3 * 4 * 12 * 12 + 4 * 6 * 6 + 2 * 8 * 4 * 4 + 128 + 10
    assert result.input_size_mb == pytest.approx(144 * 4 / MB)
    assert result.forward_backward_size_mb == pytest.approx(2 * outputs * 4 / MB)
    assert result.params_size_mb == pytest.approx(1634 * 4 / MB)
    assert result.total_size_mb == pytest.approx(
        result.input_size_mb + result.forward_backward_size_mb + result.params_size_mb)


def test_table_text_matches_torchsummary_layout():
    text = summary(small_net(), (1, 12, 12))
    lines = text.splitlines()
    assert lines[0] == "-" * 64
    assert lines[1] == f"{'Layer (type)':>20}  {'Output Shape':>25} {'Param #':>15}"
    assert lines[2] == "=" * 64
    assert lines[3] == f"{'Conv2d-1':>20}  {'[-1, 4, 12, 12]':>25} {'40':>15}"
    assert lines[10] == f"{'Linear-8':>20}  {'[-1, 10]':>25} {'1,290':>15}"
    assert "Total params: 1,634" in lines
    assert "Trainable params: 1,634" in lines
    assert "Non-trainable params: 0" in lines
    assert any(line.startswith("Estimated Total Size (MB): ") for line in lines)
    assert str(summarize(small_net(), (1, 12, 12))) == text


def test_batch_size_is_shown_and_scales_estimates():
    one = summarize(small_net(), (1, 12, 12))
    many = summarize(small_net(), (1, 12, 12), batch_size=64)
    assert many.rows[0].output_shape == (64, 4, 12, 12)
    assert many.input_size_mb == pytest.approx(64 * one.input_size_mb)
    assert many.forward_backward_size_mb == pytest.approx(64 * one.forward_backward_size_mb)
    assert many.params_size_mb == one.params_size_mb


def test_frozen_parameters_are_non_trainable():
    model = small_net()
    model[0].requires_grad_(False)
    model[7].bias.requires_grad = False
    result = summarize(model, (1, 12, 12))
    assert result.total_params == 1634
    assert result.non_trainable_params == 40 + 10
    assert result.trainable_params == 1634 - 50
    assert result.rows[0].trainable_params == 0 and result.rows[0].num_params == 40
    assert "Non-trainable params: 50" in summary(model, (1, 12, 12)).splitlines()


def test_state_is_restored():
    model = small_net()
    model.train()
    model[1].eval()  # one layer's own mode must survive, not just the model's
    running_mean = model[1].running_mean.copy()
    summarize(model, (1, 12, 12))
    assert model.training and not model[1].training and model[4].training
    assert all("forward" not in vars(m) for m in model.modules())
    assert not any(m.has_hooks() for m in model.modules())
    np.testing.assert_array_equal(model[1].running_mean, running_mean)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("shape, layer", [
    ((3, 12, 12), "Conv2d-1"),   # wrong channel count
    ((1, 4, 4), "Conv2d-5"),     # 2x2 after pooling: smaller than the 3x3 kernel
    ((1, 16, 16), "Linear-8"),   # flattens to 288 features, Linear wants 128
])
def test_bad_input_shape_names_shape_and_layer(shape, layer):
    model = small_net()
    model.train()
    with pytest.raises(ValueError) as info:
        summarize(model, shape)
    message = str(info.value)
    assert str(shape) in message and layer in message
    # hooks are removed and modes restored after a failure too
    assert all("forward" not in vars(m) for m in model.modules())
    assert not any(m.has_hooks() for m in model.modules())
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("bad", [(), (0, 28, 28), (1.5, 28), "abc", None])
def test_bad_input_shape_argument(bad):
    with pytest.raises(ValueError, match="input_shape"):
        summarize(small_net(), bad)


def test_bad_batch_size_and_model():
    with pytest.raises(ValueError, match="batch_size"):
        summarize(small_net(), (1, 12, 12), batch_size=0)
    with pytest.raises(TypeError, match="Module"):
        summarize(object(), (1, 12, 12))


class TwoHeads(nn.Module):
    """A custom module: a shared layer called twice, a tuple output, an own parameter."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 6)
        self.act = nn.ReLU()
        self.head = nn.Linear(6, 3)
        self.scale = nn.Parameter(np.ones(3, dtype=np.float32))

    def forward(self, x):
        h = self.act(self.body(x))
        h = self.act(self.body(h))
        return self.head(h), h


def test_custom_module_calls_shared_layers_and_tuple_output():
    result = summarize(TwoHeads(), (6,))
    got = [(r.layer, r.name, r.output_shape) for r in result.rows]
    assert got == [("Linear-1", "body", (-1, 6)), ("ReLU-2", "act", (-1, 6)),
                   ("Linear-3", "body", (-1, 6)), ("ReLU-4", "act", (-1, 6)),
                   ("Linear-5", "head", (-1, 3))]
    # totals count each parameter once, including one held by the container itself
    assert result.total_params == 42 + 21 + 3


def test_leaf_model_and_multi_output_row():
    result = summarize(nn.Linear(5, 2), (5,))
    assert [(r.layer, r.name, r.output_shape, r.num_params) for r in result.rows] == [
        ("Linear-1", "", (-1, 2), 12)]

    class Split(nn.Module):
        def forward(self, x):
            return Tensor(x.data[:, :2]), Tensor(x.data[:, 2:])

    row = summarize(Split(), (5,)).rows[0]
    assert row.output_shape == [(-1, 2), (-1, 3)]
    assert "[-1, 2], [-1, 3]" in summary(Split(), (5,))


TORCHSUMMARY_MODEL_1 = """\
----------------------------------------------------------------
        Layer (type)               Output Shape         Param #
================================================================
            Conv2d-1           [-1, 10, 26, 26]             100
              ReLU-2           [-1, 10, 26, 26]               0
       BatchNorm2d-3           [-1, 10, 26, 26]              20
            Conv2d-4            [-1, 8, 24, 24]             728
              ReLU-5            [-1, 8, 24, 24]               0
       BatchNorm2d-6            [-1, 8, 24, 24]              16
            Conv2d-7           [-1, 10, 22, 22]             730
              ReLU-8           [-1, 10, 22, 22]               0
       BatchNorm2d-9           [-1, 10, 22, 22]              20
        MaxPool2d-10           [-1, 10, 11, 11]               0
          Dropout-11           [-1, 10, 11, 11]               0
           Conv2d-12              [-1, 8, 9, 9]             728
             ReLU-13              [-1, 8, 9, 9]               0
      BatchNorm2d-14              [-1, 8, 9, 9]              16
           Conv2d-15             [-1, 10, 7, 7]             730
           Conv2d-16             [-1, 10, 1, 1]           4,910
================================================================
Total params: 7,998
Trainable params: 7,998
Non-trainable params: 0
----------------------------------------------------------------"""


def test_reproduces_a_real_torchsummary_table():
    # an 8k-parameter MNIST net and the table torchsummary printed for it
    model = nn.Sequential(
        nn.Conv2d(1, 10, 3), nn.ReLU(), nn.BatchNorm2d(10),
        nn.Conv2d(10, 8, 3), nn.ReLU(), nn.BatchNorm2d(8),
        nn.Conv2d(8, 10, 3), nn.ReLU(), nn.BatchNorm2d(10),
        nn.MaxPool2d(2), nn.Dropout(0.1),
        nn.Conv2d(10, 8, 3), nn.ReLU(), nn.BatchNorm2d(8),
        nn.Conv2d(8, 10, 3), nn.Conv2d(10, 10, 7))
    text = summary(model, (1, 28, 28))
    assert text.startswith(TORCHSUMMARY_MODEL_1 + "\n")


# ---- count_flops ------------------------------------------------------------------------------

def test_count_flops_tiny_model_by_hand():
    # conv: output 2x6x6 = 72 values, each 1*3*3 = 9 MACs -> 648 MACs; pool -> 2x3x3 = 18
    # features; linear 18 -> 4: 72 MACs. The conv is first: no input gradient.
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Sequential(nn.Flatten(), nn.Linear(18, 4)))
    model[1].eval()
    flops = count_flops(model, (1, 8, 8))
    assert flops["layers"] == [
        {"layer": "Conv2d", "output": [2, 6, 6], "macs": 648, "input_grad": False},
        {"layer": "Linear", "output": [4], "macs": 72, "input_grad": True}]
    assert flops["forward"] == 2 * (648 + 72)
    # backward: conv weight grad only (2*648), linear weight and input grads (2 * 2*72)
    assert flops["train"] == 2 * (648 + 72) + 2 * 648 + 4 * 72
    assert model.training and not model[1].training  # each layer's mode restored
    assert not any(m.has_hooks() for m in model.modules())


def test_count_flops_strided_padded_conv_batchnorm1d_and_a_custom_module():
    class Block(nn.Module):  # not a Sequential: its layers are seen through hooks all the same
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(100, 8)
            self.bn = nn.BatchNorm1d(8)

        def forward(self, x):
            return self.bn(self.fc(x))

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), Block(), nn.Linear(8, 2))
    flops = count_flops(model, (3, 5, 5))
    assert [layer["macs"] for layer in flops["layers"]] == [4 * 25 * 27, 800, 16]


def test_count_flops_bad_input_names_itself():
    with pytest.raises(ValueError, match="count_flops: input_shape"):
        count_flops(small_net(), (0, 12, 12))
    with pytest.raises(ValueError, match=r"count_flops: Sequential failed .* Conv2d-1"):
        count_flops(small_net(), (3, 12, 12))


# FLOPs per image (forward, training step) and each counted layer's MACs, for every zoo model
# on its default dataset's image size, as benchmarks/speed.py's own count_flops gave them
# before it called this one; its tables were computed with these.
ZOO_FLOPS = {
    "vgg_v1": ((1, 28, 28), 2398720, 6274560, [460800, 663552, 73728, 1280]),
    "vgg_v2": ((1, 28, 28), 2398720, 6274560, [460800, 663552, 73728, 1280]),
    "minivggnet": ((3, 32, 32), 53159936, 157710336,
                   [884736, 9437184, 4718592, 9437184, 2097152, 5120]),
    "minivggnet_light": ((3, 32, 32), 53159936, 157710336,
                         [884736, 9437184, 4718592, 9437184, 2097152, 5120]),
    "mnist_8k_a": ((1, 28, 28), 1845080, 5413560, [60840, 414720, 348480, 58320, 35280, 4900]),
    "mnist_8k_b": ((1, 28, 28), 4545240, 13392360,
                   [121680, 1036800, 871200, 145800, 44100, 52920, 120]),
    "mnist_5k": ((1, 28, 28), 1255920, 3694752, [36504, 373248, 129600, 82944, 5184, 480]),
    "mnist_7k": ((1, 28, 28), 1747968, 5146560, [48672, 497664, 172800, 147456, 6912, 480]),
    "mnist_20k": ((1, 28, 28), 2343984, 6934608,
                  [48672, 663552, 23040, 144000, 147456, 82944, 62208, 120]),
    "lenet5": ((1, 28, 28), 833040, 2263920, [117600, 240000, 48000, 10080, 840]),
    "minivgg_fashion": ((1, 28, 28), 38189056, 114115584,
                        [225792, 7225344, 3612672, 7225344, 802816, 2560]),
    "minivgg_fashion_light": ((1, 28, 28), 38189056, 114115584,
                              [225792, 7225344, 3612672, 7225344, 802816, 2560]),
    "airbench94": ((3, 32, 32), 236294720, 708330624,
                   [276768, 13284864, 8294400, 33177600, 28901376, 28901376, 5308416, 2560]),
}


def test_zoo_table_covers_the_zoo():
    assert set(ZOO_FLOPS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(ZOO_FLOPS))
def test_count_flops_of_every_zoo_model_equals_the_speed_benchmarks(name):
    shape, forward, train, macs = ZOO_FLOPS[name]
    assert tuple(get_dataset_info(MODELS[name].default_dataset).shape) == shape
    flops = count_flops(build(name, seed=0), shape)
    assert (flops["forward"], flops["train"]) == (forward, train)
    assert [layer["macs"] for layer in flops["layers"]] == macs

"""init.dirac_ against torch.nn.init.dirac_, whole and partial (a slice of the filters)."""
import numpy as np
import pytest

from minivgg import init
from minivgg.nn import Parameter


@pytest.mark.parametrize("shape, groups", [((6, 6, 3, 3), 1), ((8, 4, 3, 3), 1), ((4, 8, 3, 3), 1),
                                           ((8, 2, 3, 3), 2), ((5, 5, 2, 2), 1), ((4, 4, 3), 1),
                                           ((6, 3, 3, 3, 3), 3)])
def test_dirac_matches_torch(torch, shape, groups):
    ours = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    theirs = torch.from_numpy(ours.copy())
    init.dirac_(ours, groups)
    torch.nn.init.dirac_(theirs, groups)
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_partial_dirac_sets_only_the_sliced_filters(torch):
    weight = Parameter(np.random.default_rng(1).standard_normal((16, 4, 3, 3)).astype(np.float32))
    before = weight.data.copy()
    init.dirac_(weight.data[:4])
    reference = torch.from_numpy(before.copy())
    torch.nn.init.dirac_(reference[:4])
    np.testing.assert_array_equal(weight.data, reference.numpy())
    np.testing.assert_array_equal(weight.data[4:], before[4:])
    # the first 4 output channels of a 'same' conv are its input, exactly
    x = np.random.default_rng(2).standard_normal((2, 4, 5, 5)).astype(np.float32)
    out = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight.data), padding=1)
    np.testing.assert_array_equal(out.numpy()[:, :4], x)


@pytest.mark.parametrize("shape, groups, match", [((4, 4), 1, "3-, 4- or 5-dimensional"),
                                                  ((6, 3, 3, 3), 4, "groups must be"),
                                                  ((6, 3, 3, 3), 0, "groups must be")])
def test_dirac_refuses_bad_weights(shape, groups, match):
    with pytest.raises(ValueError, match=match):
        init.dirac_(np.zeros(shape, np.float32), groups)

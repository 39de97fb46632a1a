"""Patch whitening: its weights decorrelate patches, equal an independent torch computation,
and init_patch_whitening_ freezes the layer."""
import numpy as np
import pytest

import minivgg
from minivgg import functional as F, nn
from minivgg.whitening import init_patch_whitening_, patch_covariance, patch_whitening_weights


def _images(n=64, c=3, size=12, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, c, size, size))
    # neighbouring pixels and channels correlated, as in photographs
    smooth = base + np.roll(base, 1, axis=3) + np.roll(base, 1, axis=2) + base.mean(axis=1, keepdims=True)
    return smooth.astype(np.float32)


def test_covariance_equals_unfolded_patches(torch):
    x = _images(8, size=6)
    patches = torch.from_numpy(x).double().unfold(2, 2, 1).unfold(3, 2, 1)   # (N, C, i, j, 2, 2)
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    np.testing.assert_allclose(patch_covariance(x, 2), (flat.T @ flat / len(flat)).numpy(), rtol=1e-12)


@pytest.mark.parametrize("kernel", [1, 2, 3])
def test_filters_whiten_the_patches(kernel):
    x = _images()
    weights = patch_whitening_weights(x.astype(np.float64), kernel, eps=1e-12)
    half = weights[:len(weights) // 2].reshape(len(weights) // 2, -1)
    np.testing.assert_array_equal(weights[len(weights) // 2:], -weights[:len(weights) // 2])
    whitened = half @ patch_covariance(x, kernel) @ half.T
    np.testing.assert_allclose(whitened, np.eye(len(half)), atol=1e-6)


def test_filters_come_largest_eigenvalue_first_and_match_torch_eigh(torch):
    x = _images()
    ours = patch_whitening_weights(x, 2, eps=5e-4).reshape(24, -1)
    cov = torch.from_numpy(patch_covariance(x, 2))
    values, vectors = torch.linalg.eigh(cov)
    theirs = (vectors.T.flip(0) / torch.sqrt(values.flip(0) + 5e-4)[:, None]).numpy()
    # eigenvectors are defined up to sign
    signs = np.sign(np.sum(ours[:12] * theirs, axis=1))
    np.testing.assert_allclose(ours[:12], theirs * signs[:, None], rtol=1e-4, atol=1e-5)
    norms = np.linalg.norm(ours[:12], axis=1)
    assert np.all(np.diff(norms) >= 0), "filters of larger eigenvalues have smaller norms"


def test_init_sets_and_freezes_the_weight_but_not_the_bias():
    conv = nn.Conv2d(3, 24, 2, rng=0)
    x = _images()
    init_patch_whitening_(conv, x)
    np.testing.assert_array_equal(conv.weight.data, patch_whitening_weights(x, 2))
    assert not conv.weight.requires_grad and conv.bias.requires_grad
    out = conv(minivgg.Tensor(x))
    F.sum(out).backward()
    assert conv.weight.grad is None and conv.bias.grad is not None


@pytest.mark.parametrize("conv, images, match", [
    (nn.Conv2d(3, 16, 2), _images(4), "2\\*C\\*k\\*k outputs"),
    (nn.Conv2d(3, 24, (2, 1)), _images(4), "square"),
    (nn.Conv2d(1, 8, 2), _images(4), "expected images"),
    (nn.Linear(3, 24), _images(4), None),
])
def test_bad_layers_and_images_are_refused(conv, images, match):
    with pytest.raises((ValueError, TypeError), match=match):
        init_patch_whitening_(conv, images)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="float images"):
        patch_covariance(np.zeros((2, 3, 8, 8), np.uint8), 2)
    with pytest.raises(ValueError, match="kernel_size"):
        patch_covariance(np.zeros((2, 3, 4, 4), np.float32), 5)

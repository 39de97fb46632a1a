"""Batch transforms do what they must: exact geometry, torchvision's conventions,
per-sample randomness, reproducibility from the Generator, and clear errors."""
import math

import numpy as np
import pytest

from minivgg.data import (ChecksumWarning, Compose, Cutout, Normalize, RandomAffine, RandomCrop,
                          RandomErasing, RandomHorizontalFlip, RandomRotation, affine, rotate)


def batch(n=4, c=1, h=8, w=8, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(dtype)


def rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------- exact geometry

@pytest.mark.parametrize("h,w", [(8, 8), (7, 7), (28, 28)])
@pytest.mark.parametrize("angle,k", [(90, 1), (-90, -1), (180, 2), (270, 3)])
def test_rotation_by_multiples_of_90_is_rot90(h, w, angle, k):
    x = batch(3, 2, h, w)
    np.testing.assert_allclose(rotate(x, angle), np.rot90(x, k, axes=(2, 3)), atol=1e-6)


def test_random_rotation_is_counter_clockwise_like_torchvision():
    x = batch(5, 1, 9, 9)
    out = RandomRotation(degrees=(90, 90))(x, rng())
    np.testing.assert_allclose(out, np.rot90(x, 1, axes=(2, 3)), atol=1e-6)


def test_affine_angle_is_clockwise_like_torchvision():
    x = batch(2, 1, 6, 6)
    np.testing.assert_allclose(affine(x, angle=90), np.rot90(x, -1, axes=(2, 3)), atol=1e-6)


def test_zero_affine_is_identity():
    x = batch(4, 3, 10, 12)
    np.testing.assert_array_equal(affine(x), x)
    out = RandomAffine(degrees=0, translate=(0, 0), scale=(1, 1), shear=0)(x, rng())
    np.testing.assert_array_equal(out, x)


def test_integer_translation_is_a_shift_with_fill():
    x = batch(2, 1, 6, 7)
    out = affine(x, translate=(2, 1), fill=0.5)  # 2 right, 1 down
    expected = np.full_like(x, 0.5)
    expected[:, :, 1:, 2:] = x[:, :, :-1, :-2]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_per_sample_parameters_and_per_channel_fill():
    x = batch(2, 3, 8, 8)
    out = affine(x, angle=[90, 0], translate=[[0, 0], [0, 8]], fill=(0.1, 0.2, 0.3))
    np.testing.assert_allclose(out[0], np.rot90(x[0], -1, axes=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(out[1], np.broadcast_to(np.array([0.1, 0.2, 0.3])[:, None, None],
                                                       (3, 8, 8)), atol=1e-6)


def test_a_batch_is_warped_as_its_images_one_by_one():
    """Batches are warped in blocks; blocks and their edges must not change any image."""
    x = batch(75, 3, 10, 12)
    draw = np.random.default_rng(5)
    angle, scale = draw.uniform(-40, 40, 75), draw.uniform(0.7, 1.3, 75)
    translate, shear = draw.uniform(-3, 3, (75, 2)), draw.uniform(-15, 15, (75, 2))
    whole = affine(x, angle, translate, scale, shear, fill=(0.1, 0.2, 0.3))
    for i in range(75):
        one = affine(x[i:i + 1], angle[i], translate[i], scale[i], shear[i], fill=(0.1, 0.2, 0.3))
        np.testing.assert_allclose(whole[i:i + 1], one, atol=1e-6)
    assert whole.flags.c_contiguous and whole.dtype == x.dtype


def test_scale_zooms_about_the_centre():
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 4, 4] = 1.0  # the centre pixel stays put under any scale
    x[0, 0, 4, 6] = 1.0  # 2 right of centre goes 4 right under scale 2
    out = affine(x, scale=2.0)
    assert out[0, 0, 4, 4] == pytest.approx(1.0) and out[0, 0, 4, 8] == pytest.approx(1.0)


def torchvision_affine(torch, img, angle, translate, scale, shear, fill):
    """torchvision.transforms.functional.affine's tensor path, written out with torch ops
    (torchvision itself is not installable here): _get_inverse_affine_matrix,
    _gen_affine_grid, grid_sample and the mask-blended fill of _apply_grid_transform."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [v / scale for v in (d, -b, 0.0, -c, a, 0.0)]
    m[2] += m[0] * -translate[0] + m[1] * -translate[1]
    m[5] += m[3] * -translate[0] + m[4] * -translate[1]
    theta = torch.tensor(m, dtype=torch.float64).reshape(1, 2, 3)
    _, channels, h, w = img.shape
    base = torch.empty(1, h, w, 3, dtype=torch.float64)
    base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w))
    base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h).unsqueeze(-1))
    base[..., 2].fill_(1)
    grid = base.view(1, h * w, 3).bmm(theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h],
                                                                           dtype=torch.float64))
    img = torch.cat([img, torch.ones(1, 1, h, w, dtype=img.dtype)], 1)
    out = torch.nn.functional.grid_sample(img, grid.view(1, h, w, 2), mode="bilinear",
                                          padding_mode="zeros", align_corners=False)
    mask, out = out[:, -1:], out[:, :-1]
    fill = torch.tensor(fill, dtype=img.dtype).reshape(1, -1, 1, 1)
    return out * mask + (1 - mask) * fill


@pytest.mark.parametrize("params", [
    (30.0, (1.0, -2.0), 1.2, (10.0, -5.0), (0.3,)),
    (-73.0, (0.0, 3.0), 0.8, (0.0, 20.0), (0.0,)),
    (12.5, (-2.0, 0.0), 1.0, (-25.0, 0.0), (1.0,)),
])
def test_affine_matches_torchvision_formula(torch, params):
    x = batch(3, 2, 9, 11, dtype=np.float64)
    angle, translate, scale, shear, fill = params
    expected = np.concatenate([torchvision_affine(torch, torch.from_numpy(x[i:i + 1]), angle,
                                                  translate, scale, shear, fill).numpy()
                               for i in range(len(x))])
    np.testing.assert_allclose(affine(x, angle, translate, scale, shear, fill[0]), expected,
                               atol=1e-10)


# --------------------------------------------------------------------------- flips, crops

def test_flips_are_exact():
    x = batch(6, 3, 5, 7)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x, rng()), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x, rng()), x)
    out = RandomHorizontalFlip(p=0.5)(batch(200, 1, 2, 3), rng())
    flipped = [np.array_equal(o, i[..., ::-1]) for o, i in zip(out, batch(200, 1, 2, 3))]
    assert 60 < sum(flipped) < 140  # each sample decides for itself


def test_random_crop_takes_windows_of_the_padded_image():
    x = batch(50, 3, 8, 8)
    out = RandomCrop(8, padding=2)(x, rng(1))
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for o, p in zip(out, padded):
        hits = [(i, j) for i in range(5) for j in range(5)
                if np.array_equal(o, p[:, i:i + 8, j:j + 8])]
        assert hits, "a crop is not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 10
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_random_crop_without_padding_and_full_size_is_identity():
    x = batch(3, 1, 6, 6)
    np.testing.assert_array_equal(RandomCrop(6)(x, rng()), x)
    assert RandomCrop((4, 5))(x, rng()).shape == (3, 1, 4, 5)


def test_random_crop_asymmetric_padding_and_fill():
    x = np.ones((4, 1, 2, 2), np.float32)
    out = RandomCrop((2, 2), padding=(1, 0, 0, 0), fill=-1.0)(x, rng())  # left only
    assert out.shape == (4, 1, 2, 2)
    assert set(np.unique(out)) <= {-1.0, 1.0}


# --------------------------------------------------------------------------- erasing

def test_random_erasing_erases_one_rectangle_in_bounds():
    x = np.ones((100, 3, 32, 32), np.float32)
    out = RandomErasing(p=1.0, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)(x, rng(2))
    for o in out:
        rows, cols = np.nonzero(o[0] == 0)
        assert rows.size, "p=1 must erase (a fitting box always exists for these ranges)"
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == rows.size  # one filled rectangle
        assert 0.02 * 1024 * 0.9 <= rows.size <= 0.33 * 1024 * 1.1
        assert np.array_equal(o[0] == 0, o[2] == 0)  # all channels alike


def test_random_erasing_values():
    x = np.ones((20, 3, 16, 16), np.float32)
    assert np.array_equal(RandomErasing(p=0.0)(x, rng()), x)
    out = RandomErasing(p=1.0, value=(0.1, 0.2, 0.3))(x, rng())
    erased = out[:, 0] != 1
    assert np.allclose(out[:, 1][erased], 0.2)
    noisy = RandomErasing(p=1.0, value="random")(x, rng())
    assert noisy.dtype == np.float32 and noisy.std() > 0.1


def test_cutout_square_clipped_at_borders():
    x = np.ones((300, 1, 12, 12), np.float32)
    out = Cutout(4)(x, rng(3))
    sizes = (out == 0).sum(axis=(1, 2, 3))
    assert sizes.max() == 16 and sizes.min() >= 4  # clipped at a corner: 2x2
    assert np.all((out == 0) | (out == 1))
    assert np.array_equal(Cutout(4, p=0.0)(x, rng()), x)


# ----------------------------------------------------- randomness and reproducibility

ALL = [RandomCrop(8, padding=2), RandomHorizontalFlip(), RandomRotation(30),
       RandomAffine(20, translate=(0.2, 0.2), scale=(0.8, 1.2), shear=(-10, 10, -5, 5)),
       RandomErasing(p=1.0), Cutout(3)]


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_same_seed_same_batch_and_input_untouched(t):
    x = batch(16, 3, 8, 8)
    before = x.copy()
    a, b, c = t(x, rng(7)), t(x, rng(7)), t(x, rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(x, before)
    assert a.dtype == np.float32 and a.shape == x.shape


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_float64_is_kept(t):
    assert t(batch(2, 3, 8, 8, dtype=np.float64), rng()).dtype == np.float64


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_each_sample_gets_its_own_parameters(t):
    x = np.repeat(batch(1, 3, 8, 8), 12, axis=0)
    out = t(x, rng(4))
    outcomes = 2 if isinstance(t, RandomHorizontalFlip) else 4  # a flip has only two
    assert len({o.tobytes() for o in out}) >= outcomes


def test_random_affine_parameters_follow_torchvision_ranges():
    t = RandomAffine(degrees=10, translate=(0.1, 0.2), scale=(0.9, 1.1), shear=(-5, 5, 1, 2))
    p = t.sample(5000, height=28, width=30, rng=rng())
    assert -10 <= p["angle"].min() and p["angle"].max() <= 10
    assert np.all(p["translate"] == np.round(p["translate"]))  # whole pixels
    assert np.abs(p["translate"][:, 0]).max() == 3 and np.abs(p["translate"][:, 1]).max() == 6
    assert 0.9 <= p["scale"].min() and p["scale"].max() <= 1.1
    assert -5 <= p["shear"][:, 0].min() and p["shear"][:, 0].max() <= 5
    assert 1 <= p["shear"][:, 1].min() and p["shear"][:, 1].max() <= 2
    q = RandomAffine(degrees=(5, 6), shear=3).sample(100, 8, 8, rng())
    assert q["angle"].min() >= 5 and np.all(q["shear"][:, 1] == 0)
    assert np.all(q["translate"] == 0) and np.all(q["scale"] == 1)


def test_compose_and_normalize():
    x = batch(4, 3, 8, 8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    out = Normalize(mean, std)(x)
    expected = (x - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert out.dtype == np.float32
    t = Compose([RandomHorizontalFlip(p=1.0), Normalize(mean, std)])
    np.testing.assert_allclose(t(x, rng()), expected[..., ::-1], rtol=1e-6, atol=1e-6)
    assert "RandomHorizontalFlip" in repr(t)


# ---------------------------------------------------------------------------- errors

def test_bad_batches_are_named():
    with pytest.raises(ValueError, match=r"RandomAffine.*uint8 \(2, 1, 4, 4\)"):
        RandomAffine(10)(np.zeros((2, 1, 4, 4), np.uint8), rng())
    with pytest.raises(ValueError, match=r"RandomCrop.*\(4, 4\)"):
        RandomCrop(2)(np.zeros((4, 4), np.float32), rng())
    with pytest.raises(ValueError, match="Normalize.*3 channels"):
        Normalize((0.5,), (0.5,))(batch(1, 3))
    with pytest.raises(ValueError, match=r"RandomCrop: crop 12x12 is larger than the padded "
                                         r"image 10x10"):
        RandomCrop(12, padding=1)(batch(1, 1, 8, 8), rng())
    with pytest.raises(TypeError, match="RandomHorizontalFlip.*Generator"):
        RandomHorizontalFlip()(batch(), 0)
    with pytest.raises(ValueError, match="fill"):
        affine(batch(1, 3), angle=10, fill=(0.1, 0.2))


@pytest.mark.parametrize("make", [
    lambda: RandomAffine(-5), lambda: RandomAffine((10, 5)),
    lambda: RandomAffine(5, translate=(2, 0)), lambda: RandomAffine(5, scale=(0, 1)),
    lambda: RandomAffine(5, shear=(1, 2, 3)), lambda: RandomRotation(-1),
    lambda: RandomCrop(8, padding=-1), lambda: RandomCrop(8, padding=(1, 2, 3)),
    lambda: RandomHorizontalFlip(p=2), lambda: RandomErasing(p=-0.1),
    lambda: RandomErasing(scale=(0.5, 0.1)), lambda: Cutout(0), lambda: Normalize((0.5,), (0.0,)),
    lambda: Normalize((0.5, 0.5), (1.0,)),
])
def test_bad_options_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_bad_affine_arguments():
    with pytest.raises(ValueError, match="scale must be positive"):
        affine(batch(), scale=0)
    with pytest.raises(ValueError, match="degenerate"):
        affine(batch(), scale=1e-300, shear=(90, 0))
    with pytest.raises(ValueError, match="one entry per sample"):
        affine(batch(4), angle=[1, 2, 3])
    with pytest.raises(ValueError, match="value"):
        RandomErasing(p=1.0, value="noise")(batch(), rng())


# -------------------------------------------------------------------- preview figure

def test_preview_command_saves_a_figure(monkeypatch, tmp_path, capsys):
    import dataclasses
    import synthetic
    from minivgg.data import preview
    from minivgg.data.registry import DATASETS
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], num_train=12,
                                                               num_test=4))
    synthetic.write_dataset("mnist", tmp_path / "data", 12, 4)
    out = tmp_path / "figs" / "augment_mnist.png"
    with pytest.warns(ChecksumWarning):  # synthetic files are not the official ones
        code = preview.main(["--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
                             "--out", str(out), "--samples", "4"])
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["augment_mnist.png"]
    assert preview.main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "none")]) == 1
    assert "cifar-10-binary.tar.gz" in capsys.readouterr().err


# ------------------------------------------------ airbench's translate and alternating flip

@pytest.mark.parametrize("mode", ["reflect", "edge", "symmetric"])
def test_random_crop_padding_modes_crop_torch_padded_windows(torch, mode):
    x = batch(12, 3, 8, 8, seed=3)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "symmetric": None}[mode]
    if torch_mode is None:
        padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="symmetric")
    else:
        padded = torch.nn.functional.pad(torch.from_numpy(x), (2, 2, 2, 2), mode=torch_mode).numpy()
    out = RandomCrop(8, padding=2, padding_mode=mode)(x, rng(1))
    offsets = set()
    for image, source in zip(out, padded):
        found = [(i, j) for i in range(5) for j in range(5)
                 if np.array_equal(image, source[:, i:i + 8, j:j + 8])]
        assert found, "each output is a window of the padded image"
        offsets.add(found[0])
    assert len(offsets) > 3


def test_reflect_padding_must_be_smaller_than_the_image():
    with pytest.raises(ValueError, match="reflect padding must be smaller"):
        RandomCrop(4, padding=4, padding_mode="reflect")(batch(1, 1, 4, 4), rng())
    with pytest.raises(ValueError, match="padding_mode"):
        RandomCrop(4, padding_mode="wrap")


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    from minivgg.data.transforms import AlternatingFlip
    x = batch(64, 3, 6, 6, seed=4)
    indices = np.arange(100, 164)
    t = AlternatingFlip()
    flipped = [np.array([np.array_equal(o, i[..., ::-1]) for o, i in zip(t(x, rng(e), indices=indices,
                                                                          epoch=e, seed=7), x)])
               for e in range(4)]
    assert np.all(flipped[0] != flipped[1]) and np.array_equal(flipped[0], flipped[2])
    assert np.array_equal(flipped[1], flipped[3])
    assert 16 < flipped[0].sum() < 48
    other_seed = t(x, rng(), indices=indices, epoch=0, seed=8)
    assert not np.array_equal(other_seed, t(x, rng(), indices=indices, epoch=0, seed=7))
    with pytest.raises(ValueError, match="needs each image's dataset index"):
        t(x, rng())


def test_loader_passes_indices_and_epochs_through_compose():
    from minivgg.data import DataLoader
    from minivgg.data.transforms import AlternatingFlip
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 5, 5), dtype=np.uint8)
    labels = np.arange(40)   # each label names its image
    loader = DataLoader(images, labels, batch_size=16, seed=3,
                        transform=Compose([AlternatingFlip(), Normalize((0.0,), (1.0,))]))
    seen = {}
    for epoch in range(2):
        for x, y in loader:
            for image, label in zip(x, y):
                mirrored = np.array_equal(image, images[label, :, :, ::-1] / np.float32(255))
                seen.setdefault(int(label), []).append(mirrored)
    assert all(len(v) == 2 and v[0] != v[1] for v in seen.values())

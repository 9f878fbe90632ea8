"""Tests for the batched on-device augmentation."""

import pytest
import torch
import torch.nn.functional as F

from spmi import augment as A
from spmi.augment import Augmenter


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 16, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, h, w), generator=gen(seed), dtype=torch.uint8)


def unit(b: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return images(b, c, h, w, seed).float() / 255.0


def per_sample(v: float, n: int) -> torch.Tensor:
    return torch.full((n,), float(v))


# ----------------------------------------------------------------------- front end


@pytest.mark.parametrize("policy", [None, *sorted(A.POLICIES)])
def test_output_dtype_shape(policy: str | None) -> None:
    aug = Augmenter([0.4, 0.5, 0.6], [0.2, 0.25, 0.3], policy)
    x = images()
    for out in (aug.weak(x, gen()), aug.strong(x, gen()), aug.plain(x)):
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert torch.isfinite(out).all()


def test_plain_and_normalisation() -> None:
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    aug = Augmenter(mean, std, None)
    x = images()
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(aug.plain(x), ref)
    const = torch.full((4, 3, 8, 8), 100, dtype=torch.uint8)
    torch.testing.assert_close(aug.weak(const, gen()), aug.plain(const))


def reference_flip_crop(
    x: torch.Tensor, flip: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, pad: int
) -> torch.Tensor:
    out = []
    h, w = x.shape[2:]
    for b in range(x.shape[0]):
        img = x[b].float()
        if flip[b]:
            img = img.flip(-1)
        padded = F.pad(img[None], (pad, pad, pad, pad), mode="reflect")[0]
        out.append(padded[:, int(oy[b]) : int(oy[b]) + h, int(ox[b]) : int(ox[b]) + w])
    return torch.stack(out)


@pytest.mark.parametrize(("c", "size"), [(1, 28), (3, 32)])
def test_weak_matches_loop_reference(c: int, size: int) -> None:
    aug = Augmenter([0.0] * c, [1.0] * c, None)
    x = images(64, c, size, size)
    out = aug.weak(x, gen(3))
    flip, oy, ox = A.draw_flip_crop(64, 4, gen(3), x.device)
    assert flip.any() and (~flip).any()
    assert ((oy >= 0) & (oy <= 8) & (ox >= 0) & (ox <= 8)).all()
    assert len(set((oy - 4).tolist())) > 5  # offsets spread over [-4, 4]
    torch.testing.assert_close(out, reference_flip_crop(x, flip, oy, ox, 4) / 255.0, rtol=0, atol=1e-6)


def test_flip_only_rows_are_original_or_mirrored() -> None:
    aug = Augmenter([0.0] * 3, [1.0] * 3, None, padding=0)
    x = images(32)
    out = aug.weak(x, gen(1)) * 255
    orig = (out.round() == x.float()).flatten(1).all(1)
    mirr = (out.round() == x.float().flip(-1)).flatten(1).all(1)
    assert (orig | mirr).all() and orig.any() and mirr.any()
    flip, _, _ = A.draw_flip_crop(32, 0, gen(1), x.device)
    assert torch.equal(mirr, flip)


def test_reflect_padding_on_ramp() -> None:
    ramp = torch.arange(8, dtype=torch.uint8).repeat(8, 1)[None, None]  # value = column
    flip = torch.tensor([False])
    out = A.flip_crop(ramp, flip, torch.tensor([0]), torch.tensor([0]), 4)
    assert out[0, 0, 0].tolist() == [4, 3, 2, 1, 0, 1, 2, 3]
    out = A.flip_crop(ramp, flip, torch.tensor([8]), torch.tensor([8]), 4)
    assert out[0, 0, 0].tolist() == [4, 5, 6, 7, 6, 5, 4, 3]


def test_independent_draws_per_sample() -> None:
    x = images(1).expand(32, -1, -1, -1).contiguous()
    for policy in (None, "cifar10"):
        aug = Augmenter([0.5] * 3, [0.5] * 3, policy)
        for view in (aug.weak, aug.strong):
            out = view(x, gen()).flatten(1)
            assert len({tuple(r.tolist()) for r in out}) > 16


@pytest.mark.parametrize("policy", [None, *sorted(A.POLICIES)])
def test_determinism(policy: str | None) -> None:
    aug = Augmenter([0.5] * 3, [0.5] * 3, policy)
    x = images(64)
    assert torch.equal(aug.strong(x, gen(7)), aug.strong(x, gen(7)))
    assert torch.equal(aug.weak(x, gen(7)), aug.weak(x, gen(7)))
    assert not torch.equal(aug.strong(x, gen(7)), aug.strong(x, gen(8)))


# -------------------------------------------------------------------------- cutout


def assert_one_hole(img: torch.Tensor, size: int = 8) -> None:
    zero = (img == 0).all(0)  # [H, W]
    rows = zero.any(1).nonzero().flatten()
    cols = zero.any(0).nonzero().flatten()
    assert 0 < len(rows) <= size and 0 < len(cols) <= size
    assert len(rows) >= size // 2 and len(cols) >= size // 2
    box = zero[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert box.all() and zero.sum() == box.numel()


def test_cutout_single_clipped_square() -> None:
    x = torch.ones(256, 3, 28, 28)
    out = A.cutout(x, gen(), 8)
    for img in out:
        assert_one_hole(img)
    cy, cx = A.draw_cutout(256, 28, 28, gen(), x.device)
    hole = (out == 0).all(1).flatten(1).sum(1)
    assert hole.max() == 64 and hole.min() < 64  # interior holes full, border ones clipped
    assert torch.equal(A.cutout_at(x, cy, cx, 8), out)


def test_strong_cutout_before_normalisation() -> None:
    aug = Augmenter([0.5], [0.5], None)
    x = torch.full((32, 1, 28, 28), 255, dtype=torch.uint8)
    out = aug.strong(x, gen())
    assert set(out.unique().tolist()) == {-1.0, 1.0}  # hole 0 -> -1, rest 1 -> 1
    for img in out:
        assert_one_hole(img + 1)


# --------------------------------------------------------------------- pixel ops


def test_invert_solarize_posterize() -> None:
    x = unit()
    torch.testing.assert_close(A.invert(x), 1 - x)
    s = A.solarize(x, per_sample(128, 8))
    torch.testing.assert_close(s, torch.where(x * 255 >= 127.5, 1 - x, x))
    torch.testing.assert_close(A.solarize(x, per_sample(256, 8)), x)
    torch.testing.assert_close(A.solarize(x, per_sample(0, 8)), 1 - x)
    xi = (x * 255).round().long()
    p = A.posterize(x, per_sample(4, 8))
    torch.testing.assert_close((p * 255).round().long(), xi & 0xF0, rtol=0, atol=0)
    torch.testing.assert_close(A.posterize(x, per_sample(8, 8)), x)


def reference_equalize(channel: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize lookup table, written with a plain loop (uint8 in/out)."""
    hist = torch.bincount(channel.flatten().long(), minlength=256).tolist()
    used = [h for h in hist if h]
    step = (sum(used) - used[-1]) // 255
    if step == 0:
        return channel
    lut, n = [], step // 2
    for h in hist:
        lut.append(min(n // step, 255))
        n += h
    return torch.tensor(lut)[channel.long()]


def test_equalize_matches_reference_and_is_flat() -> None:
    skew = (torch.rand(2, 3, 128, 128, generator=gen()) ** 3 * 80).round() / 255  # dark, skewed
    out = A.equalize(skew)
    assert out.max() == 1.0 and out.min() == 0.0
    vals = (out * 255).round().long()
    for n in range(2):
        for c in range(3):
            ref = reference_equalize((skew[n, c] * 255).round().long())
            assert torch.equal(vals[n, c], ref)
    for row in vals.flatten(2).flatten(0, 1):  # level L has ~L/255 of pixels below it
        hist = torch.bincount(row, minlength=256)
        below = (hist.cumsum(0) - hist).float() / row.numel()
        used = hist > 0
        assert (below[used] - torch.arange(256.0)[used] / 255).abs().max() < 0.03
    const = torch.full((1, 1, 8, 8), 128 / 255)
    torch.testing.assert_close(A.equalize(const), const)


def test_autocontrast_brightness_color_contrast_sharpness() -> None:
    x = unit() * 0.5 + 0.2
    ac = A.autocontrast(x)
    assert torch.allclose(ac.amin((2, 3)), torch.zeros(8, 3))
    assert torch.allclose(ac.amax((2, 3)), torch.ones(8, 3))
    assert torch.equal(A.brightness(x, per_sample(0, 8)), torch.zeros_like(x))
    grey = A.color(x, per_sample(0, 8))
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    c0 = A.contrast(x, per_sample(0, 8))
    assert (c0.flatten(1).std(1) == 0).all()
    for op in (A.brightness, A.color, A.contrast, A.sharpness):
        torch.testing.assert_close(op(x, per_sample(1, 8)), x)
    sm = A.sharpness(x, per_sample(0, 8))
    torch.testing.assert_close(sm[..., 0, :], x[..., 0, :])  # borders untouched
    k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
    torch.testing.assert_close(sm[0, 0, 1:-1, 1:-1], F.conv2d(x[:1, :1], k[None, None])[0, 0])


# ------------------------------------------------------------------ geometric ops


def test_rotate_90_matches_rot90() -> None:
    x = unit(2, 3, 16, 16)
    out = A.rotate(x, per_sample(90, 2))
    torch.testing.assert_close(out, torch.rot90(x, 1, (2, 3)), rtol=0, atol=1e-4)
    torch.testing.assert_close(A.rotate(x, per_sample(0, 2)), x, rtol=0, atol=1e-6)


def test_translate_shifts_and_fills_grey() -> None:
    x = unit(2, 3, 16, 16)
    out = A.translate_x(x, per_sample(4 / 16, 2))  # output[j] = input[j + 4]
    torch.testing.assert_close(out[..., :12], x[..., 4:], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., 12:], torch.full_like(out[..., 12:], A.FILL))
    out = A.translate_y(x, per_sample(-3 / 16, 2))  # output[i] = input[i - 3]
    torch.testing.assert_close(out[..., 3:, :], x[..., :13, :], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., :3, :], torch.full_like(out[..., :3, :], A.FILL))


def test_shear() -> None:
    x = unit(2, 3, 16, 16)
    torch.testing.assert_close(A.shear_x(x, per_sample(0, 2)), x, rtol=0, atol=1e-6)
    sy = A.shear_y(x, per_sample(0.2, 2))
    sx = A.shear_x(x.transpose(2, 3), per_sample(0.2, 2)).transpose(2, 3)
    torch.testing.assert_close(sy, sx, rtol=0, atol=1e-5)
    assert not torch.allclose(sy, x)


# -------------------------------------------------------------------- policy


@pytest.mark.parametrize("policy", sorted(A.POLICIES))
def test_policy_tables(policy: str) -> None:
    table = A.POLICIES[policy]
    assert table
    for sub in table:
        assert len(sub) == 2
        for op, prob, level in sub:
            assert op in A.OPS and 0 <= prob <= 1 and 0 <= level <= 9
    assert A.POLICIES["cifar10"][0] == (("invert", 0.1, 7), ("contrast", 0.2, 6))
    assert A.MAGNITUDES["posterize"] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert A.MAGNITUDES["solarize"][0] == 256 and A.MAGNITUDES["solarize"][-1] == 0
    with pytest.raises(ValueError):
        A.AutoAugment("imagenet-typo")


def test_autoaugment_applies_ops_to_their_subsets() -> None:
    x = unit(6)
    inv, sol, rot = A.OPS.index("invert"), A.OPS.index("solarize"), A.OPS.index("rotate")
    op = torch.tensor([[inv, sol], [inv, sol], [sol, inv], [rot, inv], [inv, inv], [sol, sol]])
    on = torch.tensor([[True, False], [True, True], [True, True], [True, False], [False, False], [True, True]])
    value = torch.tensor([[0.0, 256], [0, 0], [256, 0], [90, 0], [0, 0], [0, 0]])
    out = A.AutoAugment.apply(x, op, on, value)
    torch.testing.assert_close(out[0], 1 - x[0])
    torch.testing.assert_close(out[1], x[1])  # invert then solarize(0) = invert again
    torch.testing.assert_close(out[2], 1 - x[2])  # solarize(256) no-op, then invert
    torch.testing.assert_close(out[3], torch.rot90(x[3], 1, (1, 2)), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[4], x[4])
    torch.testing.assert_close(out[5], x[5])


def test_autoaugment_draw_statistics() -> None:
    aa = A.AutoAugment("cifar10")
    op, on, value = aa.draw(20000, gen(), torch.device("cpu"))
    assert set(op.flatten().tolist()) <= set(range(len(A.OPS)))
    assert 0.45 < on.float().mean() < 0.6  # mean prob of the cifar10 table is ~0.53
    enh = op == A.OPS.index("brightness")
    assert ((value[enh] >= 0.1 - 1e-6) & (value[enh] <= 1.9 + 1e-6)).all()
    assert (value[enh] < 1).any() and (value[enh] > 1).any()
    rot = op == A.OPS.index("rotate")
    assert (value[rot] >= 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runs_and_is_deterministic() -> None:
    aug = Augmenter([0.5] * 3, [0.5] * 3, "cifar10")
    x = images(64).cuda()
    g1 = torch.Generator(device="cuda").manual_seed(0)
    g2 = torch.Generator(device="cuda").manual_seed(0)
    a, b = aug.strong(x, g1), aug.strong(x, g2)
    assert a.device.type == "cuda" and torch.allclose(a, b)

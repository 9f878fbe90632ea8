"""Batched, per-sample image augmentation that runs on the images' device.

Images enter as uint8 ``[B, C, H, W]`` and leave as normalised float32.  Internally all
ops work on float32 in ``[0, 1]``.  Every random draw comes from a caller-supplied
``torch.Generator`` living on the images' device, so a given generator state always
yields the same output on CPU.

* weak   = random horizontal flip + random crop from a reflect-padded image;
* strong = weak, then AutoAugment and Cutout.  Policies: ``cifar10_spmi``, the 97
  sub-policies of the SPMI authors' ``CIFAR10Policy`` (livyf/SPMI utils/autoaugment.py,
  used for CIFAR-10 and CIFAR-100); ``cifar10``, the canonical 25 of Cubuk et al. 2019
  (DeepVoltaire's ``CIFAR10Policy``); ``svhn``, the 25 of ``SVHNPolicy``.
  Geometric ops resample as PIL does there: translate / rotate NEAREST, shear BICUBIC.
"""

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

FILL = 128.0 / 255.0  # grey used by the reference for pixels moved in from outside

# --------------------------------------------------------------------------- helpers


def to_unit(x: Tensor) -> Tensor:
    """uint8 -> float32 in [0, 1]; float input is assumed to be in [0, 1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def quantize(x: Tensor) -> Tensor:
    """Round to the 256 uint8 levels (mirrors the PIL reference, which is 8-bit throughout)."""
    return x.clamp(0.0, 1.0).mul_(255.0).round_().div_(255.0)


def _grey(x: Tensor) -> Tensor:
    """ITU-R 601 luma as PIL's ``convert('L')``: [N, 1, H, W]; identity for one channel."""
    if x.shape[1] == 1:
        return x
    w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance``: degenerate + factor * (x - degenerate), clipped."""
    out = x - degenerate
    return out.mul_(factor.view(-1, 1, 1, 1)).add_(degenerate).clamp_(0.0, 1.0)


# ------------------------------------------------------------------ flip + crop (weak)


def draw_flip_crop(n: int, padding: int, g: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample flip flags [n] bool and crop offsets oy, ox [n] in [0, 2*padding]."""
    flip = torch.rand(n, generator=g, device=device) < 0.5
    off = torch.randint(0, 2 * padding + 1, (2, n), generator=g, device=device)
    return flip, off[0], off[1]


def _reflect(t: Tensor, size: int) -> Tensor:
    """Map (possibly out-of-range) indices onto [0, size) by reflection without edge repeat."""
    t = t.abs()
    return torch.where(t > size - 1, 2 * (size - 1) - t, t)


def flip_crop(x: Tensor, flip: Tensor, oy: Tensor, ox: Tensor, padding: int) -> Tensor:
    """Flip (where ``flip``), reflect-pad by ``padding`` and crop at (oy, ox): one gather.

    Equivalent to ``F.pad(flipped, [padding]*4, mode='reflect')[..., oy:oy+H, ox:ox+W]``
    per sample; works on any dtype.
    """
    b, c, h, w = x.shape
    rows = _reflect(oy[:, None] + torch.arange(h, device=x.device) - padding, h)  # [B, H]
    cols = _reflect(ox[:, None] + torch.arange(w, device=x.device) - padding, w)  # [B, W]
    cols = torch.where(flip[:, None], w - 1 - cols, cols)
    idx = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, idx).view(b, c, h, w)


# -------------------------------------------------------------------------- cutout


def draw_cutout(n: int, h: int, w: int, g: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
    """Hole centres cy in [0, h), cx in [0, w), one per sample."""
    return (
        torch.randint(0, h, (n,), generator=g, device=device),
        torch.randint(0, w, (n,), generator=g, device=device),
    )


def cutout_at(x: Tensor, cy: Tensor, cx: Tensor, size: int) -> Tensor:
    """Zero a ``size`` x ``size`` square centred at (cy, cx), clipped at the borders."""
    _, _, h, w = x.shape
    half = size // 2
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    in_r = (r >= (cy - half)[:, None]) & (r < (cy - half + size)[:, None])  # [B, H]
    in_c = (c >= (cx - half)[:, None]) & (c < (cx - half + size)[:, None])  # [B, W]
    keep = ~(in_r[:, :, None] & in_c[:, None, :])
    return x * keep.unsqueeze(1).to(x.dtype)


def cutout(x: Tensor, g: torch.Generator, size: int = 8) -> Tensor:
    """Cutout with one random hole per image (x in [0, 1] space)."""
    if size <= 0:
        return x
    cy, cx = draw_cutout(x.shape[0], x.shape[2], x.shape[3], g, x.device)
    return cutout_at(x, cy, cx, size)


# ------------------------------------------------------------- geometric AutoAugment ops

GEOMETRIC = ("shearX", "shearY", "translateX", "translateY", "rotate")


def affine_matrices(op: Tensor, value: Tensor, h: int, w: int) -> Tensor:
    """Per-sample [N, 2, 3] maps from output to input pixel coords (PIL ``AFFINE`` style).

    ``op`` indexes ``GEOMETRIC``; ``value`` is the signed shear, the signed translation as
    a fraction of the size, or the counter-clockwise rotation angle in degrees.
    """
    v = value.float()
    zero, one = torch.zeros_like(v), torch.ones_like(v)
    is_rot = op == 4
    theta = torch.where(is_rot, v, zero) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    cx, cy = w / 2.0, h / 2.0
    a = torch.where(is_rot, cos, one)
    b = torch.where(op == 0, v, torch.where(is_rot, -sin, zero))
    c = torch.where(op == 2, v * w, torch.where(is_rot, cx - cos * cx + sin * cy, zero))
    d = torch.where(op == 1, v, torch.where(is_rot, sin, zero))
    e = a
    f = torch.where(op == 3, v * h, torch.where(is_rot, cy - sin * cx - cos * cy, zero))
    return torch.stack([a, b, c, d, e, f], 1).view(-1, 2, 3)


def _cubic_weights(d: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Weights of the taps at -1, 0, 1, 2 for offset d in [0, 1): PIL's affine BICUBIC
    (Geometry.c, the cubic with a = -1)."""
    d2, d3 = d * d, d * d * d
    return -d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, d3 - d2


def affine_warp(x: Tensor, mat: Tensor, fill: float = FILL, mode: str = "nearest") -> Tensor:
    """Warp with per-sample [N, 2, 3] output->input pixel maps, resampled as PIL's
    ``Image.transform`` does: output pixel centres map to (xin, yin); a centre outside the
    image gets ``fill``; ``nearest`` takes the pixel holding it, ``bicubic`` PIL's cubic
    (a = -1) over 4 x 4 taps clamped to the border."""
    n, c, h, w = x.shape
    # coordinates in float64 as PIL computes them: the inside/outside decision at the border
    # and the floor of NEAREST must not flip on float32 rounding
    u = torch.arange(w, device=x.device, dtype=torch.float64) + 0.5
    v = torch.arange(h, device=x.device, dtype=torch.float64) + 0.5
    m = mat.double().view(n, 6, 1, 1)
    xin = m[:, 0] * u + m[:, 1] * v[:, None] + m[:, 2]  # [N, H, W]
    yin = m[:, 3] * u + m[:, 4] * v[:, None] + m[:, 5]
    inside = ((xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)).unsqueeze(1)
    flat = x.float().reshape(n, c, h * w)

    def tap(ix: Tensor, iy: Tensor) -> Tensor:
        idx = (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
        return flat.gather(2, idx).view(n, c, h, w)

    if mode == "nearest":
        out = tap(xin.floor().long(), yin.floor().long())
    elif mode == "bicubic":
        xs, ys = xin - 0.5, yin - 0.5
        x0, y0 = xs.floor(), ys.floor()
        wx, wy = _cubic_weights((xs - x0).float()), _cubic_weights((ys - y0).float())
        x0, y0 = x0.long() - 1, y0.long() - 1
        out = torch.zeros_like(x, dtype=torch.float32)
        for j in range(4):
            row = sum(wx[i].unsqueeze(1) * tap(x0 + i, y0 + j) for i in range(4))
            out += wy[j].unsqueeze(1) * row
    else:
        raise ValueError(f"unknown resampling mode {mode!r}; choose nearest or bicubic")
    return torch.where(inside, out, torch.full_like(out, fill))


# resampling of each geometric op in the reference (PIL ``transform``/``rotate`` defaults)
RESAMPLE = {"shearX": "bicubic", "shearY": "bicubic", "translateX": "nearest", "translateY": "nearest",
            "rotate": "nearest"}


def _geometric(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    op_id = GEOMETRIC.index(name)

    def op(x: Tensor, value: Tensor) -> Tensor:
        ids = torch.full((x.shape[0],), op_id, device=x.device)
        mat = affine_matrices(ids, value.to(x.device), x.shape[2], x.shape[3])
        return affine_warp(x, mat, mode=RESAMPLE[name])

    op.__doc__ = f"{name} by per-sample ``value`` (see ``affine_matrices``)."
    return op


shear_x = _geometric("shearX")
shear_y = _geometric("shearY")
translate_x = _geometric("translateX")
translate_y = _geometric("translateY")
rotate = _geometric("rotate")

# ----------------------------------------------------------------- pixel AutoAugment ops


def invert(x: Tensor, value: Tensor | None = None) -> Tensor:
    """1 - x."""
    return 1.0 - x


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert pixels whose 0..255 value is >= threshold (per sample)."""
    hit = (x * 255.0 >= threshold.view(-1, 1, 1, 1)).float()
    return (hit - x).abs_()  # = 1 - x where hit, x elsewhere


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the top ``bits`` bits of each 8-bit value (per sample)."""
    step = torch.pow(2.0, 8.0 - bits.float()).view(-1, 1, 1, 1)
    return (x * 255.0).round_().div_(step).floor_().mul_(step).div_(255.0)


def color(x: Tensor, factor: Tensor) -> Tensor:
    """Saturation: blend with the greyscale image."""
    return _blend(_grey(x), x, factor)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the (8-bit rounded) mean grey level of each image."""
    mean = torch.floor(_grey(x).mean((1, 2, 3), keepdim=True) * 255.0 + 0.5) / 255.0
    return _blend(mean.expand_as(x), x, factor)


def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with PIL's SMOOTH-filtered image (kernel 1 1 1 / 1 5 1 / 1 1 1, borders kept)."""
    c = x.shape[1]
    k = x.new_tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = F.conv2d(x, k.expand(c, 1, 3, 3), groups=c)
    return _blend(degenerate, x, factor)


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with black."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def autocontrast(x: Tensor, value: Tensor | None = None) -> Tensor:
    """Stretch each channel linearly so that its min -> 0 and max -> 1."""
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    span = hi - lo
    flat = span <= 0  # constant channel: leave unchanged
    return (x - lo.masked_fill(flat, 0.0)) * torch.where(flat, 1.0, 1.0 / span)


def equalize(x: Tensor, value: Tensor | None = None) -> Tensor:
    """Per-channel histogram equalisation with PIL's ``ImageOps.equalize`` lookup table."""
    n, c, h, w = x.shape
    xi = torch.round(x.clamp(0.0, 1.0) * 255.0).long().reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, xi, torch.ones_like(xi))
    last = hist.gather(1, xi.amax(1, keepdim=True))  # count of the highest occupied bin
    step = (h * w - last) // 255  # [NC, 1]
    before = hist.cumsum(1) - hist  # pixels strictly below each level
    lut = ((before + step // 2) // step.clamp_min(1)).clamp_max(255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device).expand_as(lut))
    return (lut.gather(1, xi).float() / 255.0).view(n, c, h, w)


# ----------------------------------------------------------------- AutoAugment policy

PIXEL_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "color": color,
    "posterize": posterize,
    "solarize": solarize,
    "contrast": contrast,
    "sharpness": sharpness,
    "brightness": brightness,
    "autocontrast": autocontrast,
    "equalize": equalize,
    "invert": invert,
}
OPS: tuple[str, ...] = GEOMETRIC + tuple(PIXEL_OPS)
_SIGNED = {"shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness"}
_ENHANCE = {"color", "contrast", "sharpness", "brightness"}  # factor = 1 +- magnitude


def _linspace(a: float, b: float) -> list[float]:
    return [a + (b - a) * i / 9 for i in range(10)]


MAGNITUDES: dict[str, list[float]] = {
    "shearX": _linspace(0.0, 0.3),
    "shearY": _linspace(0.0, 0.3),
    "translateX": _linspace(0.0, 150 / 331),
    "translateY": _linspace(0.0, 150 / 331),
    "rotate": _linspace(0.0, 30.0),
    "color": _linspace(0.0, 0.9),
    "contrast": _linspace(0.0, 0.9),
    "sharpness": _linspace(0.0, 0.9),
    "brightness": _linspace(0.0, 0.9),
    "posterize": [float(round(v)) for v in _linspace(8.0, 4.0)],
    "solarize": _linspace(256.0, 0.0),
    "autocontrast": [0.0] * 10,
    "equalize": [0.0] * 10,
    "invert": [0.0] * 10,
}

SubPolicy = tuple[tuple[str, float, int], tuple[str, float, int]]


def _table(rows: str) -> tuple[SubPolicy, ...]:
    """Parse 'p1 op1 m1 p2 op2 m2' lines into sub-policies."""
    out = []
    for line in rows.strip().splitlines():
        p1, o1, m1, p2, o2, m2 = line.split()
        out.append(((o1, float(p1), int(m1)), (o2, float(p2), int(m2))))
    return tuple(out)


POLICIES: dict[str, tuple[SubPolicy, ...]] = {
    # the SPMI authors' CIFAR10Policy (livyf/SPMI utils/autoaugment.py), CIFAR-10 and CIFAR-100
    "cifar10_spmi": _table("""
        0.1 invert 7 0.2 contrast 6
        0.7 rotate 2 0.3 translateX 9
        0.8 sharpness 1 0.9 sharpness 3
        0.5 shearY 8 0.7 translateY 9
        0.5 autocontrast 8 0.9 equalize 2
        0.2 shearY 7 0.3 posterize 7
        0.4 color 3 0.6 brightness 7
        0.3 sharpness 9 0.7 brightness 9
        0.6 equalize 5 0.5 equalize 1
        0.6 contrast 7 0.6 sharpness 5
        0.7 color 7 0.5 translateX 8
        0.3 equalize 7 0.4 autocontrast 8
        0.4 translateY 3 0.2 sharpness 6
        0.9 brightness 6 0.2 color 8
        0.5 solarize 2 0.0 invert 3
        0.2 equalize 0 0.6 autocontrast 0
        0.2 equalize 8 0.8 equalize 4
        0.9 color 9 0.6 equalize 6
        0.8 autocontrast 4 0.2 solarize 8
        0.1 brightness 3 0.7 color 0
        0.4 solarize 5 0.9 autocontrast 3
        0.9 translateY 9 0.7 translateY 9
        0.9 autocontrast 2 0.8 solarize 3
        0.8 equalize 8 0.1 invert 3
        0.7 translateY 9 0.9 autocontrast 1
        0.4 solarize 5 0.9 autocontrast 3
        0.9 translateY 9 0.7 translateY 9
        0.9 autocontrast 2 0.8 solarize 3
        0.8 equalize 8 0.1 invert 3
        0.7 translateY 9 0.9 autocontrast 1
        0.4 solarize 5 0.9 autocontrast 1
        0.8 translateY 9 0.9 translateY 9
        0.8 autocontrast 0 0.7 translateY 9
        0.2 translateY 7 0.9 color 6
        0.7 equalize 6 0.4 color 9
        0.3 brightness 7 0.5 autocontrast 8
        0.9 autocontrast 4 0.5 autocontrast 6
        0.3 solarize 5 0.6 equalize 5
        0.2 translateY 4 0.3 sharpness 3
        0.0 brightness 8 0.8 color 8
        0.2 solarize 6 0.8 color 6
        0.2 solarize 6 0.8 autocontrast 1
        0.4 solarize 1 0.6 equalize 5
        0.0 brightness 0 0.5 solarize 2
        0.9 autocontrast 5 0.5 brightness 3
        0.7 contrast 5 0.0 brightness 2
        0.2 solarize 8 0.1 solarize 5
        0.5 contrast 1 0.2 translateY 9
        0.6 autocontrast 5 0.0 translateY 9
        0.9 autocontrast 4 0.8 equalize 4
        0.0 brightness 7 0.4 equalize 7
        0.2 solarize 5 0.7 equalize 5
        0.6 equalize 8 0.6 color 2
        0.3 color 7 0.2 color 4
        0.5 autocontrast 2 0.7 solarize 2
        0.2 autocontrast 0 0.1 equalize 0
        0.6 shearY 5 0.6 equalize 5
        0.9 brightness 3 0.4 autocontrast 1
        0.8 equalize 8 0.7 equalize 7
        0.7 equalize 7 0.5 solarize 0
        0.8 equalize 4 0.8 translateY 9
        0.8 translateY 9 0.6 translateY 9
        0.9 translateY 0 0.5 translateY 9
        0.5 autocontrast 3 0.3 solarize 4
        0.5 solarize 3 0.4 equalize 4
        0.1 autocontrast 5 0.0 brightness 0
        0.7 equalize 7 0.6 autocontrast 4
        0.1 color 8 0.2 shearY 3
        0.4 shearY 2 0.7 rotate 0
        0.1 shearY 3 0.9 autocontrast 5
        0.5 equalize 0 0.6 solarize 6
        0.3 autocontrast 5 0.2 rotate 7
        0.8 equalize 2 0.4 invert 0
        0.9 equalize 5 0.7 color 0
        0.1 equalize 1 0.1 shearY 3
        0.7 autocontrast 3 0.7 equalize 0
        0.5 brightness 1 0.1 contrast 7
        0.1 contrast 4 0.6 solarize 5
        0.2 solarize 3 0.0 shearX 0
        0.3 translateX 0 0.6 translateX 0
        0.5 equalize 9 0.6 translateY 7
        0.1 shearX 0 0.5 sharpness 1
        0.8 equalize 6 0.3 invert 6
        0.4 shearX 4 0.9 autocontrast 2
        0.0 shearX 3 0.0 posterize 3
        0.4 solarize 3 0.2 color 4
        0.1 equalize 4 0.7 equalize 6
        0.3 equalize 8 0.4 autocontrast 3
        0.6 solarize 4 0.7 autocontrast 6
        0.2 autocontrast 9 0.4 brightness 8
        0.1 equalize 0 0.0 equalize 6
        0.8 equalize 4 0.0 equalize 4
        0.5 equalize 5 0.1 autocontrast 2
        0.5 solarize 5 0.9 autocontrast 5
        0.6 autocontrast 1 0.7 autocontrast 8
        0.2 equalize 0 0.1 autocontrast 2
        0.6 equalize 9 0.4 equalize 4
    """),
    # the canonical CIFAR-10 policy (Cubuk et al. 2019; DeepVoltaire's CIFAR10Policy)
    "cifar10": _table("""
        0.1 invert 7 0.2 contrast 6
        0.7 rotate 2 0.3 translateX 9
        0.8 sharpness 1 0.9 sharpness 3
        0.5 shearY 8 0.7 translateY 9
        0.5 autocontrast 8 0.9 equalize 2
        0.2 shearY 7 0.3 posterize 7
        0.4 color 3 0.6 brightness 7
        0.3 sharpness 9 0.7 brightness 9
        0.6 equalize 5 0.5 equalize 1
        0.6 contrast 7 0.6 sharpness 5
        0.7 color 7 0.5 translateX 8
        0.3 equalize 7 0.4 autocontrast 8
        0.4 translateY 3 0.2 sharpness 6
        0.9 brightness 6 0.2 color 8
        0.5 solarize 2 0.0 invert 3
        0.2 equalize 0 0.6 autocontrast 0
        0.2 equalize 8 0.6 equalize 4
        0.9 color 9 0.6 equalize 6
        0.8 autocontrast 4 0.2 solarize 8
        0.1 brightness 3 0.7 color 0
        0.4 solarize 5 0.9 autocontrast 3
        0.9 translateY 9 0.7 translateY 9
        0.9 autocontrast 2 0.8 solarize 3
        0.8 equalize 8 0.1 invert 3
        0.7 translateY 9 0.9 autocontrast 1
    """),
    "svhn": _table("""
        0.9 shearX 4 0.2 invert 3
        0.9 shearY 8 0.7 invert 5
        0.6 equalize 5 0.6 solarize 6
        0.9 invert 3 0.6 equalize 3
        0.6 equalize 1 0.9 rotate 3
        0.9 shearX 4 0.8 autocontrast 3
        0.9 shearY 8 0.4 invert 5
        0.9 shearY 5 0.2 solarize 6
        0.9 invert 6 0.8 autocontrast 1
        0.6 equalize 3 0.9 rotate 3
        0.9 shearX 4 0.3 solarize 3
        0.8 shearY 8 0.7 invert 4
        0.9 equalize 5 0.6 translateY 6
        0.9 invert 4 0.6 equalize 7
        0.3 contrast 3 0.8 rotate 4
        0.8 invert 5 0.0 translateY 2
        0.7 shearY 6 0.4 solarize 8
        0.6 invert 4 0.8 rotate 4
        0.3 shearY 7 0.9 translateX 3
        0.1 shearX 6 0.6 invert 5
        0.7 solarize 2 0.6 translateY 7
        0.8 shearY 4 0.8 invert 8
        0.7 shearX 9 0.8 translateY 3
        0.8 shearY 5 0.7 autocontrast 3
        0.7 shearX 2 0.1 invert 5
    """),
}


class AutoAugment:
    """Vectorised AutoAugment: per-sample sub-policy and coin flips, one pass per op type."""

    def __init__(self, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy '{policy}'; choose one of: {', '.join(sorted(POLICIES))}")
        table = POLICIES[policy]
        self.num_sub = len(table)
        self._op = torch.tensor([[OPS.index(o) for o, _, _ in sp] for sp in table])
        self._prob = torch.tensor([[p for _, p, _ in sp] for sp in table])
        self._mag = torch.tensor([[MAGNITUDES[o][m] for o, _, m in sp] for sp in table])
        self._signed = torch.tensor([o in _SIGNED for o in OPS])
        self._base = torch.tensor([1.0 if o in _ENHANCE else 0.0 for o in OPS])
        self._cache: dict[torch.device, tuple[Tensor, ...]] = {}

    def _tables(self, device: torch.device) -> tuple[Tensor, ...]:
        if device not in self._cache:
            self._cache[device] = tuple(
                t.to(device) for t in (self._op, self._prob, self._mag, self._signed, self._base)
            )
        return self._cache[device]

    def draw(self, n: int, g: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample op ids [n, 2], on/off [n, 2] and resolved op values [n, 2]."""
        op_t, prob_t, mag_t, signed_t, base_t = self._tables(device)
        sub = torch.randint(0, self.num_sub, (n,), generator=g, device=device)
        coin = torch.rand(n, 2, generator=g, device=device)
        flip_sign = torch.rand(n, 2, generator=g, device=device) < 0.5
        op = op_t[sub]
        sign = torch.where(flip_sign & signed_t[op], -1.0, 1.0)
        return op, coin < prob_t[sub], base_t[op] + sign * mag_t[sub]

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Augment float images in [0, 1] ([N, C, H, W]); returns a new tensor."""
        op, on, value = self.draw(x.shape[0], g, x.device)
        return self.apply(x, op, on, value)

    @staticmethod
    def apply(x: Tensor, op: Tensor, on: Tensor, value: Tensor) -> Tensor:
        """Apply the drawn ops: stage 1 then stage 2, each grouped by op type."""
        x = x.float().clone()
        n_ops = len(OPS)
        key = torch.where(on, op, n_ops)  # n_ops = "skip"
        counts = torch.stack(
            [torch.bincount(key[:, s], minlength=n_ops + 1) for s in range(2)]
        ).tolist()  # the only host sync
        for s in range(2):
            groups = torch.argsort(key[:, s], stable=True).split(counts[s])
            for mode in ("bicubic", "nearest"):
                geo = torch.cat([g for name, g in zip(GEOMETRIC, groups, strict=False) if RESAMPLE[name] == mode])
                if geo.numel():
                    mat = affine_matrices(op[geo, s], value[geo, s], x.shape[2], x.shape[3])
                    x[geo] = quantize(affine_warp(x[geo], mat, mode=mode))
            for name, idx in zip(OPS[len(GEOMETRIC) :], groups[len(GEOMETRIC) : n_ops], strict=True):
                if idx.numel():
                    x[idx] = quantize(PIXEL_OPS[name](x[idx], value[idx, s]))
        return x


# ------------------------------------------------------------------------ front end


class Augmenter:
    """Weak / strong / plain views of uint8 image batches, normalised with mean/std."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], policy: str | None, padding: int = 4, cutout: int = 8
    ) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.padding = padding
        self.cutout_size = cutout
        self.autoaugment = AutoAugment(policy) if policy is not None else None
        self._stats: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def normalize(self, x: Tensor, scale: float = 1.0, inplace: bool = False) -> Tensor:
        """(scale * x - mean) / std per channel (scale = 1/255 for raw uint8 values).

        ``inplace`` allows overwriting ``x`` when it is already float32.
        """
        if x.device not in self._stats:
            c = len(self.mean)
            mean = torch.tensor(self.mean, device=x.device).view(1, c, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, c, 1, 1)
            self._stats[x.device] = (1.0 / std, -mean / std)
        inv_std, shift = self._stats[x.device]
        fresh = x.dtype != torch.float32 or inplace
        y = x.float() if fresh else x.clone()
        return y.mul_(inv_std * scale).add_(shift)

    def _flip_crop(self, x: Tensor, g: torch.Generator) -> Tensor:
        flip, oy, ox = draw_flip_crop(x.shape[0], self.padding, g, x.device)
        return flip_crop(x, flip, oy, ox, self.padding)

    def _scale(self, x: Tensor) -> float:
        return 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0

    def weak(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Random flip + reflect-padded random crop, normalised float32."""
        return self.normalize(self._flip_crop(x, g), self._scale(x), inplace=True)

    def strong(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Weak, then AutoAugment (if a policy is set) and Cutout, normalised float32."""
        y = to_unit(self._flip_crop(x, g))
        if self.autoaugment is not None:
            y = self.autoaugment(y, g)
        return self.normalize(cutout(y, g, self.cutout_size), inplace=True)

    def plain(self, x: Tensor) -> Tensor:
        """No augmentation: to float in [0, 1], normalised."""
        return self.normalize(x, self._scale(x))


"""What the generator's raw output takes from the source crop, in pixel space.

Beyond the paper (§3.1 draws the raw output z_raw from scratch), each switchable from the
model configuration: the source's fine detail (:func:`add_source_detail`, ``detail_sigma``),
its chroma (:func:`take_source_chroma`, ``source_chroma``), and the warp head's resampling of
the source along a smooth, bounded flow (:func:`smooth_field`, :func:`warp`,
:func:`render_warp`, ``flow_px``). Also the blur and BT.601 colour conversions the losses use.
Tensors are N×C×H×W in [−1, 1].
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding, radius 3σ) of N×C×H×W."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = nn.functional.pad(x, (r, r, r, r), mode="reflect")
    x = nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def add_source_detail(z_raw: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """z_raw + (x − blur_σ(x)): the source's fine detail (skin texture, finer than σ px of the
    aligned crop) laid over the generated face, whose identity lives at coarser scales; the
    decoder then only has to produce the face at that scale (``detail_sigma``, beyond the
    paper: a short-trained decoder's raw output is blurry)."""
    if sigma <= 0:
        return z_raw
    return (z_raw + (x - gaussian_blur(x, sigma)).to(z_raw.dtype)).clamp(-1, 1)


def rgb_to_ycbcr(img: torch.Tensor) -> torch.Tensor:
    """N×3×H×W RGB in [−1, 1] → Y, Cb, Cr (ITU-R BT.601, same range convention)."""
    r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.cat([y, 0.564 * (b - y), 0.713 * (r - y)], 1)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    y, cb, cr = ycc[:, 0:1], ycc[:, 1:2], ycc[:, 2:3]
    r, b = y + cr / 0.713, y + cb / 0.564
    return torch.cat([r, (y - 0.299 * r - 0.114 * b) / 0.587, b], 1)


#: σ (crop pixels) of the blur on the source chroma that :func:`take_source_chroma` keeps: where
#: the generated face moved an edge (a nostril, a lid) it gets the mean colour around it, not
#: the colour of a shadow that is no longer there
SOURCE_CHROMA_SIGMA = 1.5


def take_source_chroma(z_raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The luma (BT.601 Y) of z_raw with the chroma (Cb, Cr) of the source crop x, blurred by
    :data:`SOURCE_CHROMA_SIGMA`: the generated face keeps the person's skin tone, lip, eye
    and hair colours, and identity can only move through luma, i.e. shape and shading
    (``source_chroma``, beyond the paper: the dial cannot tint a nose pink or an iris cyan)."""
    luma = rgb_to_ycbcr(z_raw.float())[:, :1]
    chroma = gaussian_blur(rgb_to_ycbcr(x.float())[:, 1:], SOURCE_CHROMA_SIGMA)
    return ycbcr_to_rgb(torch.cat([luma, chroma], 1)).clamp(-1, 1).to(z_raw.dtype)


def source_transfer(z_raw: torch.Tensor, x: torch.Tensor, cfg: Any) -> torch.Tensor:
    """What the model configuration takes from the source crop into the raw output:
    fine detail (:func:`add_source_detail`) and then chroma (:func:`take_source_chroma`);
    ``cfg``: the :class:`~deid_core.model.ModelConfig` (``detail_sigma``, ``source_chroma``)."""
    z = add_source_detail(z_raw, x, cfg.detail_sigma)
    return take_source_chroma(z, x) if cfg.source_chroma else z


def warp(source: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``source`` (N×C×S×S) resampled at pixel + ``flow`` (N×2×S×S, x then y, in pixels;
    bilinear, border padding): out(p) = source(p + flow(p))."""
    n, _, h, w = source.shape
    theta = torch.eye(2, 3, device=source.device, dtype=torch.float32).expand(n, 2, 3)
    base = nn.functional.affine_grid(theta, (n, 1, h, w), align_corners=False)
    scale = torch.tensor([2.0 / w, 2.0 / h], device=source.device)
    grid = base + flow.float().permute(0, 2, 3, 1) * scale
    return nn.functional.grid_sample(source.float(), grid, mode="bilinear", padding_mode="border",
                                     align_corners=False).to(source.dtype)


def render_warp(source: torch.Tensor, flow: torch.Tensor, shade: torch.Tensor | None
                ) -> torch.Tensor:
    """A warp head's raw output on the crop: ``source`` warped by ``flow``, plus the luma
    change ``shade`` (equal in R, G, B) when there is one, in [−1, 1]."""
    z = warp(source, flow).float()
    return z if shade is None else (z + shade.float()).clamp(-1, 1)


def smooth_field(raw: torch.Tensor, bound: float, grid: int) -> torch.Tensor:
    """A field (a flow in pixels, a luma change) of at most ``bound`` that varies only on a
    ``grid``×``grid`` lattice: tanh-bounded, averaged over each cell, bicubically upsampled
    (a change of shape or shading, never a per-pixel pattern)."""
    size = raw.shape[-1]
    field = bound * torch.tanh(raw.float())
    coarse = nn.functional.adaptive_avg_pool2d(field, grid)
    return nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)

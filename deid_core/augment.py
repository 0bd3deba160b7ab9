"""Training-time distortion of the encoder input (§3, "At training time", step a).

Random scaling, rotation (and a small translation) plus an elastic deformation, applied in
one ``grid_sample`` call per batch on the device. Only the encoder input is distorted; the
losses compare the decoder output with the undistorted image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Ranges of the random distortion (uniform unless stated)."""
    scale: float = 0.05           # zoom factor in [1 − s, 1 + s]
    rotation_deg: float = 10.0    # rotation in [−r, r] degrees
    shift: float = 0.05           # translation in [−t, t] × image size
    elastic_alpha: float = 0.03   # std of the displacement at the control points, × image size
    elastic_grid: int = 5         # control points per side (displacements upsampled bicubically)
    flip: bool = False            # horizontal flip (off: faces are aligned to a template)


def random_affine(n: int, scale: float, rotation_deg: float, shift: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """N×2×3 ``affine_grid`` matrices: zoom in [1 ± scale], rotation in [± rotation_deg],
    translation in [± shift] × image size (uniform, drawn on the CPU from ``generator``)."""
    u = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1
    zoom = 1 + scale * u(n)
    angle = math.radians(rotation_deg) * u(n)
    t = shift * 2 * u(n, 2)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack([torch.stack([cos, -sin, t[:, 0]], 1),
                        torch.stack([sin, cos, t[:, 1]], 1)], 1)


def random_grid(n: int, size: int, cfg: AugmentConfig, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """Sampling grid N×size×size×2 in [−1, 1] for scale + rotation + shift + elastic warp.

    The random numbers come from ``generator`` on the CPU (reproducible anywhere); the grid
    itself is built on ``device`` (no N×S×S×2 copy to a GPU per step)."""
    g = dict(generator=generator)
    theta = random_affine(n, cfg.scale, cfg.rotation_deg, cfg.shift, generator)
    if cfg.flip:
        flip = (torch.rand(n, **g) < 0.5).float() * -2 + 1
        theta[:, :, 0] = theta[:, :, 0] * flip[:, None]
    grid = F.affine_grid(theta.to(device), (n, 3, size, size), align_corners=False)
    if cfg.elastic_alpha > 0:
        k = cfg.elastic_grid
        coarse = torch.randn(n, 2, k, k, **g) * (cfg.elastic_alpha * 2)
        coarse[:, :, [0, -1], :] = 0          # keep the border roughly in place
        coarse[:, :, :, [0, -1]] = 0
        disp = F.interpolate(coarse.to(device), size=(size, size), mode="bicubic",
                             align_corners=True)
        grid = grid + disp.permute(0, 2, 3, 1)
    return grid


def distort(x: torch.Tensor, cfg: AugmentConfig | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Distorted copy of a batch ``x`` (N×C×H×W, H = W), reflection at the border."""
    cfg = cfg or AugmentConfig()
    n, _, h, w = x.shape
    grid = random_grid(n, h, cfg, generator=generator, device=x.device).to(dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@dataclass
class ViewConfig:
    """Ranges of the random view the loss network sees (``deid`` recipe, ``eot``): the same
    transform for source and outputs, so only edits that survive it (shape, not a pattern
    tuned to one view of one network) lower the loss — expectation over transformations."""
    scale: float = 0.08           # zoom in [1 − s, 1 + s]
    rotation_deg: float = 5.0
    shift: float = 0.04           # × image size
    blur: float = 1.0             # blend weight of a 3×3 blur, uniform in [0, blur]
    brightness: float = 0.1       # added, in [−b, b] (images in [−1, 1])
    contrast: float = 0.15        # × (1 ± c) around the mean
    saturation: float = 0.25      # blend with grey, (1 ± s)


def random_view(n: int, cfg: ViewConfig, generator: torch.Generator | None = None):
    """Draw one view per example; returns ``apply(img) -> img`` applying it to any batch of n."""
    g = dict(generator=generator)
    u = lambda *shape: torch.rand(*shape, **g) * 2 - 1
    theta = random_affine(n, cfg.scale, cfg.rotation_deg, cfg.shift, generator)
    blur_w = cfg.blur * torch.rand(n, **g)
    bright = cfg.brightness * u(n)
    contrast = 1 + cfg.contrast * u(n)
    sat = 1 + cfg.saturation * u(n)

    def apply(img: torch.Tensor) -> torch.Tensor:
        dev, dt = img.device, img.dtype
        col = lambda v: v.to(dev, dt).view(n, 1, 1, 1)
        grid = F.affine_grid(theta.to(dev, dt), tuple(img.shape), align_corners=False)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection",
                            align_corners=False)
        blurred = F.avg_pool2d(F.pad(out, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
        out = out + col(blur_w) * (blurred - out)
        grey = out.mean(1, keepdim=True)
        out = grey + col(sat) * (out - grey)
        mean = out.mean((1, 2, 3), keepdim=True)
        return (mean + col(contrast) * (out - mean) + col(bright)).clamp(-1, 1)

    return apply


def same_view(cfg: ViewConfig, generator: torch.Generator | None = None):
    """``view(*batches)`` → the batches seen through one random view per example (eot)."""
    def view(*batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        apply = random_view(batches[0].shape[0], cfg, generator)
        return tuple(apply(b) for b in batches)
    return view

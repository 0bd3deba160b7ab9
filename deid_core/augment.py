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


def random_grid(n: int, size: int, cfg: AugmentConfig, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """Sampling grid N×size×size×2 in [−1, 1] for scale + rotation + shift + elastic warp."""
    g = dict(generator=generator)
    u = lambda *shape: torch.rand(*shape, **g) * 2 - 1
    scale = 1 + cfg.scale * u(n)
    angle = math.radians(cfg.rotation_deg) * u(n)
    shift = cfg.shift * 2 * u(n, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)   # N×2×3
    if cfg.flip:
        flip = (torch.rand(n, **g) < 0.5).float() * -2 + 1
        theta[:, :, 0] = theta[:, :, 0] * flip[:, None]
    grid = F.affine_grid(theta, (n, 3, size, size), align_corners=False)
    if cfg.elastic_alpha > 0:
        k = cfg.elastic_grid
        coarse = torch.randn(n, 2, k, k, **g) * (cfg.elastic_alpha * 2)
        coarse[:, :, [0, -1], :] = 0          # keep the border roughly in place
        coarse[:, :, :, [0, -1]] = 0
        disp = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
        grid = grid + disp.permute(0, 2, 3, 1)
    return grid.to(device) if device is not None else grid


def distort(x: torch.Tensor, cfg: AugmentConfig | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Distorted copy of a batch ``x`` (N×C×H×W, H = W), reflection at the border."""
    cfg = cfg or AugmentConfig()
    n, _, h, w = x.shape
    grid = random_grid(n, h, cfg, generator=generator).to(device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

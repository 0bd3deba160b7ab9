"""Generator and discriminator of the paper (§3.1, Fig. 2a), configured by one dataclass.

Generator (adversarial auto-encoder conditioned on the target's identity descriptor):

* encoder: one convolution, five strided depth-wise separable convolutions with instance
  normalisation, one fully connected layer to the 1024-d latent; the frozen identity
  network's descriptor of the target (dlib: 128-d) is concatenated to it;
* decoder: a fully connected layer to a 4×4 map, then a lattice of upscale blocks
  (conv to 2× channels, IN, LReLU(0.1), pixel shuffle: W,H ×2, channels ÷4) and residual
  blocks (x + Conv–LReLU(0.2)–Conv); a tanh convolution gives the image and a sigmoid
  convolution the blending mask;
* a low-capacity U-net connection of 32×32×1 from the encoder to the decoder.

Discriminator: four strided convolutions with LReLU, instance norm on all but the first,
then a sigmoid convolution yielding a single output. All conv weights ~ N(0, 0.02), no
biases (§4).

Conditioning scale (§3.1, "the representation of the target … is concatenated"): the
latent is RMS-normalised and the identity descriptor L2-normalised and scaled to rms 1
before the concatenation (``id_norm``), so both halves of the decoder's input have the
same magnitude. Without it the latent (rms ≈ 13) drowns the raw dlib descriptor (rms ≈
0.13) and swapping the target changes the output by ~1e-4; checkpoints saved before the
field existed load with ``id_norm=False`` and behave as trained.

Beyond the paper: an optional λ-conditioning — normalised λ (:func:`lam_feature`, log or
linear scale) concatenated to the latent and/or FiLM (scale, shift) on the decoder blocks —
so one network serves every λ at inference time. Optionally the source crop's fine detail
is added to the raw output (``detail_sigma``), and its chroma replaces the raw output's
(``source_chroma``; both in :mod:`deid_core.transfer`). Optionally a warp head replaces the
image head (``flow_px``): the raw output is the source crop resampled along a smooth, bounded
flow (:meth:`Generator.warp_fields`, :func:`~deid_core.transfer.render_warp`), optionally
re-shaded in luma (``flow_luma``), with bounds that can grow with λ (``flow_dial``); the
pipeline may apply that flow to the full-resolution frame instead of the crop (``warp_at``). A patch discriminator
with logits, spectral norm and several scales (``disc_kind="patch"``) serves the ``deid``
training recipe (see :mod:`deid_core.recipe`); ``"paper"`` is the §3.1 discriminator.

Not specified by the paper and chosen here (documented deviations): channel widths, kernel
sizes (5 for encoder/heads, 3 elsewhere, 4 in D), the exact 128-px lattice (one residual
block after each of the first four upscales), LReLU(0.1) in the encoder and 0.2 in D, the
U-net injection (a 1×1 conv to one channel at the encoder's 32² stage, concatenated to the
decoder's 32² features), instance norm without affine parameters (no biases anywhere).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from deid_core.errors import DeidError
from deid_core.transfer import render_warp, smooth_field


def resolve_device(name: str) -> torch.device:
    """The one "auto" resolution: ``auto`` is CUDA when available, else the CPU; a CUDA device
    that is not there is a DeidError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeidError(f"device '{name}' requested but CUDA is not available")
    return dev


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a ``.pt`` checkpoint on the CPU (full training checkpoints or fp16 weights-only)."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:   # full training checkpoints also hold numpy RNG states
            ck = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise DeidError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ck, dict) or "generator" not in ck or "config" not in ck:
        raise DeidError(f"{path} is not a deid checkpoint (needs 'config' and 'generator')")
    return ck


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 RGB → float32 3×H×W in [−1, 1]."""
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
            and img.shape[2] == 3):
        raise DeidError(f"expected a uint8 H×W×3 RGB image, got "
                        f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img))}")
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float 3×H×W or N×3×H×W in [−1, 1] → uint8 H×W×3 / N×H×W×3 RGB."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return x.permute(*(range(x.dim() - 3)), -2, -1, -3).numpy()


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """Architecture of one generator/discriminator pair. Build one with :meth:`preset`."""
    name: str = "paper-128"
    size: int = 128                                   # output resolution (128 or 256)
    width: float = 1.0                                # channel multiplier (compact presets)
    enc_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 1024)   # first conv + 5 DS convs
    latent_dim: int = 1024                            # §3.1 bottleneck
    id_dim: int = 128                                 # identity descriptor (dlib ResNet-29: 128)
    dec_start: int = 4                                # spatial size after the decoder FC
    dec_channels: int = 1024                          # channels after the decoder FC
    dec_res_blocks: tuple[int, ...] = (1, 1, 1, 1, 0)  # residual blocks after each upscale
    unet_res: int = 32                                # U-net connection 32×32×1 (§3.1)
    unet_channels: int = 1
    disc_channels: tuple[int, ...] = (64, 128, 256, 512)
    enc_kernel: int = 5
    dec_min_channels: int = 4                         # floor of the decoder widths (compact-w)
    id_norm: bool = True                              # normalised latent ⊕ descriptor (§3.1)
    disc_kind: str = "paper"                          # paper (§3.1) | patch (logits, SN)
    disc_scales: int = 1                              # patch D: image pyramid levels
    # λ-conditioning
    lam_cond: bool = False
    lam_concat: bool = True                           # λ feature concatenated to the latent
    lam_film: bool = True                             # FiLM on the decoder blocks
    lam_min: float = 1e-8                             # λ ≤ lam_min maps to feature 0
    lam_max: float = 2e-5                             # λ = lam_max maps to feature 1
    lam_embed_dim: int = 16
    lam_scale: str = "log"                            # log (paper λ) | linear (deid dial)
    detail_sigma: float = 0.0                         # > 0: source's fine detail added to z_raw
    source_chroma: bool = False                       # z_raw keeps its luma, takes x's chroma
    flow_px: float = 0.0                              # > 0: z_raw = source warped by a smooth flow
    flow_grid: int = 8                                # the flow's control grid (flow_grid²)
    flow_luma: float = 0.0                            # > 0: warp head adds a luma change ≤ this
    luma_grid: int = 0                                # its control grid (0: per pixel)
    flow_dial: bool = False                           # the flow's bound grows linearly with λ
    warp_at: str = "frame"                            # pipeline applies the warp to: frame | crop

    @staticmethod
    def preset(name: str, **overrides) -> "ModelConfig":
        """Named presets: ``paper-128``, ``paper-256``, ``compact-128`` (width ×0.25),
        ``compact-128w`` (width ×0.25 with a decoder at least 32 channels wide at every
        resolution); ``-lamcond`` suffix (or ``lam_cond=True``) gives the λ-conditioned
        variant."""
        base = name
        lam_cond = False
        if base.endswith("-lamcond"):
            base, lam_cond = base[: -len("-lamcond")], True
        if base == "paper-128":
            cfg = ModelConfig(name=name)
        elif base == "paper-256":
            # §3.1: "simplified and enlarged", 6 × (Upscale → Residual) from 4×4 to 256×256.
            cfg = ModelConfig(name=name, size=256, enc_channels=(32, 64, 128, 256, 512, 512),
                              dec_channels=1024, dec_res_blocks=(1, 1, 1, 1, 1, 1))
        elif base == "compact-128":
            cfg = ModelConfig(name=name, width=0.25)
        elif base == "compact-128w":
            cfg = ModelConfig(name=name, width=0.25, dec_min_channels=32)
        else:
            raise DeidError(f"unknown model preset '{name}' (paper-128, paper-256, compact-128, "
                            f"compact-128w, optionally with '-lamcond')")
        cfg.lam_cond = lam_cond
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise DeidError(f"unknown ModelConfig field '{k}'")
            setattr(cfg, k, v)
        cfg.validate()
        return cfg

    # derived ---------------------------------------------------------------------------
    def ch(self, c: int) -> int:
        """Apply the width multiplier (multiples of 4 so pixel shuffle divides evenly)."""
        return max(4, int(round(c * self.width / 4)) * 4)

    @property
    def n_up(self) -> int:
        return int(round(math.log2(self.size / self.dec_start)))

    def validate(self) -> None:
        if self.size not in (64, 128, 256, 512):
            raise DeidError(f"ModelConfig.size must be 64/128/256/512, got {self.size}")
        if len(self.enc_channels) != 6:
            raise DeidError("ModelConfig.enc_channels needs 6 entries (first conv + 5 DS convs)")
        if len(self.dec_res_blocks) != self.n_up:
            raise DeidError(f"ModelConfig.dec_res_blocks needs {self.n_up} entries for "
                            f"size {self.size} from {self.dec_start}², got {self.dec_res_blocks}")
        if self.dec_start * 2 ** self.n_up != self.size:
            raise DeidError("size must be dec_start × a power of two")
        if self.unet_channels * self.unet_res ** 2 > self.latent_dim:
            raise DeidError("U-net connection may not exceed the bottleneck size (§3.1)")
        if self.disc_kind not in ("paper", "patch"):
            raise DeidError(f"ModelConfig.disc_kind must be 'paper' or 'patch', got {self.disc_kind!r}")
        if self.flow_luma < 0 or (self.luma_grid and not 2 <= self.luma_grid <= self.size):
            raise DeidError(f"ModelConfig.flow_luma must be ≥ 0 and luma_grid 0 or in [2, size], "
                            f"got {self.flow_luma}, {self.luma_grid}")
        if self.warp_at not in ("frame", "crop"):
            raise DeidError(f"ModelConfig.warp_at must be 'frame' or 'crop', got {self.warp_at!r}")
        if self.flow_px < 0 or not 2 <= self.flow_grid <= self.size:
            raise DeidError(f"ModelConfig.flow_px must be ≥ 0 and flow_grid in [2, size], got "
                            f"{self.flow_px}, {self.flow_grid}")
        if self.lam_scale not in ("log", "linear"):
            raise DeidError(f"ModelConfig.lam_scale must be 'log' or 'linear', got {self.lam_scale!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        kw.setdefault("id_norm", False)    # saved before the conditioning fix: keep its behaviour
        cfg = ModelConfig(**kw)
        cfg.validate()
        return cfg


PRESETS = ("paper-128", "paper-256", "compact-128", "compact-128w")


def lam_feature(lam: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Normalised λ: 0 for λ ≤ lam_min, 1 at lam_max; log-linear between (``lam_scale="log"``,
    the paper's λ spans decades) or linear (``"linear"``: the ``deid`` recipe's dial)."""
    lam = lam.float().clamp_min(0)
    if cfg.lam_scale == "linear":
        return (lam / cfg.lam_max).clamp(0, 2)
    lo, hi = math.log10(cfg.lam_min), math.log10(cfg.lam_max)
    return ((torch.log10(lam + cfg.lam_min) - lo) / (hi - lo)).clamp(0, 2)


def rms_normalise(v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """v / rms(v) per row (pixel norm of a vector)."""
    return v * torch.rsqrt(v.float().square().mean(1, keepdim=True) + eps).to(v.dtype)


# --------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------
def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)


class SeparableDown(nn.Module):
    """Strided depth-wise separable convolution + instance norm + LReLU(0.1) (§3.1)."""

    def __init__(self, cin: int, cout: int, k: int = 5):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, k, stride=2, padding=k // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.norm = nn.InstanceNorm2d(cout)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.pointwise(self.depthwise(x))))


class FiLM(nn.Module):
    """Feature-wise affine modulation from the λ embedding; identity at init."""

    def __init__(self, emb_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(emb).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class UpscaleBlock(nn.Module):
    """Conv to 2× the input channels, IN, LReLU(0.1), pixel shuffle (W,H ×2, C ÷4) (§3.1)."""

    def __init__(self, cin: int, cout: int, film_dim: int = 0):
        super().__init__()
        self.conv = _conv(cin, 4 * cout, 3)
        self.norm = nn.InstanceNorm2d(4 * cout)
        self.act = nn.LeakyReLU(0.1)
        self.shuffle = nn.PixelShuffle(2)
        self.film = FiLM(film_dim, 4 * cout) if film_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm(self.conv(x))
        if self.film is not None and emb is not None:
            y = self.film(y, emb)
        return self.shuffle(self.act(y))


class ResidualBlock(nn.Module):
    """x + Conv–LReLU(0.2)–Conv (§3.1, §4)."""

    def __init__(self, ch: int, film_dim: int = 0):
        super().__init__()
        self.conv1 = _conv(ch, ch, 3)
        self.act = nn.LeakyReLU(0.2)
        self.conv2 = _conv(ch, ch, 3)
        self.film = FiLM(film_dim, ch) if film_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv2(self.act(self.conv1(x)))
        if self.film is not None and emb is not None:
            y = self.film(y, emb)
        return x + y


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) on every convolution weight (§4); FiLM projections stay zero."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)


# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------
class Generator(nn.Module):
    """G(x_distorted, e_target[, λ]) → (image in [−1, 1], mask in [0, 1]) (§3.1, Fig. 2a)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        ec = [cfg.ch(c) for c in cfg.enc_channels]
        k = cfg.enc_kernel
        # encoder
        self.enc_in = nn.Sequential(_conv(3, ec[0], k), nn.LeakyReLU(0.1))
        self.enc_down = nn.ModuleList(SeparableDown(ec[i], ec[i + 1], k) for i in range(5))
        enc_res = [cfg.size // 2 ** (i + 1) for i in range(5)]
        if cfg.unet_res not in enc_res:
            raise DeidError(f"U-net resolution {cfg.unet_res} is not an encoder stage {enc_res}")
        self.unet_stage = enc_res.index(cfg.unet_res)
        self.unet_proj = _conv(ec[self.unet_stage + 1], cfg.unet_channels, 1)
        self.enc_final = enc_res[-1]
        self.enc_fc = nn.Linear(ec[-1] * self.enc_final ** 2, cfg.latent_dim, bias=False)
        # λ conditioning
        self.lam_dim = cfg.lam_embed_dim if cfg.lam_cond else 0
        if cfg.lam_cond:
            self.lam_mlp = nn.Sequential(nn.Linear(1, cfg.lam_embed_dim), nn.LeakyReLU(0.2),
                                         nn.Linear(cfg.lam_embed_dim, cfg.lam_embed_dim))
        film_dim = self.lam_dim if (cfg.lam_cond and cfg.lam_film) else 0
        concat_dim = self.lam_dim if (cfg.lam_cond and cfg.lam_concat) else 0
        # decoder
        c0 = cfg.ch(cfg.dec_channels)
        self.dec_c0 = c0
        self.dec_fc = nn.Linear(cfg.latent_dim + cfg.id_dim + concat_dim,
                                c0 * cfg.dec_start ** 2, bias=False)
        self.dec_blocks = nn.ModuleList()
        self.unet_after = None
        c, res = c0, cfg.dec_start
        for i, n_res in enumerate(cfg.dec_res_blocks):
            cin = c + (cfg.unet_channels if res == cfg.unet_res else 0)
            if res == cfg.unet_res:
                self.unet_after = len(self.dec_blocks)   # concat before this block
            cout = max(4, cfg.dec_min_channels, c // 2)
            self.dec_blocks.append(UpscaleBlock(cin, cout, film_dim))
            c, res = cout, res * 2
            for _ in range(n_res):
                self.dec_blocks.append(ResidualBlock(c, film_dim))
        if self.unet_after is None:
            raise DeidError(f"U-net resolution {cfg.unet_res} is not a decoder stage")
        self.out_channels = c
        if cfg.flow_px > 0:      # warp head: the raw output is the source, reshaped
            self.to_flow = _conv(c, 2, k)
            if cfg.flow_luma > 0:    # … and re-shaded: one value added to R, G and B alike
                self.to_luma = _conv(c, 1, k)
        else:
            self.to_image = _conv(c, 3, k)
        self.to_mask = _conv(c, 1, k)
        init_weights(self)
        if cfg.flow_px > 0:
            nn.init.zeros_(self.to_flow.weight)      # starts as the identity warp
            if cfg.flow_luma > 0:
                nn.init.zeros_(self.to_luma.weight)

    def lam_values(self, lam: torch.Tensor | float | None, n: int, device) -> torch.Tensor:
        """λ as one feature per example (:func:`lam_feature`), N×1."""
        if lam is None:
            raise DeidError("this λ-conditioned generator needs a λ value")
        lam_t = torch.as_tensor(lam, dtype=torch.float32, device=device).reshape(-1)
        if lam_t.numel() == 1:
            lam_t = lam_t.expand(n)
        if lam_t.numel() != n:
            raise DeidError(f"λ must be a scalar or one value per example ({n}), got {lam_t.numel()}")
        return lam_feature(lam_t, self.cfg)[:, None]

    def lam_embedding(self, lam: torch.Tensor | float | None, n: int, device) -> torch.Tensor | None:
        if not self.cfg.lam_cond:
            return None
        return self.lam_mlp(self.lam_values(lam, n, device))

    def decode(self, x: torch.Tensor, id_emb: torch.Tensor, lam: torch.Tensor | float | None
               ) -> torch.Tensor:
        """Encoder, latent ⊕ descriptor (⊕ λ), decoder: the last decoder features (§3.1)."""
        n = x.shape[0]
        if x.shape[1:] != (3, self.cfg.size, self.cfg.size):
            raise DeidError(f"generator input must be N×3×{self.cfg.size}×{self.cfg.size}, "
                            f"got {tuple(x.shape)}")
        if id_emb.shape != (n, self.cfg.id_dim):
            raise DeidError(f"identity embedding must be N×{self.cfg.id_dim}, got {tuple(id_emb.shape)}")
        h = self.enc_in(x)
        skip = None
        for i, down in enumerate(self.enc_down):
            h = down(h)
            if i == self.unet_stage:
                skip = self.unet_proj(h)
        latent = self.enc_fc(h.flatten(1))
        emb = self.lam_embedding(lam, n, x.device)
        ident = id_emb.to(latent.dtype)
        if self.cfg.id_norm:   # equal magnitudes for latent and descriptor (§3.1 concatenation)
            latent = rms_normalise(latent)
            ident = rms_normalise(ident)
        parts = [latent, ident]
        if emb is not None and self.cfg.lam_concat:
            parts.append(emb.to(latent.dtype))
        z = self.dec_fc(torch.cat(parts, dim=1))
        h = z.view(n, self.dec_c0, self.cfg.dec_start, self.cfg.dec_start)
        film = emb if self.cfg.lam_film else None
        for j, block in enumerate(self.dec_blocks):
            if j == self.unet_after:
                h = torch.cat([h, skip.to(h.dtype)], dim=1)
            h = block(h, film)
        return h

    def warp_fields(self, h: torch.Tensor, lam: torch.Tensor | float | None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The warp head's output on decoder features ``h``: the flow (N×2×S×S, crop pixels,
        x then y) and the luma change (N×1×S×S in [−1, 1] units, or None), both already
        scaled by the dial's position when ``flow_dial``."""
        cfg = self.cfg
        if cfg.flow_px <= 0:
            raise DeidError("this generator has an image head, not a warp head (flow_px = 0)")
        dial = (self.lam_values(lam, h.shape[0], h.device).clamp(0, 1)[:, :, None, None]
                if cfg.flow_dial and cfg.lam_cond else 1.0)    # bounds ∝ the dial's position
        flow = smooth_field(self.to_flow(h), cfg.flow_px, cfg.flow_grid) * dial
        if cfg.flow_luma <= 0:
            return flow, None
        raw = self.to_luma(h)        # equal in R, G, B: BT.601 Cb and Cr stay the source's
        shade = (smooth_field(raw, cfg.flow_luma, cfg.luma_grid) if cfg.luma_grid
                 else cfg.flow_luma * torch.tanh(raw.float()))
        return flow, shade * dial

    def reshape(self, x: torch.Tensor, id_emb: torch.Tensor, lam: torch.Tensor | float | None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """A warp head's (flow, luma change, mask) without rendering the crop: the pipeline
        applies them to the full-resolution frame (:meth:`FaceAligner.process`)."""
        h = self.decode(x, id_emb, lam)
        flow, shade = self.warp_fields(h, lam)
        return flow, shade, torch.sigmoid(self.to_mask(h))

    def forward(self, x: torch.Tensor, id_emb: torch.Tensor,
                lam: torch.Tensor | float | None = None, source: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw output z_raw in [−1, 1], mask m) (§3.1). ``source``: the undistorted crop a
        warp head reshapes (default ``x``)."""
        h = self.decode(x, id_emb, lam)
        mask = torch.sigmoid(self.to_mask(h))
        if self.cfg.flow_px > 0:
            flow, shade = self.warp_fields(h, lam)
            return render_warp(x if source is None else source, flow, shade).to(mask.dtype), mask
        return torch.tanh(self.to_image(h)), mask


class Discriminator(nn.Module):
    """Four strided convs (k4 s2) with LReLU(0.2), IN on all but the first, then a sigmoid
    convolution covering the remaining map → one output per image (§3.1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        chs = [cfg.ch(c) for c in cfg.disc_channels]
        layers: list[nn.Module] = []
        cin = 3
        for i, c in enumerate(chs):
            layers.append(nn.Conv2d(cin, c, 4, stride=2, padding=1, bias=False))
            if i > 0:
                layers.append(nn.InstanceNorm2d(c))
            layers.append(nn.LeakyReLU(0.2))
            cin = c
        final = cfg.size // 16
        layers.append(nn.Conv2d(cin, 1, final, stride=1, padding=0, bias=False))
        layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)   # N×1


class PatchDiscriminator(nn.Module):
    """Multi-scale patch discriminator with logits (pix2pixHD-style, spectral norm, no norm
    layers): at each of ``disc_scales`` pyramid levels three strided k4 convs and a k3 logit
    conv; returns N×P, every patch logit of every scale (``deid`` recipe)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        chs = [max(16, cfg.ch(c)) for c in cfg.disc_channels[:3]]
        self.scales = nn.ModuleList()
        for _ in range(cfg.disc_scales):
            layers: list[nn.Module] = []
            cin = 3
            for c in chs:
                layers += [sn(nn.Conv2d(cin, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
                cin = c
            layers.append(sn(nn.Conv2d(cin, 1, 3, padding=1)))
            self.scales.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i, net in enumerate(self.scales):
            if i:
                x = nn.functional.avg_pool2d(x, 2)
            outs.append(net(x).flatten(1))
        return torch.cat(outs, 1)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    """The §3.1 discriminator or the recipe's patch discriminator, by ``cfg.disc_kind``."""
    return PatchDiscriminator(cfg) if cfg.disc_kind == "patch" else Discriminator(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(cfg: ModelConfig) -> tuple[Generator, nn.Module]:
    return Generator(cfg), build_discriminator(cfg)

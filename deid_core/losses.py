"""The losses of §3.2 and §3.2.1, one function per term, and the compound loss.

Notation (paper): x the undistorted source (= target t during training), z^raw the decoder's
image, m its mask, z^masked = m·z^raw + (1 − m)·x (step g).

Normalisation: every ‖·‖₁ / ‖·‖₂² is the mean over elements and batch (the paper's c_n = 1 /
element count for the perceptual terms; the same convention for the pixel terms so that
α0..α5 weigh comparable magnitudes). The α's are applied once, in :func:`compound_loss`
(the paper writes α inside each term's equation and again in the sum; we apply it once).

λ units (deviation): with mean-normalised terms the paper's λ (1e-7 … 2e-6) has no
measurable effect, so λ is kept in the paper's units everywhere (configs, CLI, checkpoints)
and multiplied by ``LossConfig.lam_unit`` inside the perceptual loss. The sign makes the
output move AWAY from the target identity: the compound loss contains −λ·ℓ₁ₓ₁(t, z), so
minimising it increases the descriptor distance to the target.

The ``deid`` recipe (:mod:`deid_core.recipe`) adds, one function each: per-layer normalised
perceptual attractors (:func:`ell_normalised`), a bounded repeller
(:func:`loss_repeller_hinge`), a non-saturating patch-GAN loss with the mixup labels
(:func:`loss_discriminator_ns`, :func:`loss_generator_ns`), a skin-tone/texture constraint
(:func:`loss_colour`) and a mask floor inside the face hull (:func:`loss_mask_floor`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from deid_core.errors import DeidError
from deid_core.identity.dlib_resnet import PAPER_LAYERS as DLIB_PAPER_LAYERS
from deid_core.transfer import gaussian_blur, rgb_to_ycbcr
from deid_core.recipe import RecipeConfig


@dataclass
class LossConfig:
    """Weights of the compound loss L (§3.2) and the perceptual-loss layer mapping."""
    alpha0: float = 0.5          # L_G
    alpha1: float = 0.5          # L_R^raw + L_R^masked
    alpha2: float = 0.5          # L_x, L_y (raw and masked)
    alpha3: float = 0.5          # L_p^raw + L_p^masked
    alpha4: float = 3e-3         # L^m
    alpha5: float = 1e-2         # L_x^m + L_y^m
    mixup_alpha: float = 0.2     # λβ ~ Beta(0.2, 0.2)
    lam_unit: float = 5e6        # paper-λ → our mean-normalised units (see module docstring)
    # identity-network layer mapping (None = automatic, see PerceptualLoss.resolve_layers)
    source_layers: tuple[str, ...] | None = None   # paper 112², 56², 28²
    target_layer: str | None = None                # paper 7²
    descriptor: str = "descriptor"                 # paper 1×1


# ---------------------------------------------------------------------------- helpers


def masked_output(z_raw: torch.Tensor, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """z^masked = m·z^raw + (1 − m)·x (§3, test-time step g applied in training)."""
    return mask * z_raw + (1 - mask) * x


def dx(img: torch.Tensor) -> torch.Tensor:
    """Spatial derivative along x (width): forward difference."""
    return img[..., :, 1:] - img[..., :, :-1]


def dy(img: torch.Tensor) -> torch.Tensor:
    """Spatial derivative along y (height): forward difference."""
    return img[..., 1:, :] - img[..., :-1, :]


def _per_example(lam: torch.Tensor | float, n: int, device) -> torch.Tensor:
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=device).reshape(-1)
    if lam_t.numel() == 1:
        lam_t = lam_t.expand(n)
    if lam_t.numel() != n:
        raise DeidError(f"λ must be a scalar or one value per example ({n}), got {lam_t.numel()}")
    return lam_t


# ------------------------------------------------------------- adversarial (LSGAN + mixup)


def sample_mixup(n: int, alpha: float = 0.2, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    """λβ ~ Beta(α, α), one per example, shape N×1×1×1 (§3.2, mixup [52])."""
    # Beta via two Gammas with an explicit generator (torch.distributions has no generator arg)
    a = torch._standard_gamma(torch.full((n,), float(alpha)), generator=generator)
    b = torch._standard_gamma(torch.full((n,), float(alpha)), generator=generator)
    lam_b = a / (a + b).clamp_min(1e-12)
    lam_b = torch.nan_to_num(lam_b, nan=0.5)
    return lam_b.view(n, 1, 1, 1).to(device) if device is not None else lam_b.view(n, 1, 1, 1)


def mixup(x: torch.Tensor, z_masked: torch.Tensor, mix_beta: torch.Tensor) -> torch.Tensor:
    """δ_mx = λβ·x + (1 − λβ)·z^masked (§3.2)."""
    return mix_beta * x + (1 - mix_beta) * z_masked


def loss_discriminator(d_out: torch.Tensor, mix_beta: torch.Tensor) -> torch.Tensor:
    """L_D = ‖D(δ_mx) − λβ·𝟙‖₂² (§3.2, LSGAN [30]); mean over the batch."""
    return (d_out.float() - mix_beta.reshape(d_out.shape[0], 1)).square().mean()


def loss_generator_adv(d_out: torch.Tensor, mix_beta: torch.Tensor) -> torch.Tensor:
    """L_G = ‖D(δ_mx) − (1 − λβ)·𝟙‖₂² (§3.2; α0 applied in :func:`compound_loss`)."""
    return (d_out.float() - (1 - mix_beta.reshape(d_out.shape[0], 1))).square().mean()


# -------------------------------------------------------------------------- pixel terms


def loss_reconstruction(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L_R = ‖z − x‖₁ for z = z^raw or z^masked (§3.2)."""
    return (z.float() - x.float()).abs().mean()


def loss_derivative_x(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L_x = ‖z_x − x_x‖₁, edge-preserving loss along x (§3.2)."""
    return (dx(z.float()) - dx(x.float())).abs().mean()


def loss_derivative_y(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L_y = ‖z_y − x_y‖₁, edge-preserving loss along y (§3.2)."""
    return (dy(z.float()) - dy(x.float())).abs().mean()


def loss_mask(m: torch.Tensor) -> torch.Tensor:
    """L^m = ‖m‖₁: keep the mask minimal (§3.2)."""
    return m.float().abs().mean()


def loss_mask_derivative_x(m: torch.Tensor) -> torch.Tensor:
    """L_x^m = ‖m_x‖₁: keep the mask smooth along x (§3.2)."""
    return dx(m.float()).abs().mean()


def loss_mask_derivative_y(m: torch.Tensor) -> torch.Tensor:
    """L_y^m = ‖m_y‖₁: keep the mask smooth along y (§3.2)."""
    return dy(m.float()).abs().mean()


# ---------------------------------------------------------------- deid recipe terms


def loss_discriminator_ns(d_out: torch.Tensor, mix_beta: torch.Tensor) -> torch.Tensor:
    """Non-saturating D loss on logits with the mixup label λβ per example (every patch):
    BCE(D(δ_mx), λβ) (``deid`` recipe; the paper's LSGAN target λβ, on logits)."""
    target = mix_beta.reshape(d_out.shape[0], 1).expand_as(d_out).to(d_out.dtype)
    return F.binary_cross_entropy_with_logits(d_out.float(), target.float())


def loss_generator_ns(d_out: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss on logits of pure outputs: softplus(−D(z)) = −log σ(D(z))."""
    return F.softplus(-d_out.float()).mean()


def high_pass(img: torch.Tensor, k: int = 5) -> torch.Tensor:
    """img − box blur (k×k, reflect padding): the detail a texture lives in."""
    blur = F.avg_pool2d(F.pad(img, (k // 2,) * 4, mode="reflect"), k, stride=1)
    return img - blur


def loss_colour(z: torch.Tensor, x: torch.Tensor, low: int = 8) -> torch.Tensor:
    """Skin tone and texture kept: ‖pool₈ₓ₈(z) − pool₈ₓ₈(x)‖₁ (colour and illumination at
    1/16 resolution) + ‖HP(Cb,Cr of z) − HP(Cb,Cr of x)‖₁ (no colourful high-frequency
    pattern); identity changes live in shape and luma detail, which stay free."""
    z, x = z.float(), x.float()
    lowpass = (F.adaptive_avg_pool2d(z, low) - F.adaptive_avg_pool2d(x, low)).abs().mean()
    cz, cx = rgb_to_ycbcr(z)[:, 1:], rgb_to_ycbcr(x)[:, 1:]
    return lowpass + (high_pass(cz) - high_pass(cx)).abs().mean()


def mid_band_change(z: torch.Tensor, x: torch.Tensor, grid: int = 32) -> torch.Tensor:
    """|pool(YCbCr of z) − pool(YCbCr of x)| on a ``grid``×``grid`` lattice (4-px blocks at
    128 px), N×3×grid×grid: the band between :func:`loss_colour`'s 8×8 low-pass and its
    high-pass, where tinted irises, coloured teeth and a bright nose stripe live."""
    return (F.adaptive_avg_pool2d(rgb_to_ycbcr(z.float()), grid)
            - F.adaptive_avg_pool2d(rgb_to_ycbcr(x.float()), grid)).abs()


def loss_chroma_mid(z: torch.Tensor, x: torch.Tensor, grid: int = 32) -> torch.Tensor:
    """Mean of the mid-band chroma change (:func:`mid_band_change`, Cb and Cr). Chroma only:
    luma shape stays free."""
    return mid_band_change(z, x, grid)[:, 1:].mean()


def loss_mid_peak(z: torch.Tensor, x: torch.Tensor, band: str = "chroma", top: float = 0.05,
                  grid: int = 32) -> torch.Tensor:
    """Mean of the largest ``top`` fraction of the mid-band change (:func:`mid_band_change`)
    over a ``grid``×``grid`` lattice, per example. ``band="chroma"``: |Δ pool(Cb)| + |Δ pool(Cr)|
    (an orange nose); ``"luma"``: |Δ pool(Y)| (a white nose bridge with dark outlines). A patch
    on a few blocks costs as much as one spread over the face, unlike a mean (the colour shift
    p95 of :mod:`deid_core.evaluate.naturalness` reads the same tail)."""
    if band not in ("chroma", "luma"):
        raise DeidError(f"mid-band peak: band must be 'chroma' or 'luma', got {band!r}")
    d = mid_band_change(z, x, grid)
    d = d[:, 1:].sum(1) if band == "chroma" else d[:, 0]
    k = max(1, int(round(top * grid * grid)))
    return d.flatten(1).topk(k, dim=1).values.mean()


def loss_detail_peak(z: torch.Tensor, x: torch.Tensor, tol: float = 0.3, top: float = 0.05,
                     block: int = 8, eps: float = 1e-4) -> torch.Tensor:
    """Detail added on a few blocks (dark nostrils, a white nose bridge): per ``block``×``block``
    cell, the energy of the band ``blur₁(YCbCr) − blur₂(YCbCr)`` (1 and 2 px, the band of
    :func:`deid_core.evaluate.naturalness.hf_energy` at 128 px); the hinge
    max(0, log((E_z + eps) / (E_x + eps)) − log(1 + tol)) averaged over the largest ``top``
    fraction of cells, per example. Removing detail costs nothing here (the pixel terms see
    blur); the local detail peak gate reads the same ratio."""
    def energy(im: torch.Tensor) -> torch.Tensor:
        y = rgb_to_ycbcr(im.float())
        band = gaussian_blur(y, 1.0) - gaussian_blur(y, 2.0)
        return F.avg_pool2d(band.pow(2).sum(1, keepdim=True), block)
    ratio = torch.log((energy(z) + eps) / (energy(x) + eps)) - math.log1p(tol)
    d = ratio.clamp_min(0).flatten(1)
    k = max(1, int(round(top * d.shape[1])))
    return d.topk(k, dim=1).values.mean()


def loss_luma_mid(z: torch.Tensor, x: torch.Tensor, tol: float, grid: int = 32) -> torch.Tensor:
    """Hinge ‖max(0, |pool(Y of z) − pool(Y of x)| − tol)‖₁ on a ``grid``×``grid`` lattice
    (4-px blocks at 128 px): luma edits of that scale are free up to ``tol`` ([−1, 1] units),
    so a face may change shape and shading, but a glaring highlight or a dark socket costs."""
    return (mid_band_change(z, x, grid)[:, :1] - tol).clamp_min(0).mean()


def loss_mask_floor(m: torch.Tensor, region: torch.Tensor,
                    floor: torch.Tensor | float, eps: float = 1e-12) -> torch.Tensor:
    """Mean over ``region`` (1×1×H×W in {0, 1}, the face hull) of max(0, logit(floor) −
    logit(m)): the mask may not hide the raw output inside the face. Measured in logit space,
    so a saturated sigmoid mask (m ≈ 0 after the reconstruction phase) still gets a gradient
    of the same size (d logit(m) / d pre-activation = 1). ``floor``: scalar or per example;
    a floor of 0 asks nothing."""
    region = region.to(m.dtype)
    floor = torch.as_tensor(floor, dtype=torch.float32, device=m.device).reshape(-1, 1, 1, 1)
    gap = (torch.logit(floor.clamp(eps, 1 - eps)) - torch.logit(m.float(), eps=eps)).clamp_min(0)
    gap = torch.where(floor > 0, gap, torch.zeros_like(gap))
    per = (gap * region).flatten(1).sum(1) / region.sum().clamp_min(1)
    return per.mean()


def unit_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L2 distance between unit-normalised descriptors, per example (0 … 2)."""
    return (F.normalize(a.float(), dim=1) - F.normalize(b.float(), dim=1)).norm(dim=1)


def loss_repeller_hinge(desc_t: torch.Tensor, desc_z: torch.Tensor,
                        margin: torch.Tensor | float) -> torch.Tensor:
    """Bounded repeller max(0, margin − d(e_t, e_z)) per example (N,): pushes the output's
    identity away from the target until it is ``margin`` away, then stops."""
    d = unit_distance(desc_t, desc_z)
    margin = torch.as_tensor(margin, dtype=d.dtype, device=d.device)
    return (margin - d).clamp_min(0)


def ell_normalised(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ℓ divided by the mean magnitude of the reference features ``a`` (per example, no
    gradient through the scale): every layer then weighs ~1 (``deid`` recipe)."""
    scale = a.detach().float().abs().flatten(1).mean(1) + eps
    return ell(a, b) / scale


# ----------------------------------------------------------- multi-image perceptual loss


def ell(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ℓ^{r1,r2}_{n×n} = c_n‖a_{r1} − a_{r2}‖₁ with c_n = 1/element count, per example (N,)."""
    return (a.float() - b.float()).abs().flatten(1).mean(1)


def loss_perceptual(feat_z: dict[str, torch.Tensor], feat_s: dict[str, torch.Tensor],
                    feat_t: dict[str, torch.Tensor], lam: torch.Tensor | float,
                    source_layers: tuple[str, ...], target_layer: str,
                    descriptor: str = "descriptor") -> torch.Tensor:
    """L_p^c = ℓ112(s,z^c) + ℓ56(s,z^c) + ℓ28(s,z^c) + ℓ7(t,z^c) − λ·ℓ1×1(t,z^c) (§3.2.1, eq. L_p^c).

    ``lam`` is already in loss units (scalar or one per example: the λ-conditioned variant
    uses each example's own λ). Returns the batch mean.
    """
    n = feat_z[descriptor].shape[0]
    total = perceptual_attractors(feat_z, feat_s, feat_t, source_layers, target_layer)
    lam_t = _per_example(lam, n, total.device)
    total = total - lam_t * ell(feat_t[descriptor], feat_z[descriptor])
    return total.mean()


def perceptual_attractors(feat_z: dict[str, torch.Tensor], feat_s: dict[str, torch.Tensor],
                          feat_t: dict[str, torch.Tensor], source_layers: tuple[str, ...],
                          target_layer: str, fn: Callable = ell) -> torch.Tensor:
    """The attractor part of L_p^c per example (N,): Σ ℓ(s, z) over the source layers + ℓ(t, z)
    at the target layer (§3.2.1); ``fn`` is :func:`ell` or :func:`ell_normalised`."""
    total = sum(fn(feat_s[k], feat_z[k]) for k in source_layers)
    return total + fn(feat_t[target_layer], feat_z[target_layer])


class PerceptualLoss:
    """Multi-image perceptual loss over a frozen identity network (§3.2.1).

    ``identity`` must be frozen (``requires_grad`` False, eval mode) and expose
    ``features(x) -> dict`` (4-D activation maps plus the descriptor). If it also has
    ``crop_to_chip_tensor`` and ``crop_landmarks`` (68×2, crop pixels) are given, the aligned
    crops are first mapped to the network's own chip (differentiably).

    Layer mapping: the paper's 112², 56², 28², 7² maps and 1×1 descriptor (VGGFace2
    ResNet-50 at 224 px) are taken from the network's documented ``PAPER_LAYERS`` when it
    has one — dlib ResNet-29 port at 150 px: a72 (32×72²), a35 (32×35²), a17 (64×17²),
    a4 (256×4², same downsampling factor 32 as 7² at 224 px) and the 128-d descriptor.
    Otherwise (e.g. test fakes) automatic: the three highest-resolution maps, then the map
    whose side is closest to 7 among the rest, then the descriptor.
    """

    def __init__(self, identity, cfg: LossConfig | None = None, crop_landmarks=None):
        self.identity = identity
        self.cfg = cfg or LossConfig()
        module = identity if hasattr(identity, "parameters") else getattr(identity, "net", None)
        params = list(module.parameters()) if module is not None else []
        if any(p.requires_grad for p in params):
            raise DeidError("the identity network of the perceptual loss must be frozen "
                            "(requires_grad False)")
        if getattr(module, "training", False):
            raise DeidError("the identity network of the perceptual loss must be in eval mode")
        self.crop_landmarks = crop_landmarks
        paper = self.paper_layers(identity)
        self.source_layers = self.cfg.source_layers or (
            (paper[112], paper[56], paper[28]) if paper else None)
        self.target_layer = self.cfg.target_layer or (paper[7] if paper else None)
        self.descriptor = self.cfg.descriptor

    @staticmethod
    def paper_layers(identity) -> dict[int, str] | None:
        """The network's own documented mapping {112, 56, 28, 7, 1: key}, if it has one
        (dlib port: a72, a35, a17, a4, descriptor — matched by downsampling factor)."""
        layers = getattr(identity, "paper_layers", None)
        if layers is None and getattr(identity, "name", None) == "dlib":
            layers = DLIB_PAPER_LAYERS
        return dict(layers) if layers else None

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.crop_landmarks is not None and hasattr(self.identity, "crop_to_chip_tensor"):
            x = self.identity.crop_to_chip_tensor(x, self.crop_landmarks)
        feats = self.identity.features(x)
        if self.source_layers is None or self.target_layer is None:
            self.resolve_layers(feats)
        return feats

    def resolve_layers(self, feats: dict[str, torch.Tensor]) -> None:
        maps = sorted(((v.shape[-1], k) for k, v in feats.items() if v.dim() == 4), reverse=True)
        if self.descriptor not in feats:
            flat = [k for k, v in feats.items() if v.dim() == 2]
            if not flat:
                raise DeidError(f"identity network features have no descriptor: {list(feats)}")
            self.descriptor = flat[-1]
        if len(maps) < 4:
            raise DeidError(f"identity network exposes {len(maps)} spatial maps, need ≥ 4")
        if self.source_layers is None:
            self.source_layers = tuple(k for _, k in maps[:3])
        if self.target_layer is None:
            rest = [(abs(s - 7), -s, k) for s, k in maps if k not in self.source_layers]
            self.target_layer = min(rest)[2]

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Target descriptor e(t) for conditioning the generator (frozen, no gradient)."""
        return self.features(x)[self.descriptor].float()

    def __call__(self, z: torch.Tensor, feat_s: dict, feat_t: dict, lam) -> torch.Tensor:
        lam_units = torch.as_tensor(lam, dtype=torch.float32, device=z.device) * self.cfg.lam_unit
        return loss_perceptual(self.features(z), feat_s, feat_t, lam_units,
                               self.source_layers, self.target_layer, self.descriptor)


# ------------------------------------------------------------------------ compound loss


def compound_loss(terms: dict[str, torch.Tensor], cfg: LossConfig,
                  recipe: RecipeConfig | None = None) -> torch.Tensor:
    """L = α0 L_G + α1(L_R^raw + L_R^masked) + α2(L_x^raw + L_y^raw + L_x^masked + L_y^masked)
    + α3(L_p^raw + L_p^masked) + α4 L^m + α5(L_x^m + L_y^m) (§3.2, first equation).

    The ``deid`` recipe scales α1, α2 by ``pixel_weight``, replaces α0 by ``gan_weight`` and
    adds ``colour``·(colour terms) + ``chroma_mid``·(mid-band chroma terms) + ``luma_mid``·(mid-band
    luma hinges) + ``chroma_peak``, ``luma_peak``·(their top-5% tails) + ``detail_peak``·(added
    detail on a few blocks) + the mask floor. Missing terms (e.g. no perceptual
    network, no discriminator) count as 0.
    """
    recipe = recipe or RecipeConfig()
    g = lambda k: terms.get(k, 0.0)
    a0 = cfg.alpha0 if recipe.gan_weight is None else recipe.gan_weight
    pw = recipe.pixel_weight
    return (a0 * g("G")
            + pw * cfg.alpha1 * (g("R_raw") + g("R_masked"))
            + pw * cfg.alpha2 * (g("x_raw") + g("y_raw") + g("x_masked") + g("y_masked"))
            + cfg.alpha3 * (g("p_raw") + g("p_masked"))
            + cfg.alpha4 * g("m")
            + cfg.alpha5 * (g("x_m") + g("y_m"))
            + recipe.colour * (g("colour_raw") + g("colour_masked"))
            + recipe.chroma_mid * (g("chroma_mid_raw") + g("chroma_mid_masked"))
            + recipe.luma_mid * (g("luma_mid_raw") + g("luma_mid_masked"))
            + recipe.chroma_peak * g("chroma_peak_masked")
            + recipe.luma_peak * g("luma_peak_masked")
            + recipe.detail_peak * g("detail_peak_masked")
            + g("mask_floor"))


def perceptual_recipe(f_z: dict[str, torch.Tensor], feat_s: dict[str, torch.Tensor],
                      feat_t: dict[str, torch.Tensor], lam: torch.Tensor,
                      perceptual: "PerceptualLoss", recipe: RecipeConfig,
                      ramp: float = 1.0) -> torch.Tensor:
    """L_p^c under a recipe (§3.2.1): attractors on the source layers and the target layer
    (normalised per layer with ``perceptual_norm``) plus the repeller — the paper's linear
    −λ·ℓ1×1 or the bounded hinge — weighted by the curriculum ``ramp``. Batch mean."""
    fn = ell_normalised if recipe.perceptual_norm else ell
    desc, n = perceptual.descriptor, f_z[perceptual.descriptor].shape[0]
    lam_t = _per_example(lam, n, f_z[desc].device)
    attract = perceptual_attractors(f_z, feat_s, feat_t, perceptual.source_layers,
                                    perceptual.target_layer, fn)
    if recipe.repeller == "linear":
        repel = -(lam_t * perceptual.cfg.lam_unit) * ell(feat_t[desc], f_z[desc])
    else:
        repel = recipe.repeller_weight * loss_repeller_hinge(feat_t[desc], f_z[desc],
                                                             recipe.margin(lam_t))
    return (attract + ramp * repel).mean()


def generator_terms(x: torch.Tensor, z_raw: torch.Tensor, mask: torch.Tensor,
                    d_out: torch.Tensor | None = None, mix_beta: torch.Tensor | None = None,
                    perceptual: PerceptualLoss | None = None, feat_x: dict | None = None,
                    lam: torch.Tensor | float = 0.0, recipe: RecipeConfig | None = None,
                    ramp: float = 1.0, d_out_raw: torch.Tensor | None = None,
                    face_region: torch.Tensor | None = None,
                    view: Callable | None = None) -> dict[str, torch.Tensor]:
    """All per-term generator losses of §3.2 for one batch (target = source x in training).

    ``d_out``: the paper's D(δ_mx) (LSGAN) or, for ``gan="ns"``, D's logits of z^masked
    (``d_out_raw``: of z^raw). ``view(x, z_raw, z_masked)`` — the same random transform of
    all three for the loss network (``eot``); ``feat_x`` is then recomputed on the view.
    ``face_region``: 1×1×S×S hull of the template landmarks (mask floor).
    """
    recipe = recipe or RecipeConfig()
    z_masked = masked_output(z_raw, mask, x)
    t = {
        "R_raw": loss_reconstruction(z_raw, x), "R_masked": loss_reconstruction(z_masked, x),
        "x_raw": loss_derivative_x(z_raw, x), "y_raw": loss_derivative_y(z_raw, x),
        "x_masked": loss_derivative_x(z_masked, x), "y_masked": loss_derivative_y(z_masked, x),
        "m": loss_mask(mask), "x_m": loss_mask_derivative_x(mask),
        "y_m": loss_mask_derivative_y(mask),
    }
    if d_out is not None:
        if recipe.gan == "ns":
            t["G"] = loss_generator_ns(d_out)
            if d_out_raw is not None:
                t["G"] = t["G"] + loss_generator_ns(d_out_raw)
        else:
            t["G"] = loss_generator_adv(d_out, mix_beta)
    if recipe.colour > 0:
        t["colour_raw"] = loss_colour(z_raw, x)
        t["colour_masked"] = loss_colour(z_masked, x)
    if recipe.chroma_mid > 0:
        t["chroma_mid_raw"] = loss_chroma_mid(z_raw, x)
        t["chroma_mid_masked"] = loss_chroma_mid(z_masked, x)
    if recipe.chroma_peak > 0:   # what the viewer sees: the masked output only
        t["chroma_peak_masked"] = loss_mid_peak(z_masked, x, "chroma")
    if recipe.luma_peak > 0:
        t["luma_peak_masked"] = loss_mid_peak(z_masked, x, "luma")
    if recipe.detail_peak > 0:
        t["detail_peak_masked"] = loss_detail_peak(z_masked, x)
    if recipe.luma_mid > 0:
        t["luma_mid_raw"] = loss_luma_mid(z_raw, x, recipe.luma_mid_tol)
        t["luma_mid_masked"] = loss_luma_mid(z_masked, x, recipe.luma_mid_tol)
    if recipe.mask_floor > 0 and face_region is not None:
        # the floor grows with the dial (full from floor_full_at of it): λ = 0 keeps the input
        frac = (recipe.dial_fraction(_per_example(lam, x.shape[0], x.device))
                / recipe.floor_full_at).clamp(0, 1)
        t["mask_floor"] = ramp * loss_mask_floor(mask, face_region, recipe.mask_floor * frac)
    if perceptual is not None:
        n = x.shape[0]
        lam_t = torch.as_tensor(lam, dtype=torch.float32, device=x.device)
        zr, zm = z_raw, z_masked
        if view is not None:
            xv, zr, zm = view(x, z_raw, z_masked)
            with torch.no_grad():
                feat_x = {k: v.detach().float() for k, v in perceptual.features(xv).items()}
        both = perceptual.features(torch.cat([zr, zm]))
        f_raw = {k: v[:n] for k, v in both.items()}
        f_masked = {k: v[n:] for k, v in both.items()}
        t["p_raw"] = perceptual_recipe(f_raw, feat_x, feat_x, lam_t, perceptual, recipe, ramp)
        t["p_masked"] = perceptual_recipe(f_masked, feat_x, feat_x, lam_t, perceptual, recipe, ramp)
        with torch.no_grad():   # logged: descriptor distances output → target
            t["id_dist"] = ell(feat_x[perceptual.descriptor], f_raw[perceptual.descriptor]).mean()
            t["id_unit"] = unit_distance(feat_x[perceptual.descriptor],
                                         f_raw[perceptual.descriptor]).mean()
    return t

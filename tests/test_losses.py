"""Each loss term of §3.2 / §3.2.1 against a value computed by hand on a tiny tensor."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from deid_core import losses as L
from deid_core.errors import DeidError

# x, z, m: 1×1×2×2.  Hand values are worked out in the comments.
X = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
Z = torch.tensor([[[[1.0, 1.0], [0.0, 4.0]]]])
M = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])


def test_masked_output():
    # m·z + (1−m)·x = [[0·1+1·0, .5·1+.5·1], [1·0+0·2, .25·4+.75·4]] = [[0, 1], [0, 4]]
    assert torch.equal(L.masked_output(Z, M, X), torch.tensor([[[[0.0, 1.0], [0.0, 4.0]]]]))


def test_reconstruction_l1():
    # |z−x| = [1, 0, 2, 0] → mean 0.75
    assert L.loss_reconstruction(Z, X).item() == pytest.approx(0.75)


def test_derivative_l1():
    # x_x = [1, 2], z_x = [0, 4] → |Δ| = [1, 2] → 1.5 ;  x_y = [2, 3], z_y = [-1, 3] → [3, 0] → 1.5
    assert L.loss_derivative_x(Z, X).item() == pytest.approx(1.5)
    assert L.loss_derivative_y(Z, X).item() == pytest.approx(1.5)
    # masked: z^m = [[0,1],[0,4]]: z_x = [1, 4] → |Δ| = [0, 2] → 1.0; z_y = [0, 3] → [2, 0] → 1.0
    zm = L.masked_output(Z, M, X)
    assert L.loss_derivative_x(zm, X).item() == pytest.approx(1.0)
    assert L.loss_derivative_y(zm, X).item() == pytest.approx(1.0)


def test_mask_terms():
    # ‖m‖₁ = (0 + .5 + 1 + .25)/4 = 0.4375 ; m_x = [.5, −.75] → 0.625 ; m_y = [1, −.25] → 0.625
    assert L.loss_mask(M).item() == pytest.approx(0.4375)
    assert L.loss_mask_derivative_x(M).item() == pytest.approx(0.625)
    assert L.loss_mask_derivative_y(M).item() == pytest.approx(0.625)


def test_lsgan_mixup_terms():
    d_out = torch.tensor([[0.8], [0.2]])
    lam_b = torch.tensor([0.9, 0.1]).view(2, 1, 1, 1)
    # L_D = mean((.8−.9)², (.2−.1)²) = 0.01 ; L_G = mean((.8−.1)², (.2−.9)²) = 0.49
    assert L.loss_discriminator(d_out, lam_b).item() == pytest.approx(0.01)
    assert L.loss_generator_adv(d_out, lam_b).item() == pytest.approx(0.49)
    # δ = λβ·x + (1−λβ)·z: λβ = .25, x = 4, z = 0 → 1
    assert L.mixup(torch.tensor(4.0), torch.tensor(0.0), torch.tensor(0.25)).item() == 1.0


def test_mixup_coefficients_follow_beta_0_2():
    from scipy.stats import beta
    lam_b = L.sample_mixup(20000, 0.2, generator=torch.Generator().manual_seed(0)).flatten()
    assert lam_b.shape == (20000,) and lam_b.min() >= 0 and lam_b.max() <= 1
    tails = ((lam_b < 0.1) | (lam_b > 0.9)).float().mean().item()
    expected = beta.cdf(0.1, 0.2, 0.2) * 2
    assert tails == pytest.approx(expected, abs=0.02) and abs(lam_b.mean().item() - 0.5) < 0.02


def _feats(a, b, c, d, desc):
    return {"a": torch.tensor(a).view(1, 1, 2, 2), "b": torch.tensor(b).view(1, 2, 1, 1),
            "c": torch.tensor(c).view(1, 1, 1, 1), "d": torch.tensor(d).view(1, 2, 1, 1),
            "descriptor": torch.tensor(desc).view(1, 4)}


def test_perceptual_loss_hand_value():
    s = _feats([0.0] * 4, [0.0, 0.0], [0.0], [1.0, 1.0], [0.0] * 4)      # s = t in training
    z = _feats([1.0] * 4, [1.0, 3.0], [-0.5], [0.0, 0.0], [1.0, 0.0, 0.0, -1.0])
    # ℓ_a = 1, ℓ_b = (1+3)/2 = 2, ℓ_c = .5, ℓ_d(t,z) = 1, ℓ_1×1(t,z) = 2/4 = .5 ; λ = 2
    # L_p = 1 + 2 + .5 + 1 − 2·.5 = 3.5
    v = L.loss_perceptual(z, s, s, 2.0, ("a", "b", "c"), "d")
    assert v.item() == pytest.approx(3.5)
    # per-example λ: batch of two copies with λ = (0, 2) → mean(4.5, 3.5) = 4.0
    s2 = {k: torch.cat([v_, v_]) for k, v_ in s.items()}
    z2 = {k: torch.cat([v_, v_]) for k, v_ in z.items()}
    v2 = L.loss_perceptual(z2, s2, s2, torch.tensor([0.0, 2.0]), ("a", "b", "c"), "d")
    assert v2.item() == pytest.approx(4.0)


def test_lambda_sign_pushes_away_from_target():
    t = {"a": torch.zeros(1, 1, 2, 2), "d": torch.zeros(1, 1, 1, 1), "descriptor": torch.zeros(1, 8)}
    desc = torch.full((1, 8), 0.1, requires_grad=True)
    z = {"a": torch.zeros(1, 1, 2, 2), "d": torch.zeros(1, 1, 1, 1), "descriptor": desc}
    L.loss_perceptual(z, t, t, 1.0, ("a",), "d").backward()
    # gradient descent step must increase |desc − t|
    assert (desc.grad < 0).all()


def test_compound_loss_weights():
    cfg = L.LossConfig()
    keys = ["G", "R_raw", "R_masked", "x_raw", "y_raw", "x_masked", "y_masked", "p_raw",
            "p_masked", "m", "x_m", "y_m"]
    ones = {k: torch.tensor(1.0) for k in keys}
    # .5 + .5·2 + .5·4 + .5·2 + 3e-3 + 1e-2·2 = 4.523
    assert L.compound_loss(ones, cfg).item() == pytest.approx(4.523)
    assert (cfg.alpha0, cfg.alpha1, cfg.alpha2, cfg.alpha3, cfg.alpha4, cfg.alpha5) == \
        (0.5, 0.5, 0.5, 0.5, 3e-3, 1e-2)


class FakeIdentity(nn.Module):
    """Small stand-in for the dlib port: maps of side 72, 35, 17, 8, 4 and a 128-d descriptor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 128)

    def features(self, x):
        h = torch.tanh(self.conv(x))
        out = {f"s{s}": nn.functional.adaptive_avg_pool2d(h, s) for s in (72, 35, 17, 8, 4)}
        out["descriptor"] = self.fc(h.mean((2, 3)))
        return out


def frozen_fake():
    f = FakeIdentity().eval()
    for p in f.parameters():
        p.requires_grad_(False)
    return f


def test_perceptual_module_requires_frozen_net_and_maps_layers():
    with pytest.raises(DeidError, match="frozen"):
        L.PerceptualLoss(FakeIdentity().eval())
    trainable = FakeIdentity()
    for p in trainable.parameters():
        p.requires_grad_(False)
    with pytest.raises(DeidError, match="eval mode"):
        L.PerceptualLoss(trainable.train())
    pl = L.PerceptualLoss(frozen_fake())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    e = pl.embed(x)
    assert e.shape == (2, 128)
    assert pl.source_layers == ("s72", "s35", "s17") and pl.target_layer == "s8"


def test_generator_terms_end_to_end_gradient():
    torch.manual_seed(0)
    pl = L.PerceptualLoss(frozen_fake())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_()
    m = torch.rand(2, 1, 16, 16).requires_grad_()
    feat_x = {k: v.detach() for k, v in pl.features(x).items()}
    terms = L.generator_terms(x, z, m, d_out=torch.rand(2, 1), mix_beta=torch.rand(2, 1, 1, 1),
                              perceptual=pl, feat_x=feat_x, lam=torch.tensor([0.0, 1e-6]))
    assert {"G", "R_raw", "p_raw", "p_masked", "m", "x_m", "y_m", "id_dist"} <= set(terms)
    # the compound is the α-weighted sum of exactly these terms
    total = L.compound_loss(terms, pl.cfg)
    manual = (0.5 * terms["G"] + 0.5 * (terms["R_raw"] + terms["R_masked"])
              + 0.5 * (terms["x_raw"] + terms["y_raw"] + terms["x_masked"] + terms["y_masked"])
              + 0.5 * (terms["p_raw"] + terms["p_masked"]) + 3e-3 * terms["m"]
              + 1e-2 * (terms["x_m"] + terms["y_m"]))
    assert total.item() == pytest.approx(manual.item())
    total.backward()
    assert z.grad.abs().sum() > 0 and m.grad.abs().sum() > 0


def test_perceptual_loss_uses_the_dlib_ports_paper_layers():
    """§3.2's layers of the loss network: the dlib port's documented mapping (112, 56, 28, 7, 1)."""
    from deid_core.identity.dlib_resnet import PAPER_LAYERS

    class NamedDlib:
        name = "dlib"
    assert L.PerceptualLoss.paper_layers(NamedDlib()) == dict(PAPER_LAYERS)

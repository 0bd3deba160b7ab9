"""Guards: the λ of the multi-image perceptual loss, known answers.

§3.2.1: L_p^c = Σ ℓ(s, z^c) + ℓ7(t, z^c) − λ·ℓ1×1(t, z^c). In the training code λ is given in
paper units and multiplied by ``LossConfig.lam_unit`` (:func:`deid_core.losses.generator_terms`),
so raising λ from 0 to λ must change each perceptual term by exactly
−λ · lam_unit · mean_i ℓ1×1(e(x_i), e(z_i)), with ℓ the mean absolute difference of the
descriptors — computed here by hand from a tiny fake identity network.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from deid_core.losses import LossConfig, PerceptualLoss, generator_terms, masked_output


class TinyIdentity(nn.Module):
    """Frozen fake identity network: four spatial maps (8, 6, 4, 2) and a 16-d descriptor."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4 * 4, 16, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) * 0.3)
        self.eval().requires_grad_(False)

    def features(self, x):
        h = torch.tanh(self.conv(x))
        out = {f"s{s}": nn.functional.adaptive_avg_pool2d(h, s) for s in (8, 6, 4, 2)}
        out["descriptor"] = self.fc(nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))
        return out


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    z = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    m = torch.rand(3, 1, 16, 16, generator=g)
    return x, z, m


@pytest.mark.parametrize("lam_unit", [LossConfig().lam_unit, 1234.5])
@pytest.mark.parametrize("lam", [2e-6, 1e-5])
def test_lambda_term_known_answer(batch, lam_unit, lam):
    x, z, m = batch
    ident = TinyIdentity()
    perc = PerceptualLoss(ident, LossConfig(lam_unit=lam_unit))
    feat_x = {k: v.detach() for k, v in perc.features(x).items()}
    t0 = generator_terms(x, z, m, perceptual=perc, feat_x=feat_x, lam=0.0)
    t1 = generator_terms(x, z, m, perceptual=perc, feat_x=feat_x, lam=lam)
    # ℓ1×1 by hand: per example mean |e(x) − e(z)|, then the batch mean
    e_x = ident.features(x)["descriptor"]
    l_raw = (e_x - ident.features(z)["descriptor"]).abs().mean(1).mean()
    l_masked = (e_x - ident.features(masked_output(z, m, x))["descriptor"]).abs().mean(1).mean()
    assert l_raw > 0.02 and l_masked > 0.005           # the descriptor term is not negligible
    for key, ell in (("p_raw", l_raw), ("p_masked", l_masked)):
        want = -lam * lam_unit * float(ell)
        got = float(t1[key] - t0[key])
        assert got == pytest.approx(want, rel=1e-4, abs=1e-7), (key, got, want)
    # the other terms do not depend on λ
    for key in t0:
        if key not in ("p_raw", "p_masked"):
            assert torch.equal(t0[key], t1[key]), key


def test_lambda_per_example_known_answer(batch):
    """λ-conditioned training: one λ per example, each weighting its own descriptor distance."""
    x, z, m = batch
    ident = TinyIdentity()
    perc = PerceptualLoss(ident, LossConfig())
    feat_x = {k: v.detach() for k, v in perc.features(x).items()}
    lams = torch.tensor([0.0, 1e-6, 1e-5])
    t0 = generator_terms(x, z, m, perceptual=perc, feat_x=feat_x, lam=0.0)
    t1 = generator_terms(x, z, m, perceptual=perc, feat_x=feat_x, lam=lams)
    ell = (ident.features(x)["descriptor"] - ident.features(z)["descriptor"]).abs().mean(1)
    want = -float((lams * perc.cfg.lam_unit * ell).mean())
    assert float(t1["p_raw"] - t0["p_raw"]) == pytest.approx(want, rel=1e-4)

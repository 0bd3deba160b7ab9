"""The training recipes (paper / deid): each new loss term against a hand value, the
conditioning fix, the recipe switches, the loss-network views, EMA and warm start."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from deid_core import losses as L
from deid_core.augment import ViewConfig, same_view
from deid_core.errors import DeidError
from deid_core.model import Generator, ModelConfig, PatchDiscriminator, build_discriminator
from deid_core.recipe import RecipeConfig, dial, parse_options
from deid_core.train import Trainer, TrainConfig, atomic_save, ema_update, face_region, sample_lams
from test_train import FakeIdentity, faces  # noqa: F401  (the frozen stand-in and its faces)


# ------------------------------------------------------------------ terms: hand values


def test_hinge_repeller_hand_value_and_bounded_gradient():
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    z = torch.tensor([[0.0, 2.0], [3.0, 0.0]], requires_grad=True)
    # unit vectors: (0, 1) is √2 ≈ 1.414 from (1, 0); (1, 0) is 0 from it
    d = L.unit_distance(t, z)
    assert d.tolist() == pytest.approx([math.sqrt(2), 0.0], abs=1e-6)
    h = L.loss_repeller_hinge(t, z, torch.tensor([1.0, 0.5]))
    assert h.tolist() == pytest.approx([0.0, 0.5])          # max(0, 1 − 1.414), max(0, .5 − 0)
    h[0].backward()
    assert z.grad.abs().sum() == 0                          # beyond the margin: no push at all


def test_hinge_pushes_identity_away_inside_margin():
    t = torch.tensor([[1.0, 0.0]])
    z = torch.tensor([[1.0, 0.2]], requires_grad=True)
    L.loss_repeller_hinge(t, z, 0.5).sum().backward()
    z2 = z.detach() - 0.1 * z.grad
    assert L.unit_distance(t, z2) > L.unit_distance(t, z.detach())


def test_normalised_ell_divides_by_reference_magnitude():
    a = torch.tensor([[2.0, -2.0, 4.0, 0.0]])       # mean |a| = 2
    b = torch.tensor([[1.0, -2.0, 4.0, 2.0]])       # |a − b| = [1, 0, 0, 2] → mean .75
    assert L.ell(a, b).item() == pytest.approx(0.75)
    assert L.ell_normalised(a, b).item() == pytest.approx(0.375, rel=1e-5)
    # scaling both by 100 leaves the normalised term unchanged
    assert L.ell_normalised(100 * a, 100 * b).item() == pytest.approx(0.375, rel=1e-5)


def test_mask_floor_hand_value_and_per_example_floor():
    region = torch.zeros(1, 1, 2, 2)
    region[..., 0, :] = 1                                    # top row is "face"
    m = torch.tensor([[[[0.2, 0.6], [0.0, 0.0]]], [[[0.5, 0.9], [0.0, 0.0]]]])
    # logit space, floor .5 (logit 0): example 0: max(0, 0 − logit .2) = ln 4, logit .6 > 0 → 0
    # → mean over the 2 face px = ln 4 / 2; example 1: both ≥ .5 → 0; bottom row never counts
    assert L.loss_mask_floor(m, region, 0.5).item() == pytest.approx(math.log(4) / 4, rel=1e-5)
    # per-example floors (.5, 0): the same, a floor of 0 asks nothing
    assert L.loss_mask_floor(m, region, torch.tensor([0.5, 0.0])).item() == pytest.approx(
        math.log(4) / 4, rel=1e-5)
    assert L.loss_mask_floor(m, region, torch.tensor([0.0, 0.0])).item() == 0


def test_mask_floor_gradient_survives_a_saturated_mask():
    """After the reconstruction phase the sigmoid mask sits at ~1e-4: the floor must still
    move its pre-activation at full strength (a loss on m itself would be 1e4× weaker)."""
    a = torch.full((1, 1, 4, 4), -9.0, requires_grad=True)   # m = σ(−9) ≈ 1.2e-4
    L.loss_mask_floor(torch.sigmoid(a), torch.ones(1, 1, 4, 4), 0.5).backward()
    assert torch.allclose(a.grad, torch.full_like(a, -1 / 16), rtol=1e-3)


def test_colour_term_separates_tone_shift_from_luma_detail():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 0.5 - 0.25
    assert L.loss_colour(x, x).item() == 0
    # a constant shift of all channels: low-pass term = 0.1 exactly, chroma high-pass 0
    shifted = x + 0.1
    assert L.loss_colour(shifted, x).item() == pytest.approx(0.1, abs=1e-5)
    # grey (equal-RGB) high-frequency detail changes luma only: chroma term 0, low-pass ~0
    noise = (torch.rand(1, 1, 128, 128) - 0.5) * 0.2
    assert L.loss_colour(x + noise, x).item() < 0.01
    # the same energy in one channel is colourful texture: clearly penalised
    coloured = x.clone()
    coloured[:, 0:1] += noise * 3
    assert L.loss_colour(coloured, x).item() > 5 * L.loss_colour(x + noise, x).item()
    # YCbCr of grey has no chroma
    assert L.rgb_to_ycbcr(torch.full((1, 3, 2, 2), 0.3))[:, 1:].abs().max() < 1e-6


def test_mid_band_chroma_term_sees_a_tinted_patch_not_luma():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 0.5 - 0.25
    assert L.loss_chroma_mid(x, x).item() == 0
    # grey change of an 8×8 patch (a shape edit in luma): no chroma, term stays 0
    grey = x.clone()
    grey[:, :, 60:68, 60:68] += 0.2
    assert L.loss_chroma_mid(grey, x).item() < 1e-6
    # the same patch tinted green (an "iris"): 4 of 32×32 blocks change by |ΔCb|+|ΔCr|
    tint = x.clone()
    tint[:, 1, 60:68, 60:68] += 0.2
    dy = 0.587 * 0.2
    cb, cr = 0.564 * -dy, 0.713 * -dy                   # BT.601 as rgb_to_ycbcr
    expect = 4 * (abs(cb) + abs(cr)) / (2 * 32 * 32)
    assert L.loss_chroma_mid(tint, x).item() == pytest.approx(expect, rel=1e-3)


def test_non_saturating_gan_terms_hand_values():
    d = torch.tensor([[0.0, 0.0], [2.0, -2.0]])
    lam_b = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    # BCE(0 logit, 1) = ln 2 twice; BCE(2, 0) = softplus(2), BCE(−2, 0) = softplus(−2)
    want = (2 * math.log(2) + math.log1p(math.exp(2)) + math.log1p(math.exp(-2))) / 4
    assert L.loss_discriminator_ns(d, lam_b).item() == pytest.approx(want, rel=1e-6)
    # G: softplus(−D): [ln 2, ln 2, softplus(−2), softplus(2)] mean
    want_g = (2 * math.log(2) + math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 4
    assert L.loss_generator_ns(d).item() == pytest.approx(want_g, rel=1e-6)


def test_compound_loss_recipe_weights():
    ones = {k: torch.tensor(1.0) for k in ["G", "R_raw", "R_masked", "x_raw", "y_raw", "x_masked",
                                            "y_masked", "p_raw", "p_masked", "m", "x_m", "y_m",
                                            "colour_raw", "colour_masked", "mask_floor"]}
    cfg = L.LossConfig()
    paper = L.compound_loss({k: v for k, v in ones.items() if k != "mask_floor"}, cfg,
                            RecipeConfig.preset("paper")).item()
    assert paper == pytest.approx(4.523)          # colour has weight 0 in the paper recipe
    r = RecipeConfig.preset("deid")
    # gan .05 + 10·.5·2 + 10·.5·4 + .5·2 + 3e-3 + 1e-2·2 + 5·2 + 1
    want = 0.05 + 10 + 20 + 1 + 3e-3 + 0.02 + 10 + 1
    assert L.compound_loss(ones, cfg, r).item() == pytest.approx(want)


def test_perceptual_recipe_paper_equals_loss_perceptual():
    pl = L.PerceptualLoss(FakeIdentity())
    torch.manual_seed(1)
    x, z = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    fx, fz = pl.features(x), pl.features(z)
    lam = torch.tensor([0.0, 1e-6])
    a = L.perceptual_recipe(fz, fx, fx, lam, pl, RecipeConfig.preset("paper"))
    b = L.loss_perceptual(fz, fx, fx, lam * pl.cfg.lam_unit, pl.source_layers, pl.target_layer)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    # deid: λ = 0 → margin 0 → only the (normalised) attractors; ramp 0 removes the repeller
    r = RecipeConfig.preset("deid")
    at0 = L.perceptual_recipe(fz, fx, fx, torch.zeros(2), pl, r)
    top = L.perceptual_recipe(fz, fx, fx, torch.full((2,), r.lam_max), pl, r)
    off = L.perceptual_recipe(fz, fx, fx, torch.full((2,), r.lam_max), pl, r, ramp=0.0)
    assert off.item() == pytest.approx(at0.item())
    d = L.unit_distance(fx["descriptor"], fz["descriptor"])
    assert (top - at0).item() == pytest.approx((r.margin_max - d).clamp_min(0).mean().item(), rel=1e-5)


# --------------------------------------------------------------------- conditioning


def test_identity_conditioning_is_alive_with_id_norm():
    """§3.1: the target's descriptor must change the output even when the latent is large
    (trained latents have rms ≈ 13, dlib descriptors ≈ 0.13)."""
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    e1, e2 = torch.randn(2, 128) * 0.13, torch.randn(2, 128) * 0.13
    diffs = {}
    for id_norm in (False, True):
        torch.manual_seed(0)
        G = Generator(ModelConfig.preset("compact-128", id_norm=id_norm)).eval()
        with torch.no_grad():
            G.enc_fc.weight.mul_(300)                    # latent rms like a trained encoder
            h = G.enc_in(x)
            for down in G.enc_down:
                h = down(h)
            rms = G.enc_fc(h.flatten(1)).square().mean().sqrt().item()
            diffs[id_norm] = (G(x, e1)[0] - G(x, e2)[0]).abs().mean().item()
    assert rms > 5
    assert diffs[True] > 20 * diffs[False] and diffs[True] > 1e-2


def test_legacy_config_loads_without_id_norm():
    d = ModelConfig.preset("compact-128").to_dict()
    d.pop("id_norm")
    assert ModelConfig.from_dict(d).id_norm is False
    assert ModelConfig.preset("compact-128").id_norm is True


def test_patch_discriminator_logits_and_scales():
    cfg = ModelConfig.preset("compact-128", disc_kind="patch", disc_scales=2)
    D = build_discriminator(cfg)
    assert isinstance(D, PatchDiscriminator)
    out = D(torch.rand(3, 3, 128, 128) * 2 - 1)
    assert out.shape == (3, 16 * 16 + 8 * 8)                 # patches of both scales
    assert any("parametrizations" in n for n, _ in D.named_parameters())   # spectral norm


# ------------------------------------------------------------------------ recipe switches


def test_recipe_presets_and_switches():
    p, d = RecipeConfig.preset("paper"), RecipeConfig.preset("deid")
    assert (p.repeller, p.gan, p.eot, p.ema, p.colour, p.mask_floor) == ("linear", "lsgan", False,
                                                                        False, 0.0, 0.0)
    assert (d.repeller, d.gan, d.eot, d.ema, d.curriculum) == ("hinge", "ns", True, True, True)
    off = RecipeConfig.preset("deid", **parse_options(["eot=0", "repeller=linear", "colour=0"]))
    assert (off.eot, off.repeller, off.colour) == (False, "linear", 0.0)
    with pytest.raises(DeidError, match="unknown recipe option"):
        RecipeConfig.preset("deid", nope=1)
    with pytest.raises(DeidError, match="not a valid bool"):
        RecipeConfig.preset("deid", eot="maybe")
    with pytest.raises(DeidError, match="unknown recipe"):
        RecipeConfig.preset("fancy")
    with pytest.raises(DeidError, match="floor_full_at"):
        RecipeConfig.preset("deid", floor_full_at=0)
    assert RecipeConfig.from_dict(d.to_dict()) == d and RecipeConfig.from_dict(None).name == "paper"


def test_curriculum_and_dial():
    r = RecipeConfig.preset("deid", warmup=0.2, ramp=0.4)
    assert [r.ramp_factor(s, 100) for s in (0, 19, 20, 40, 60, 99)] == pytest.approx(
        [0, 0, 0, 0.5, 1, 1])
    assert RecipeConfig.preset("paper").ramp_factor(0, 100) == 1.0
    assert dial(r) == pytest.approx([0, 5e-6, 1e-5, 1.5e-5, 2e-5])
    assert r.margin(r.lam_max) == pytest.approx(r.margin_max) and r.margin(0.0) == 0
    log = dial(RecipeConfig.preset("paper"), 5)
    assert log[0] == 0 and log[-1] == pytest.approx(2e-5) and np.all(np.diff(np.log10(log[1:])) > 0)


def test_lambda_sampling_uniform_and_loguniform():
    g = torch.Generator().manual_seed(0)
    u = sample_lams(20000, (0.0, 2e-5), 0.1, g, uniform=True)
    assert (u == 0).float().mean().item() == pytest.approx(0.1, abs=0.01)
    pos = u[u > 0]
    assert pos.max() <= 2e-5 and pos.mean().item() == pytest.approx(1e-5, rel=0.03)
    lg = sample_lams(20000, (1e-7, 1e-5), 0.0, g)
    assert (lg < 1e-6).float().mean().item() == pytest.approx(0.5, abs=0.02)


def _cfg(tmp_path, **kw):
    base = dict(preset="compact-128-lamcond", recipe="deid", out=str(tmp_path / "run"), steps=10,
                batch=2, seed=3, threads=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_deid_train_step_has_every_recipe_term(tmp_path, faces):
    t = Trainer(_cfg(tmp_path), identity=FakeIdentity())
    assert isinstance(t.D, PatchDiscriminator) and t.G_ema is not None and t.view is not None
    assert t.mcfg.lam_scale == "linear" and t.mcfg.lam_max == t.recipe.lam_max
    x = torch.stack([faces[i] for i in range(2)])
    t.step = 9                                         # after warm-up: repeller and floor on
    out = t.train_step(x)
    for k in ("G", "colour_raw", "colour_masked", "mask_floor", "p_raw", "id_unit"):
        assert k in out and math.isfinite(out[k]), k
    assert out["ramp"] == 1.0
    # the ablation switches remove their term / component
    t2 = Trainer(_cfg(tmp_path, options={"colour": "0", "mask_floor": "0", "ema": "0",
                                         "eot": "0", "gan": "lsgan"}), identity=FakeIdentity())
    out2 = t2.train_step(x)
    assert "colour_raw" not in out2 and "mask_floor" not in out2
    assert t2.G_ema is None and t2.view is None and not isinstance(t2.D, PatchDiscriminator)


def test_checkpoint_records_recipe_and_ema(tmp_path, faces):
    t = Trainer(_cfg(tmp_path), identity=FakeIdentity())
    t.train_step(torch.stack([faces[i] for i in range(2)]))
    st = t.state_dict()
    assert st["config"]["recipe"]["name"] == "deid" and st["generator_ema"] is not None
    # EMA lags the trained weights after a step
    g, e = st["generator"]["enc_fc.weight"], st["generator_ema"]["enc_fc.weight"]
    assert not torch.equal(g, e)
    # a run saved before recipes existed reads back as paper
    d = st["config"]["train"]
    d.pop("recipe")
    assert TrainConfig.from_dict(d).recipe == "paper"


def test_ema_update_known_answer():
    a, b = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(3.0)
    ema_update(a, b, 0.75)
    assert a.weight.item() == pytest.approx(0.75 * 1 + 0.25 * 3)


def test_same_view_is_shared_and_in_range():
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    view = same_view(ViewConfig(), torch.Generator().manual_seed(0))
    a, b = view(x, x.clone())
    assert torch.equal(a, b)                            # one view for source and output
    assert (a - x).abs().mean() > 0.01 and a.min() >= -1 and a.max() <= 1
    c, = view(x)
    assert not torch.equal(a, c)                        # a new view every call


def test_face_region_covers_the_template_hull():
    r = face_region(128)
    assert r.shape == (1, 1, 128, 128) and 0.2 < r.mean().item() < 0.6
    assert r[0, 0, 64, 64] == 1 and r[0, 0, 2, 2] == 0


def test_warm_start_reproduces_a_legacy_generator(tmp_path, faces):
    """A checkpoint saved without id_norm warm-starts an id_norm network to the same function."""
    src_cfg = ModelConfig.preset("compact-128-lamcond", id_norm=False)
    torch.manual_seed(0)
    G0 = Generator(src_cfg).eval()
    with torch.no_grad():
        G0.enc_fc.weight.mul_(50)
    path = atomic_save({"config": {"model": src_cfg.to_dict()}, "generator": G0.state_dict(),
                        "lam_state": {}}, tmp_path / "legacy.pt")
    t = Trainer(_cfg(tmp_path, preset="compact-128-lamcond", options={"lam_sampling": "loguniform"},
                     init=str(path)), identity=FakeIdentity(), dataset=faces)
    rep = t.warm_start(path)
    assert rep["generator"] == len(G0.state_dict()) and rep["skipped"] == []
    x = torch.stack([faces[i] for i in range(4)])
    e, _ = t.embed(x)
    with torch.no_grad():
        ref = G0(x, e, 1e-6)[0]
        new = t.G.eval()(x, e, 1e-6)[0]
        fresh = Generator(ModelConfig.preset("compact-128-lamcond")).eval()(x, e, 1e-6)[0]
    assert (new - ref).abs().mean() < 0.05 * (fresh - ref).abs().mean()


def test_export_takes_ema_weights_and_dial_follows_the_recipe(tmp_path, faces):
    from deid_core.pipeline import Deidentifier
    from deid_core.train import export_weights
    t = Trainer(_cfg(tmp_path), identity=FakeIdentity())
    t.train_step(torch.stack([faces[i] for i in range(2)]))
    ck = t.save_checkpoint()
    out = export_weights(ck, tmp_path / "w.pt", lam=1e-5)
    w = torch.load(out, weights_only=False)
    ema = t.G_ema.state_dict()["enc_fc.weight"].half()
    assert torch.equal(w["generator"]["enc_fc.weight"], ema)
    assert w["config"]["recipe"]["name"] == "deid"
    d = Deidentifier.from_checkpoint(out, identity=FakeIdentity(), aligner=_NoAligner())
    assert d.dial(5) == pytest.approx([0, 5e-6, 1e-5, 1.5e-5, 2e-5])


class _NoAligner:
    """Stands in for the face aligner (not used by the dial)."""
    size = 128

    class config:
        margin = 0.2


def test_source_detail_restores_the_fine_band_only():
    from deid_core.transfer import add_source_detail, gaussian_blur
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    blurred = gaussian_blur(x, 1.0)
    # blur + the detail it removed = the source (up to the [−1, 1] clamp, unused here)
    assert torch.allclose(add_source_detail(blurred, x, 1.0), x, atol=1e-5)
    assert torch.equal(add_source_detail(blurred, x, 0.0), blurred)       # off
    flat = torch.full((1, 3, 16, 16), 0.3)
    z = torch.rand(1, 3, 16, 16) - 0.5
    assert torch.allclose(add_source_detail(z, flat, 1.0), z, atol=1e-6)  # no detail to add
    assert ModelConfig.preset("compact-128").detail_sigma == 0.0
    cfg = TrainConfig(preset="compact-128", recipe="deid")
    assert cfg.model_config().detail_sigma == 1.0
    assert TrainConfig(preset="compact-128", recipe="deid",
                       options={"detail_sigma": "0"}).model_config().detail_sigma == 0.0


def test_mid_band_luma_hinge_is_free_inside_its_tolerance():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 0.5 - 0.25
    assert L.loss_luma_mid(x, x, 0.15).item() == 0
    # a grey 8×8 patch brightened by 0.1 (a shading edit): inside the tolerance, free
    soft = x.clone()
    soft[:, :, 60:68, 60:68] += 0.1
    assert L.loss_luma_mid(soft, x, 0.15).item() < 1e-7
    # brightened by 0.4 (a glaring stripe): 4 of 32×32 blocks pay 0.4 − 0.15 each
    glare = x.clone()
    glare[:, :, 60:68, 60:68] += 0.4
    assert L.loss_luma_mid(glare, x, 0.15).item() == pytest.approx(4 * 0.25 / 1024, rel=1e-3)
    # a pure chroma change of the same luma (green up, red and blue down) costs nothing
    tint = x.clone()
    tint[:, 1, 60:68, 60:68] += 0.2
    tint[:, 0, 60:68, 60:68] -= 0.2 * 0.587 / (0.299 + 0.114)
    tint[:, 2, 60:68, 60:68] -= 0.2 * 0.587 / (0.299 + 0.114)
    assert L.loss_luma_mid(tint, x, 0.15).item() < 1e-6


def test_dial_gamma_bends_margin_and_mask_floor():
    lin = RecipeConfig.preset("deid", margin_max=1.0, floor_full_at=1.0)
    bent = RecipeConfig.preset("deid", margin_max=1.0, floor_full_at=1.0, dial_gamma=2.0)
    lam = torch.tensor([0.0, 0.25, 0.5, 1.0]) * lin.lam_max
    assert torch.allclose(lin.margin(lam), torch.tensor([0.0, 0.25, 0.5, 1.0]))
    assert torch.allclose(bent.margin(lam), torch.tensor([0.0, 0.0625, 0.25, 1.0]))
    assert bent.margin(2 * lin.lam_max) == pytest.approx(1.0)       # clamped to the top
    # the mask floor asked of the raw output follows the same curve
    x = torch.zeros(4, 3, 16, 16)
    m = torch.full((4, 1, 16, 16), 0.01)
    region = torch.ones(1, 1, 16, 16)
    floors = []
    for r in (lin, bent):
        r.mask_floor = 0.5
        t = L.generator_terms(x, x, m, lam=lam[2:3], recipe=r, face_region=region)
        floors.append(t["mask_floor"].item())
    want = [torch.logit(torch.tensor(f)) - torch.logit(torch.tensor(0.01)) for f in (0.25, 0.125)]
    assert floors == pytest.approx([w.item() for w in want], rel=1e-4)
    with pytest.raises(DeidError, match="dial_gamma"):
        RecipeConfig.preset("deid", dial_gamma=0)


def test_a_nan_gradient_skips_the_step_and_keeps_the_weights(tmp_path, faces, monkeypatch):
    import deid_core.train.trainer as T
    t = Trainer(_cfg(tmp_path), identity=FakeIdentity())
    x = torch.stack([faces[i] for i in range(2)])
    t.step = 9
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    good = T.compound_loss
    # one batch whose loss is NaN (a degenerate crop): its G step is skipped
    monkeypatch.setattr(T, "compound_loss", lambda *a, **k: good(*a, **k) * float("nan"))
    out = t.train_step(x)
    assert t.skipped_steps == {"G": 1} and out["skipped"] == 1
    assert all(torch.equal(before[k], v) for k, v in t.G.state_dict().items())
    monkeypatch.setattr(T, "compound_loss", good)
    out = t.train_step(x)                            # the next good batch trains as usual
    assert out["skipped"] == 1 and all(torch.isfinite(p).all() for p in t.G.parameters())
    assert any(not torch.equal(before[k], v) for k, v in t.G.state_dict().items())


def test_chroma_peak_reads_the_tail_of_the_colour_change():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 0.5 - 0.25
    assert L.loss_mid_peak(x, x).item() == 0
    # a green 8×8 patch: 4 blocks of 32×32 change by |ΔCb| + |ΔCr|; the top 5% (51 blocks)
    # hold those 4 and 47 unchanged ones
    tint = x.clone()
    tint[:, 1, 60:68, 60:68] += 0.2
    dy = 0.587 * 0.2
    per_block = abs(0.564 * -dy) + abs(0.713 * -dy)
    assert L.loss_mid_peak(tint, x).item() == pytest.approx(4 * per_block / 51, rel=1e-3)
    # the same colour change spread thinly over the whole face costs less than the patch
    spread = x.clone()
    spread[:, 1] += 0.2 * 4 / 1024
    assert L.loss_mid_peak(spread, x).item() < 0.1 * L.loss_mid_peak(tint, x).item()
    # a luma-only change costs nothing
    grey = x + 0.3
    assert L.loss_mid_peak(grey, x).item() < 1e-6


def test_luma_peak_reads_the_tail_of_the_luma_change_and_is_switched_by_the_recipe():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 0.5 - 0.25
    assert L.loss_mid_peak(x, x, "luma").item() == 0
    # a grey 8×8 stripe brightened by 0.3: 4 of the 51 top blocks change by 0.3
    glare = x.clone()
    glare[:, :, 60:68, 60:68] += 0.3
    assert L.loss_mid_peak(glare, x, "luma").item() == pytest.approx(4 * 0.3 / 51, rel=1e-3)
    # a colour change of the same luma (green up, red and blue down) costs nothing
    tint = x.clone()
    tint[:, 1, 60:68, 60:68] += 0.2
    tint[:, 0, 60:68, 60:68] -= 0.2 * 0.587 / (0.299 + 0.114)
    tint[:, 2, 60:68, 60:68] -= 0.2 * 0.587 / (0.299 + 0.114)
    assert L.loss_mid_peak(tint, x, "luma").item() < 1e-6
    with pytest.raises(DeidError, match="band"):
        L.loss_mid_peak(x, x, "hue")
    # the switch: off in deid, a weighted term of the compound loss when set
    m = torch.full((1, 1, 128, 128), 0.9)
    off = RecipeConfig.preset("deid")
    on = RecipeConfig.preset("deid", luma_peak=20)
    assert "luma_peak_masked" not in L.generator_terms(x, glare, m, recipe=off)
    t = L.generator_terms(x, glare, m, recipe=on)
    assert t["luma_peak_masked"].item() > 0
    extra = L.compound_loss(t, L.LossConfig(), on) - L.compound_loss(t, L.LossConfig(), off)
    assert extra.item() == pytest.approx(20 * t["luma_peak_masked"].item(), rel=1e-4)


def test_detail_peak_costs_added_detail_on_a_few_blocks_not_blur():
    from deid_core.transfer import gaussian_blur
    torch.manual_seed(0)
    x = gaussian_blur(torch.rand(1, 3, 128, 128) * 0.5 - 0.25, 1.5)     # smooth skin-like
    assert L.loss_detail_peak(x, x).item() == 0
    assert L.loss_detail_peak(gaussian_blur(x, 2.0), x).item() == 0      # blur is free here
    # a dark dot pattern (nostrils) on one 16×16 patch: a few cells gain detail
    dots = x.clone()
    dots[:, :, 60:76:4, 60:76:4] -= 0.8
    peak = L.loss_detail_peak(dots, x).item()
    assert peak > 0.5
    # the same amount of added detail spread thinly over the face costs far less
    spread = x + 0.02 * (torch.rand_like(x) - 0.5)
    assert L.loss_detail_peak(spread, x).item() < 0.2 * peak
    r = RecipeConfig.preset("deid", detail_peak=2)
    m = torch.full((1, 1, 128, 128), 0.9)
    t = L.generator_terms(x, dots, m, recipe=r)
    assert t["detail_peak_masked"].item() > 0
    assert "detail_peak_masked" not in L.generator_terms(x, dots, m, recipe=RecipeConfig.preset("deid"))


def test_source_chroma_keeps_generated_luma_and_source_colour():
    from deid_core.transfer import source_transfer, take_source_chroma
    torch.manual_seed(0)
    # a flat skin-coloured source and a grey, textured generated face inside the gamut
    x = torch.empty(1, 3, 32, 32)
    x[:, 0], x[:, 1], x[:, 2] = 0.5, 0.1, -0.1
    z = (torch.rand(1, 3, 32, 32) * 0.2 - 0.1).expand(1, 3, 32, 32).clone()
    z[:, 1:] = z[:, :1]                                        # grey: Cb = Cr = 0
    out = take_source_chroma(z, x)
    luma = lambda t: 0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]
    assert torch.allclose(luma(out), luma(z), atol=1e-5)       # the network's shape and shading
    # the source's colour: every pixel differs from its luma as the source's does
    assert torch.allclose(out - luma(out)[:, None], x - luma(x)[:, None], atol=1e-5)
    assert torch.allclose(take_source_chroma(x, x), x, atol=1e-5)
    cfg = ModelConfig.preset("compact-128")
    assert not cfg.source_chroma and torch.equal(source_transfer(z, x, cfg), z)   # off
    cfg.source_chroma = True
    assert torch.allclose(source_transfer(z, x, cfg), out)
    assert TrainConfig(preset="compact-128", recipe="deid",
                       options={"source_chroma": "on"}).model_config().source_chroma


def test_warp_moves_pixels_by_the_flow():
    from deid_core.transfer import warp
    ramp = torch.arange(32.0).view(1, 1, 1, 32).expand(2, 1, 32, 32)
    flow = torch.zeros(2, 2, 32, 32)
    assert torch.allclose(warp(ramp, flow), ramp, atol=1e-4)          # no flow, no change
    flow[0, 0] = 3.0                                                   # x + 3 px
    flow[1, 1] = 2.0                                                   # y + 2 px: a ramp in x stays
    out = warp(ramp, flow)
    assert torch.allclose(out[0, 0, :, 4:28], ramp[0, 0, :, 7:31], atol=1e-4)
    assert torch.allclose(out[1], ramp[1], atol=1e-4)


def test_smooth_field_is_bounded_and_cannot_draw_a_pixel_pattern():
    from deid_core.transfer import smooth_field
    raw = torch.full((1, 2, 64, 64), 50.0)
    assert smooth_field(raw, 4.0, 8).max().item() == pytest.approx(4.0, abs=1e-3)
    checker = (torch.arange(64).view(1, -1) + torch.arange(64).view(-1, 1)) % 2 * 2.0 - 1
    flow = smooth_field(100 * checker.expand(1, 2, 64, 64), 4.0, 8)
    assert flow.abs().max().item() < 1e-4                  # a per-pixel pattern averages out
    blob = torch.zeros(1, 2, 64, 64)
    blob[:, :, 16:32, 16:32] = 10.0                        # a cell-sized push survives
    assert smooth_field(blob, 4.0, 8)[0, 0, 24, 24].item() > 3.9


def test_warp_head_starts_as_the_identity_and_reshapes_the_source():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128-lamcond", flow_px=6.0)
    G = Generator(cfg)
    assert hasattr(G, "to_flow") and not hasattr(G, "to_image")
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    src = torch.rand(2, 3, 128, 128) * 2 - 1
    e = torch.randn(2, cfg.id_dim)
    z, m = G(x, e, 1e-5)
    assert torch.allclose(z, x, atol=1e-4) and m.shape == (2, 1, 128, 128)
    z, _ = G(x, e, 1e-5, source=src)                      # training: the undistorted crop
    assert torch.allclose(z, src, atol=1e-4)
    z.square().sum().backward()
    assert G.to_flow.weight.grad.abs().sum().item() > 0   # the warp can learn
    with torch.no_grad():
        G.to_flow.weight.normal_(0, 0.05)
        moved, _ = G(x, e, 1e-5)
    assert (moved - x).abs().mean().item() > 1e-3
    # values stay the source's: a warp cannot paint a colour the crop does not have
    assert moved.min() >= x.min() - 1e-5 and moved.max() <= x.max() + 1e-5
    assert TrainConfig(preset="compact-128", recipe="deid",
                       options={"flow_px": "6"}).model_config().flow_px == 6.0
    with pytest.raises(DeidError, match="flow_px"):
        ModelConfig.preset("compact-128", flow_px=-1.0)


def test_warp_heads_luma_residual_changes_shading_not_colour():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128-lamcond", flow_px=4.0, flow_luma=1.0)
    G = Generator(cfg)
    x = torch.rand(2, 3, 128, 128) * 1.2 - 0.6
    e = torch.randn(2, cfg.id_dim)
    z, _ = G(x, e, 1e-5)
    assert torch.allclose(z, x, atol=1e-4)                # zero-initialised: the identity
    with torch.no_grad():
        G.to_luma.weight.normal_(0, 0.05)
        z, _ = G(x, e, 1e-5)
    d = z - x                                             # flow still 0: only the residual
    assert d.abs().mean().item() > 1e-3
    inside = (z.abs() < 0.999).all(1)                     # away from the clamp
    assert torch.allclose(d[:, 0][inside], d[:, 1][inside], atol=1e-5)
    assert torch.allclose(d[:, 0][inside], d[:, 2][inside], atol=1e-5)


def test_warp_dial_scales_the_flow_with_lambda():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    e = torch.randn(1, 128)
    moved = {}
    for flow_dial in (False, True):
        torch.manual_seed(1)
        G = Generator(ModelConfig.preset("compact-128-lamcond", flow_px=4.0, flow_dial=flow_dial,
                                         lam_scale="linear"))
        with torch.no_grad():
            G.to_flow.weight.normal_(0, 0.05)
            moved[flow_dial] = [(G(x, e, lam)[0] - x).abs().mean().item()
                                for lam in (0.0, 1e-5, 2e-5)]
    assert moved[False][0] > 1e-3                   # without it λ = 0 may still reshape
    assert moved[True][0] < 1e-5                    # with it λ = 0 is the input
    assert 0 < moved[True][1] < moved[True][2]      # half the dial, a smaller warp
    assert moved[True][2] == pytest.approx(moved[False][2], rel=1e-4)   # same at the top



def test_smooth_luma_change_is_bounded_shading():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128-lamcond", flow_px=4.0, flow_luma=0.2, luma_grid=16)
    G = Generator(cfg)
    x = torch.zeros(1, 3, 128, 128)
    e = torch.randn(1, cfg.id_dim)
    with torch.no_grad():
        G.to_luma.weight.normal_(0, 1.0)
        z, _ = G(x, e, 2e-5)
    assert 1e-3 < z.abs().max().item() <= 0.2 + 1e-5         # bounded by flow_luma
    assert torch.equal(z[:, 0], z[:, 1]) and torch.equal(z[:, 0], z[:, 2])
    step = (z[0, 0, :, 1:] - z[0, 0, :, :-1]).abs().max().item()
    assert step < 0.2 / 4                                     # no pixel-to-pixel pattern
    with pytest.raises(DeidError, match="luma_grid"):
        ModelConfig.preset("compact-128", flow_px=4.0, flow_luma=0.2, luma_grid=1)

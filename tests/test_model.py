"""Generator / discriminator of §3.1: shapes, parameter counts, gradient paths, D layer pattern."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from deid_core.errors import DeidError
from deid_core.model import (PRESETS, Discriminator, Generator, ModelConfig, ResidualBlock,
                             SeparableDown, UpscaleBlock, count_parameters, lam_feature)


@pytest.fixture(scope="module")
def compact():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128")
    return cfg, Generator(cfg), Discriminator(cfg)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_shapes_and_parameter_counts(name):
    torch.manual_seed(0)
    cfg = ModelConfig.preset(name)
    g, d = Generator(cfg), Discriminator(cfg)
    n_g, n_d = count_parameters(g), count_parameters(d)
    print(f"{name}: generator {n_g:,} parameters, discriminator {n_d:,}")
    # the counts follow from the config: check the two FC layers and the totals' order
    enc_last = cfg.ch(cfg.enc_channels[-1])
    assert g.enc_fc.weight.shape == (cfg.latent_dim, enc_last * (cfg.size // 32) ** 2)
    assert g.dec_fc.weight.shape == (cfg.ch(cfg.dec_channels) * 16, cfg.latent_dim + cfg.id_dim)
    assert n_g > 2 * (cfg.latent_dim * enc_last * (cfg.size // 32) ** 2) * 0.9
    with torch.no_grad():
        x = torch.rand(1, 3, cfg.size, cfg.size) * 2 - 1
        img, mask = g(x, torch.randn(1, cfg.id_dim))
        out = d(img)
    assert img.shape == (1, 3, cfg.size, cfg.size) and mask.shape == (1, 1, cfg.size, cfg.size)
    assert img.min() >= -1 and img.max() <= 1 and mask.min() >= 0 and mask.max() <= 1
    assert out.shape == (1, 1) and 0 <= out.item() <= 1


def test_compact_is_a_width_multiple_of_paper128():
    p, c = ModelConfig.preset("paper-128"), ModelConfig.preset("compact-128")
    gp, gc = Generator(p), Generator(c)
    kinds = lambda g: [type(m).__name__ for m in g.modules()]
    assert kinds(gp) == kinds(gc)            # same structure
    assert count_parameters(gc) < count_parameters(gp) / 4


def test_structure_follows_section_3_1():
    cfg = ModelConfig.preset("paper-256")
    g = Generator(cfg)
    assert isinstance(g.enc_in[0], nn.Conv2d)
    assert len(g.enc_down) == 5 and all(isinstance(b, SeparableDown) for b in g.enc_down)
    for b in g.enc_down:   # depth-wise separable: grouped k×k stride 2, then 1×1
        assert b.depthwise.groups == b.depthwise.in_channels and b.depthwise.stride == (2, 2)
        assert b.pointwise.kernel_size == (1, 1) and isinstance(b.norm, nn.InstanceNorm2d)
    kinds = [type(b).__name__ for b in g.dec_blocks]
    assert kinds == ["UpscaleBlock", "ResidualBlock"] * 6     # 6 × (Upscale → Residual)
    up = g.dec_blocks[0]
    assert up.conv.out_channels == 4 * (up.conv.in_channels // 2)   # 2× channels, shuffle ÷4
    assert up.act.negative_slope == 0.1 and g.dec_blocks[1].act.negative_slope == 0.2
    assert g.unet_proj.out_channels == 1
    assert all(m.bias is None for m in g.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    convs = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.Conv2d)])
    assert abs(convs.std().item() - 0.02) < 0.002 and abs(convs.mean().item()) < 0.001


def test_discriminator_layer_pattern_exact(compact):
    cfg, _, d = compact
    kinds = [type(m).__name__ for m in d.net]
    assert kinds == ["Conv2d", "LeakyReLU",
                     "Conv2d", "InstanceNorm2d", "LeakyReLU",
                     "Conv2d", "InstanceNorm2d", "LeakyReLU",
                     "Conv2d", "InstanceNorm2d", "LeakyReLU",
                     "Conv2d", "Sigmoid"]
    strides = [m.stride for m in d.net if isinstance(m, nn.Conv2d)]
    assert strides == [(2, 2)] * 4 + [(1, 1)]
    assert all(m.bias is None for m in d.net if isinstance(m, nn.Conv2d))


def test_both_heads_and_unet_path_get_gradient(compact):
    cfg, g, _ = compact
    g.zero_grad()
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    e = torch.randn(2, 128, requires_grad=True)
    img, mask = g(x, e)
    (img.square().mean() + mask.mean()).backward()
    for name, p in [("image head", g.to_image.weight), ("mask head", g.to_mask.weight),
                    ("U-net", g.unet_proj.weight), ("encoder", g.enc_in[0].weight),
                    ("encoder FC", g.enc_fc.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert e.grad.abs().sum() > 0        # identity conditioning reaches the output
    # the U-net path alone: perturbing the 32² skip changes the output
    with torch.no_grad():
        w = g.unet_proj.weight.clone()
        a, _ = g(x, e)
        g.unet_proj.weight.mul_(5)
        b, _ = g(x, e)
        g.unet_proj.weight.copy_(w)
    assert (a - b).abs().max() > 1e-4


def test_bad_inputs_raise(compact):
    cfg, g, _ = compact
    with pytest.raises(DeidError, match="N×3×128×128"):
        g(torch.zeros(1, 3, 64, 64), torch.zeros(1, 128))
    with pytest.raises(DeidError, match="identity embedding"):
        g(torch.zeros(1, 3, 128, 128), torch.zeros(1, 512))
    with pytest.raises(DeidError, match="unknown model preset"):
        ModelConfig.preset("huge-512")


def test_lam_conditioning_changes_output_and_is_identity_at_init():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128-lamcond")
    g = Generator(cfg)
    x, e = torch.rand(2, 3, 128, 128) * 2 - 1, torch.randn(2, 128)
    assert lam_feature(torch.tensor([0.0]), cfg).item() == pytest.approx(0.0, abs=0.05)
    assert lam_feature(torch.tensor([cfg.lam_max]), cfg).item() == pytest.approx(1.0, abs=1e-3)
    f = lam_feature(torch.tensor([1e-7, 1e-6, 1e-5]), cfg)
    assert (f.diff() > 0).all()
    # FiLM starts as identity; give it weights and λ must matter, per example
    for m in g.modules():
        if type(m).__name__ == "FiLM":
            torch.nn.init.normal_(m.proj.weight, 0, 0.5)
    with torch.no_grad():
        a, _ = g(x, e, lam=torch.tensor([0.0, 0.0]))
        b, _ = g(x, e, lam=torch.tensor([0.0, 2e-6]))
    assert torch.allclose(a[0], b[0], atol=1e-5) and (a[1] - b[1]).abs().max() > 1e-3
    with pytest.raises(DeidError, match="needs a λ"):
        g(x, e)


def test_config_round_trip():
    cfg = ModelConfig.preset("paper-256-lamcond")
    assert cfg.lam_cond and ModelConfig.from_dict(cfg.to_dict()) == cfg

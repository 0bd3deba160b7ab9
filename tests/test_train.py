"""Training loop: one step end to end, exact resume, checkpoint contents, logs, λ schedule,
augmentation, data sampling, CPU autocast path and DDP (gloo, 2 processes via torchrun)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from deid_core.augment import AugmentConfig, distort
from deid_core.train import InMemoryFaces, StepBatchSampler
from deid_core.model import to_tensor, to_uint8
from deid_core.errors import DeidError
from deid_core.train import Trainer, TrainConfig, lam_at, sample_lams, train


class FakeIdentity(nn.Module):
    """Small frozen stand-in for the loss network (maps 72/35/17/8/4 + 128-d descriptor)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(123)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 128)
        self.eval().requires_grad_(False)

    def features(self, x):
        h = torch.tanh(self.conv(x))
        out = {f"s{s}": nn.functional.adaptive_avg_pool2d(h, s) for s in (72, 35, 17, 8, 4)}
        out["descriptor"] = self.fc(h.mean((2, 3)))
        return out


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1, 16, 16, 3), dtype=np.uint8)
    crops = [np.kron(np.roll(base[0], i, axis=0), np.ones((8, 8, 1), np.uint8)) for i in range(6)]
    return InMemoryFaces(crops)


def small_cfg(out, **kw):
    base = dict(preset="compact-128", out=str(out), steps=4, batch=2, ckpt_every=2,
                sample_every=2, log_every=1, seed=3, identity="none", threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_lambda_schedule_defaults():
    cfg = TrainConfig(preset="paper-128", steps=230_000)
    sched = cfg.resolved_schedule()
    assert [v for _, v in sched] == [1e-7, 5e-7, 1e-6, 2e-6]          # four steps (§4)
    assert [s for s, _ in sched] == [0, 57_500, 115_000, 172_500]
    assert lam_at(sched, 0) == 1e-7 and lam_at(sched, 115_000) == 1e-6 and lam_at(sched, 10**6) == 2e-6
    assert TrainConfig(preset="paper-256", steps=80_000).resolved_schedule() == [(0, 2e-6)]
    assert TrainConfig(preset="paper-256").resolved_batch() == 64
    assert TrainConfig(preset="paper-128").resolved_batch() == 32
    lams = sample_lams(4000, (1e-7, 1e-5), 0.25, torch.Generator().manual_seed(0))
    assert abs((lams == 0).float().mean().item() - 0.25) < 0.03
    nz = lams[lams > 0].log10()
    assert nz.min() >= -7 and nz.max() <= -5 and abs(nz.mean().item() + 6) < 0.05


def test_augment_distorts_only_within_range():
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    off = AugmentConfig(scale=0, rotation_deg=0, shift=0, elastic_alpha=0)
    assert torch.allclose(distort(x, off), x, atol=1e-4)
    g = lambda: torch.Generator().manual_seed(5)
    y1, y2 = distort(x, generator=g()), distort(x, generator=g())
    assert torch.equal(y1, y2) and (y1 - x).abs().mean() > 0.05
    # a smooth image: the distortion is a small geometric change, not noise
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    assert (distort(ramp, generator=g()) - ramp).abs().mean() < 0.25


def test_step_sampler_resumes_and_splits_ranks():
    full = list(StepBatchSampler(10, 4, seed=1, steps=6))
    assert list(StepBatchSampler(10, 4, seed=1, start_step=3, steps=6)) == full[3:]
    r0 = list(StepBatchSampler(10, 4, seed=1, rank=0, world=2, steps=6))
    r1 = list(StepBatchSampler(10, 4, seed=1, rank=1, world=2, steps=6))
    assert [a + b for a, b in zip(r0, r1)] == full
    with pytest.raises(DeidError, match="divisible"):
        StepBatchSampler(10, 3, seed=0, world=2)


def test_tensor_round_trip(portraits):
    img = np.ascontiguousarray(portraits[0][:64, :64])
    assert np.array_equal(to_uint8(to_tensor(img)), img)
    with pytest.raises(DeidError):
        to_tensor(img.astype(np.float32))


def test_train_resume_is_exact(tmp_path, faces):
    ident = FakeIdentity()
    a = train(small_cfg(tmp_path / "a"), dataset=faces, identity=ident, progress=False)
    b1 = train(small_cfg(tmp_path / "b"), dataset=faces, identity=ident, progress=False, until=2)
    assert b1.step == 2
    b2 = train(small_cfg(tmp_path / "b"), dataset=faces, identity=ident, progress=False, resume=True)
    assert [r["step"] for r in b2.history] == [3, 4]
    for ra, rb in zip(a.history[2:], b2.history):
        for k in ("total", "D", "G", "R_raw", "p_raw", "m"):
            assert ra[k] == rb[k], (k, ra[k], rb[k])
    for pa, pb in zip(a.G.parameters(), b2.G.parameters()):
        assert torch.equal(pa, pb)
    # checkpoint contents (BRIEF format) and logs
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert {"config", "generator", "discriminator", "optimizer", "step", "lam_state", "rng",
            "deid_version"} <= set(ck) and ck["step"] == 4
    with open(tmp_path / "b" / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[2]["total"]) == pytest.approx(a.history[2]["total"], rel=1e-6)
    grids = sorted((tmp_path / "b" / "samples").glob("*.png"))
    assert grids
    from PIL import Image
    assert Image.open(grids[-1]).size == (4 * 128, 6 * 128)    # source | output | raw | mask
    assert not list((tmp_path / "b").glob(".*tmp*"))            # no temp files left behind
    # a fresh (non-resume) run into the same folder refuses instead of overwriting it
    before = (tmp_path / "b" / "checkpoint.pt").read_bytes()
    with pytest.raises(DeidError, match="already holds a training run"):
        train(small_cfg(tmp_path / "b"), dataset=faces, identity=ident, progress=False)
    assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == before


def test_resume_without_checkpoint_errors(tmp_path, faces):
    with pytest.raises(DeidError, match="no checkpoint"):
        train(small_cfg(tmp_path / "c"), dataset=faces, identity=None, progress=False, resume=True)


def test_lamcond_step_and_cpu_autocast_path(tmp_path, faces):
    # λ-conditioned preset: per-example λ; bf16 autocast code path exercised on CPU
    t = Trainer(small_cfg(tmp_path / "d", preset="compact-128-lamcond", amp="bf16",
                          channels_last="on", batch=4), dataset=faces, identity=FakeIdentity())
    assert t.amp_dtype == torch.bfloat16 and t.channels_last
    x = torch.stack([faces[i] for i in range(4)])
    out = t.train_step(x)
    assert np.isfinite(out["total"]) and out["lam"] > 0
    with pytest.raises(DeidError, match="fp16"):
        Trainer(small_cfg(tmp_path / "e", amp="fp16"), dataset=faces, identity=None)


@pytest.mark.slow
def test_ddp_gloo_two_processes_via_torchrun(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(f"""
        import os, numpy as np, torch
        from deid_core.train import InMemoryFaces
        from deid_core.train import TrainConfig, train
        rng = np.random.default_rng(0)
        faces = InMemoryFaces([rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(4)])
        cfg = TrainConfig(preset="compact-128", out=r"{tmp_path / 'run'}", steps=2, batch=4,
                          ckpt_every=0, sample_every=0, identity="none", threads=1)
        t = train(cfg, dataset=faces, progress=False)
        assert t.world == 2 and type(t.G_train).__name__ == "DistributedDataParallel"
        flat = torch.cat([p.detach().flatten() for p in t.G.parameters()])
        torch.save(flat, r"{tmp_path}" + f"/rank{{t.rank}}.pt")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--standalone", str(script)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    p0, p1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(p0, p1)            # gradients all-reduced: replicas stay identical
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_overfit_eight_nasa_faces_and_lambda_direction(portraits):
    """compact-128 on 8 aligned NASA faces with the real dlib loss network, on CPU (≤ 3 min).

    Test-only settings to fit the CPU budget: lr 2e-3 (paper: 1e-4), batch 4, 60 + 12 steps.
    (1) λ = 0: reconstruction L1 on the undistorted faces falls by ≥ 50%;
    (2) from the same state, 12 more steps with λ > 0 vs λ = 0 (same data, same random
        draws): the λ > 0 outputs are further from the source in dlib descriptor distance.
    """
    import copy
    from deid_core.face import AlignConfig, FaceAligner
    from deid_core.identity import load_identity_network
    aligner = FaceAligner(AlignConfig(size=128))
    crops = []
    for img in portraits[:8]:
        face = aligner.detect(img)[0]
        crops.append(aligner.warp(img, aligner.transform(face.landmarks)))
    faces = InMemoryFaces(crops)
    x = faces.data
    identity = load_identity_network("dlib")

    def cfg(lam):
        return TrainConfig(preset="compact-128", out="unused", batch=4, lr=2e-3, threads=1,
                           steps=1000, lam_schedule=[(0, lam)], seed=0)

    def measure(t):
        with torch.no_grad():
            e, _ = t.embed(x)
            z, _ = t.G(x, e)
            return (z - x).abs().mean().item(), (t.perceptual.embed(z) - e).norm(dim=1).mean().item()

    sampler = StepBatchSampler(8, 4, seed=0)
    t = Trainer(cfg(0.0), dataset=faces, identity=identity)
    r0, _ = measure(t)
    for i in range(60):
        t.train_step(x[sampler.global_batch(i)])
    state = copy.deepcopy(t.state_dict())
    results = {}
    for lam in (0.0, 2e-5):
        tb = Trainer(cfg(lam), dataset=faces, identity=identity)
        tb.load_state_dict(copy.deepcopy(state))
        for i in range(60, 72):
            tb.train_step(x[sampler.global_batch(i)])
        results[lam] = measure(tb)
    print(f"recon L1 {r0:.4f} -> {results[0.0][0]:.4f}; descriptor distance to source: "
          f"λ=0 {results[0.0][1]:.3f}, λ=2e-5 {results[2e-5][1]:.3f}")
    assert results[0.0][0] <= 0.5 * r0
    assert results[2e-5][1] > results[0.0][1] + 0.1

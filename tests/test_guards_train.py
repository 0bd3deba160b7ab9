"""Guards for the training loop: autocast really on, atomic checkpoints, DDP data.

* bf16 autocast: forward hooks on the generator's and discriminator's layers record the dtype
  of their outputs *inside* ``Trainer.train_step`` (CPU bf16); with ``amp="off"`` everything is
  float32. A step that never enters autocast fails.
* atomic writes: ``torch.save`` / the PNG encoder are made to write half a file and raise; the
  previous checkpoint / sample grid stays byte-identical (and no temp file is left).
* DDP (slow): a 2-rank gloo run (``torchrun --standalone``: a free port, never a fixed one)
  computes the same (all-reduced) generator gradient as one process on the same global batch,
  and the two ranks see disjoint halves of each global batch. (Weights are not compared after
  several steps: Adam's first steps are ≈ lr·sign(g), so float noise in near-zero gradients
  flips a few signs and the runs drift apart chaotically.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from deid_core.augment import AugmentConfig
from deid_core.train import (InMemoryFaces, StepBatchSampler, Trainer, TrainConfig, atomic_save,
                             save_grid)
from test_guards_io import _half_written_pil_save


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    return InMemoryFaces([rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(4)])


def _cfg(out, **kw):
    base = dict(preset="compact-128", out=str(out), steps=4, batch=2, ckpt_every=0,
                sample_every=0, log_every=1, seed=3, identity="none", threads=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _record_dtypes(t: Trainer):
    seen: dict[str, set] = {"G": set(), "D": set()}
    hooks = []
    for name, net in (("G", t.G), ("D", t.D)):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                hooks.append(m.register_forward_hook(
                    lambda mod, inp, out, name=name: seen[name].add(out.dtype)))
    return seen, hooks


@pytest.mark.parametrize("amp,want", [("bf16", torch.bfloat16), ("off", torch.float32)])
def test_autocast_dtype_inside_train_step(tmp_path, faces, amp, want):
    t = Trainer(_cfg(tmp_path / amp, amp=amp), dataset=faces, identity=None)
    seen, hooks = _record_dtypes(t)
    try:
        out = t.train_step(faces.data[:2])
    finally:
        for h in hooks:
            h.remove()
    assert np.isfinite(out["total"])
    # every conv/linear of both networks ran in the configured dtype during the step
    assert seen["G"] == {want}, seen
    assert seen["D"] == {want}, seen
    # parameters (master weights) stay float32 whatever the autocast dtype
    assert all(p.dtype == torch.float32 for p in t.G.parameters())


# ---------------------------------------------------------------------- atomic writes


def _half_then_raise(real):
    """A writer that writes half of what ``real`` would write to the target, then fails."""
    def write(obj, f, *a, **kw):
        import io
        buf = io.BytesIO()
        real(obj, buf, *a, **kw)
        data = buf.getvalue()
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(data[: len(data) // 2])
        else:
            f.write(data[: len(data) // 2])
        raise OSError("injected failure: disk full")
    return write


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_atomic_save_failure_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"step": 1, "w": torch.arange(1000.0)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _half_then_raise(torch.save))
    with pytest.raises(OSError, match="injected"):
        atomic_save({"step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path)["step"] == 1


def test_atomic_save_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"step": 1}, path)
    monkeypatch.setattr(torch, "save", _half_then_raise(torch.save))
    with pytest.raises(OSError):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert _leftovers(tmp_path, {"checkpoint.pt"}) == []


def test_trainer_checkpoint_failure_keeps_previous(tmp_path, faces, monkeypatch):
    t = Trainer(_cfg(tmp_path / "run", amp="off"), dataset=faces, identity=None)
    t.out.mkdir(parents=True)
    t.train_step(faces.data[:2])
    ck = t.save_checkpoint()
    before = ck.read_bytes()
    t.train_step(faces.data[2:4])
    monkeypatch.setattr(torch, "save", _half_then_raise(torch.save))
    with pytest.raises(OSError, match="injected"):
        t.save_checkpoint()
    monkeypatch.undo()
    assert ck.read_bytes() == before and torch.load(ck, weights_only=False)["step"] == 1


def test_sample_grid_failure_keeps_previous_png(tmp_path, monkeypatch):
    x = torch.zeros(2, 3, 16, 16)
    path = save_grid(tmp_path / "grid.png", x, x, torch.ones(2, 1, 16, 16))
    before = path.read_bytes()
    _half_written_pil_save(monkeypatch)
    with pytest.raises(OSError, match="injected"):
        save_grid(path, x + 1, x - 1, torch.zeros(2, 1, 16, 16))
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_sample_grid_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    from PIL import Image
    x = torch.zeros(2, 3, 16, 16)
    save_grid(tmp_path / "grid.png", x, x, torch.ones(2, 1, 16, 16))

    def bad_save(self, fp, *a, **kw):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("injected failure: disk full")
    monkeypatch.setattr(Image.Image, "save", bad_save)
    with pytest.raises(OSError, match="injected"):
        save_grid(tmp_path / "grid.png", x + 1, x - 1, torch.zeros(2, 1, 16, 16))
    monkeypatch.undo()
    assert _leftovers(tmp_path, {"grid.png"}) == []


# ------------------------------------------------------------------------------- DDP

DDP_SCRIPT = """
import json, os, sys
import numpy as np, torch
from deid_core.augment import AugmentConfig
from deid_core.train import InMemoryFaces
from deid_core.train import Trainer, TrainConfig, train

out = sys.argv[1]
rank = int(os.environ.get("RANK", "0"))
world = os.environ.get("WORLD_SIZE", "1")
step_fn = Trainer.train_step

def train_step(self, x):          # keep the (all-reduced) generator gradients of step 1
    res = step_fn(self, x)
    if self.step == 1:
        torch.save(torch.cat([p.grad.flatten() for p in self.G.parameters()]),
                   os.path.join(out, f"grad_w{world}_r{rank}.pt"))
    return res

Trainer.train_step = train_step

class Logged(InMemoryFaces):
    def __getitem__(self, i):
        self.seen.append(int(i))
        return super().__getitem__(i)

rng = np.random.default_rng(0)
faces = Logged([rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(8)])
faces.seen = []
cfg = TrainConfig(preset="compact-128", out=os.path.join(out, "run_w" + world), steps=2, batch=4, lr=1e-3,
                  ckpt_every=0, sample_every=0, identity="none", gan=False, amp="off",
                  device="cpu", threads=1, seed=5,
                  augment=AugmentConfig(scale=0, rotation_deg=0, shift=0, elastic_alpha=0))
t = train(cfg, dataset=faces, progress=False)
fixed = min(8, len(faces))          # run() reads the first 8 faces once for the sample grids
torch.save(torch.cat([p.detach().flatten() for p in t.G.parameters()]),
           os.path.join(out, f"params_w{t.world}_r{rank}.pt"))
with open(os.path.join(out, f"seen_w{t.world}_r{rank}.json"), "w") as f:
    json.dump({"world": t.world, "seen": faces.seen[fixed:]}, f)
"""


@pytest.mark.slow
def test_ddp_two_ranks_equal_single_process_on_same_global_batch(tmp_path):
    """gan off, no augmentation, no identity loss: the G gradient is the batch mean of
    per-example gradients, so 2 ranks × 2 examples (DDP averages) == 1 process × 4 examples."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    single = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    import json
    seen = {r: json.loads((tmp_path / f"seen_w2_r{r}.json").read_text())["seen"] for r in (0, 1)}
    one = json.loads((tmp_path / "seen_w1_r0.json").read_text())["seen"]
    sampler = StepBatchSampler(8, 4, seed=5)
    for step in range(2):
        glob = sampler.global_batch(step)
        s0, s1 = seen[0][2 * step: 2 * step + 2], seen[1][2 * step: 2 * step + 2]
        assert not set(s0) & set(s1), f"step {step}: ranks share examples {s0} {s1}"
        assert sorted(s0 + s1) == sorted(glob) == sorted(one[4 * step: 4 * step + 4])
    # step 1: DDP's all-reduced gradient == the one-process gradient of the whole global batch
    g0, g1 = (torch.load(tmp_path / f"grad_w2_r{r}.pt") for r in (0, 1))
    g = torch.load(tmp_path / "grad_w1_r0.pt")
    assert torch.equal(g0, g1)
    assert g.abs().median() > 1e-6
    # (not bitwise: batch-2 and batch-4 convolutions round differently, ~0.2 % here; one
    # rank's slice alone is tens of % away)
    rel = float(torch.linalg.norm(g0 - g) / torch.linalg.norm(g))
    assert rel < 0.02, f"DDP gradient differs from the global-batch gradient by {rel:.1%}"
    # both ranks end with the same weights (replicas in sync)
    p0, p1 = (torch.load(tmp_path / f"params_w2_r{r}.pt") for r in (0, 1))
    assert torch.equal(p0, p1)

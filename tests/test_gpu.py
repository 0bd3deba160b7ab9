"""CUDA paths: one training step in each AMP mode, channels-last, inference and the
video network path on the GPU, compared with the CPU.

Run on a GPU machine with one command (pytest is optional)::

    python -m pytest -m gpu tests/test_gpu.py        # or:  python tests/test_gpu.py

Without CUDA every test is skipped with a reason (``./run_tests.sh`` runs everything but these).
Nothing here needs dlib, PyAV or facenet-pytorch, which the GPU image lacks
(``scripts/gpu/importguard.ABSENT``; ``tests/test_gpu_job.py`` runs this file on the CPU with
them blocked): the identity network is a tiny frozen stand-in and the face is placed by the
averaged-face template, so the same code runs on the CUDA image with the repository on
``PYTHONPATH``. ``DEID_GPU_TEST_DEVICE=cpu python tests/test_gpu.py`` dry-runs the code on the
CPU (bf16 only; fp16 autocast needs CUDA).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

try:
    import pytest
except ImportError:                      # the bare GPU image: use the runner at the bottom
    pytest = None

if __package__ in (None, "") and __name__ == "__main__":     # python tests/test_gpu.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deid_core import pipeline
from deid_core.evaluate import video_metrics
from deid_core.model import ModelConfig  # noqa: E402

DEVICE = os.environ.get("DEID_GPU_TEST_DEVICE", "cuda")
HAVE_DEVICE = DEVICE == "cpu" or torch.cuda.is_available()
SKIP_REASON = "CUDA not available (set DEID_GPU_TEST_DEVICE=cpu for a CPU dry run)"

if pytest is not None:
    pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_DEVICE, reason=SKIP_REASON)]


def amp_modes(fn):
    fn.params = ["bf16", "fp16"]            # read by the plain runner
    return pytest.mark.parametrize("amp", fn.params)(fn) if pytest is not None else fn


class TinyIdentity(nn.Module):
    """Frozen stand-in for the loss network: maps of side 72/35/17/8/4 and a 128-d descriptor."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 128)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        self.eval().requires_grad_(False)

    def features(self, x):
        h = torch.tanh(self.conv(x))
        out = {f"s{s}": nn.functional.adaptive_avg_pool2d(h, s) for s in (72, 35, 17, 8, 4)}
        out["descriptor"] = self.fc(h.mean((2, 3)))
        return out


def _faces(n: int = 4) -> torch.Tensor:
    """n NASA portraits, centre-cropped to 128², as a float batch in [−1, 1]."""
    from PIL import Image
    from deid_core import paths
    ps = sorted((paths.sample_dir() / "portraits").glob("*.jpg"))[:n]
    out = []
    for p in ps:
        im = Image.open(p).convert("RGB")
        s = min(im.size)
        im = im.crop(((im.width - s) // 2, (im.height - s) // 2,
                      (im.width + s) // 2, (im.height + s) // 2)).resize((128, 128))
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1)
    return torch.stack(out)


# ------------------------------------------------------------------------------- training


@amp_modes
def test_train_step_amp_channels_last(amp, tmp_path):
    """Two (or, if fp16 skips some, up to six) steps of compact-128 with the perceptual loss under autocast: every conv/linear of
    G and D runs in the AMP dtype, convolutions in channels-last, fp16 through a live
    GradScaler; master weights stay fp32, the loss finite, the weights move; checkpoint
    round trip on the device."""
    if DEVICE == "cpu" and amp == "fp16":
        return _skip("fp16 autocast needs CUDA")
    from deid_core.train import Trainer, TrainConfig
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    cfg = TrainConfig(preset="compact-128", out=str(tmp_path / "run"), steps=2, batch=4,
                      device=DEVICE, amp=amp, channels_last="on", identity="none", seed=0,
                      ckpt_every=0, sample_every=0)
    ident = TinyIdentity().to(DEVICE)
    x = _faces(4)
    t = Trainer(cfg, dataset=None, identity=ident)
    assert t.amp_dtype == want and t.channels_last and t.device.type == torch.device(DEVICE).type
    assert t.scaler.is_enabled() == (amp == "fp16")
    seen = {"dtype": set(), "cl": set()}
    hooks = []
    for net in (t.G, t.D):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                def hook(mod, inp, out):
                    seen["dtype"].add(out.dtype)
                    if isinstance(mod, nn.Conv2d) and out.shape[-1] > 1 and out.shape[1] > 1:
                        seen["cl"].add(out.is_contiguous(memory_format=torch.channels_last))
                hooks.append(m.register_forward_hook(hook))
    before = torch.cat([p.detach().float().flatten() for p in t.G.parameters()]).cpu()
    rows = []
    try:
        # fp16: the GradScaler may skip the first step(s) on inf gradients and lower its scale
        while len(rows) < 2 or (len(rows) < 6 and torch.equal(
                before, torch.cat([p.detach().float().flatten() for p in t.G.parameters()]).cpu())):
            rows.append(t.train_step(x))
    finally:
        for h in hooks:
            h.remove()
    assert seen["dtype"] == {want}, seen
    assert seen["cl"] == {True}, seen
    for r in rows:
        assert np.isfinite(r["total"]) and np.isfinite(r["p_raw"]) and r["p_raw"] != 0
    if amp == "fp16":
        assert np.isfinite(t.scaler.get_scale()) and t.scaler.get_scale() > 0
    assert all(p.dtype == torch.float32 and p.device.type == t.device.type for p in t.G.parameters())
    after = torch.cat([p.detach().float().flatten() for p in t.G.parameters()]).cpu()
    assert torch.isfinite(after).all() and (after - before).abs().max() > 1e-6
    # checkpoint written from the device, read back into a fresh trainer: same weights
    t.out.mkdir(parents=True, exist_ok=True)
    ck = t.save_checkpoint()
    t2 = Trainer(cfg, dataset=None, identity=ident)
    t2.load_checkpoint(ck)
    assert t2.step == t.step == len(rows)
    for a, b in zip(t.G.state_dict().values(), t2.G.state_dict().values()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------ inference


class _NoIdentity:
    """Stands in for the dlib network: targets are given as embeddings, never computed."""

    def embed_tensor(self, x):       # pragma: no cover - must not be called
        raise AssertionError("identity network used although every target was given")

    crop_to_chip_tensor = embed_tensor


def _deid(device: str):
    from deid_core.pipeline import Deidentifier
    from deid_core.paths import default_checkpoint
    ck = default_checkpoint()
    if ck is None:                   # pragma: no cover - the kit ships one
        raise AssertionError("no starter checkpoint under data/checkpoints/")
    return Deidentifier.from_checkpoint(ck, device, identity=_NoIdentity())


def _target(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.09, 128).astype(np.float32)


def test_inference_on_device_matches_cpu(tmp_path):
    """The committed starter model on the device gives the CPU's images and masks (±2 grey
    levels), for two λ values that give clearly different outputs."""
    from deid_core.model import to_uint8
    crops = to_uint8(_faces(4))
    gpu, cpu = _deid(DEVICE), _deid("cpu")
    assert next(gpu.G.parameters()).device.type == torch.device(DEVICE).type
    lams = (0.0, 1e-5) if gpu.cfg.lam_cond else (None,)
    outs = {}
    for lam in lams:
        og = gpu.crop_fn(_target(0), lam)(crops)       # (images, masks[, flow fields])
        oc = cpu.crop_fn(_target(0), lam)(crops)
        (ig, mg), (ic, mc) = og[:2], oc[:2]
        diff = np.abs(ig.astype(int) - ic.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05, (lam, diff.max(), diff.mean())
        assert np.abs(mg - mc).max() < 0.01
        if len(og) == 3:                               # a warp head: the same flow (crop px)
            assert np.abs(np.asarray(og[2]) - np.asarray(oc[2])).max() < 0.05
        outs[lam] = ig
    if len(lams) == 2:               # λ reaches the network on the device
        assert np.abs(outs[lams[1]].astype(int) - outs[lams[0]].astype(int)).mean() > 1.0


def test_video_network_path_on_device(tmp_path):
    """FrameProcessor + DeidentifierCropFns (one target for every track) on the device: the same
    frames as on the CPU (±3 grey levels), the face changed, the rest untouched."""
    from PIL import Image
    from deid_core import paths, video as V
    from deid_core.face import Face, FaceAligner, template_landmarks

    lm = template_landmarks(256) + np.float32([120, 40])      # a face placed by the template
    face = Face(box=np.float32([120, 40, 376, 296]), landmarks=lm)

    class Placed(FaceAligner):
        def detect(self, frame):
            return [face]

    portrait = Image.open(sorted((paths.sample_dir() / "portraits").glob("*.jpg"))[0])
    base = np.asarray(portrait.convert("RGB").resize((256, 256)))
    frames = []
    for i in range(3):
        f = np.full((360, 480, 3), 40 + 10 * i, np.uint8)
        f[40:296, 120:376] = np.roll(base, i, axis=1)
        frames.append(f)
    results = {}
    for dev in (DEVICE, "cpu"):
        deid = _deid(dev)
        proc = V.FrameProcessor(Placed(), pipeline.DeidentifierCropFns(deid, lam=None, target_embedding=_target(1)),
                                V.VideoConfig(progress=False))
        results[dev] = [proc(f, i / 25)[0] for i, f in enumerate(frames)]
    hull = video_metrics.hull_mask([lm], frames[0].shape[:2])
    import cv2
    near = cv2.dilate(hull.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    for g, c, f in zip(results[DEVICE], results["cpu"], frames):
        d = np.abs(g.astype(int) - c.astype(int))
        assert d.max() <= 3 and d.mean() < 0.05, (d.max(), d.mean())
        changed = np.abs(g.astype(int) - f.astype(int)).sum(-1)
        assert changed[hull].mean() > 1.0                    # the network did something
        assert (changed[~near] == 0).all()                   # nothing away from the face


# --------------------------------------------------------------------------- plain runner


class _Skip(Exception):
    pass


def _skip(reason: str):
    if pytest is not None and "PYTEST_CURRENT_TEST" in os.environ:
        pytest.skip(reason)
    raise _Skip(reason)


def main() -> int:
    if not HAVE_DEVICE:
        print(f"SKIP all: {SKIP_REASON}")
        return 0
    print(f"device {DEVICE}: {torch.cuda.get_device_name(0) if DEVICE != 'cpu' else 'cpu'}, "
          f"torch {torch.__version__}")
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    failed = 0
    for name, fn in tests:
        for param in getattr(fn, "params", [None]):
            label = f"{name}[{param}]" if param else name
            with tempfile.TemporaryDirectory() as d:
                try:
                    fn(param, Path(d)) if param else fn(Path(d))
                    print(f"PASS {label}")
                except _Skip as exc:
                    print(f"SKIP {label}: {exc}")
                except Exception as exc:          # report and go on
                    import traceback
                    failed += 1
                    print(f"FAIL {label}: {exc!r}")
                    traceback.print_exc()
    print("FAILED" if failed else "OK", f"({failed} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Baselines, Table 3, attributes, video metrics and the λ sweep on NASA portraits with a small
fake evaluator (pixels of the 5-point chip), so these tests need no recognizer weights."""
from __future__ import annotations

import numpy as np
import pytest

from deid_core.errors import DeidError
from deid_core.evaluate import baselines as B
from deid_core.evaluate import metrics


class FakeNet:
    """Evaluator stand-in: the 24×24 gray 5-point chip as the embedding (cosine distance)."""
    name = "fake"
    threshold = 0.02

    def chip(self, image, landmarks68):
        from deid_core.identity.chips import align_five_point, arcface_five_points
        return align_five_point(image, arcface_five_points(landmarks68), 24)

    def embed(self, chips):
        x = np.asarray(chips, np.float32).mean(-1).reshape(len(chips), -1)
        return x - x.mean(1, keepdims=True)

    def embed_faces(self, image, lms):
        return self.embed(np.stack([self.chip(image, lm) for lm in lms]))

    def distance(self, a, b):
        return 1.0 - metrics.cosine_similarity(a, b)


@pytest.fixture(scope="module")
def faces(portraits):
    import cv2
    from deid_core.face import FaceAligner
    al = FaceAligner()
    ims = [cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for im in portraits[:5]]
    return ims, [al.detect(im)[0].landmarks for im in ims]


def _outside(im, lm, margin=4):
    m = np.ones(im.shape[:2], bool)
    x0, y0 = np.floor(lm.min(0)).astype(int) - margin
    x1, y1 = np.ceil(lm.max(0)).astype(int) + margin
    m[max(y0, 0):y1, max(x0, 0):x1] = False
    return m


def test_blur_and_pixelate_change_only_the_face(faces):
    ims, lms = faces
    im, lm = ims[0], lms[0]
    out = B.blur_face(im, lm, 4.0)
    out_pix = B.pixelate_face(im, lm, 8)
    outside = _outside(im, lm)
    assert (out[outside] == im[outside]).all() and (out_pix[outside] == im[outside]).all()
    d = [metrics.pixel_distance(im, B.blur_face(im, lm, s)) for s in (1.0, 3.0, 9.0)]
    assert 0 < d[0] < d[1] < d[2]
    assert metrics.pixel_distance(im, out_pix) > 0.5


def test_sigma_fit_hits_target(faces):
    ims, lms = faces
    s = B.sigma_for_pixel_distance(ims[:3], lms[:3], target=2.0)
    fn = B.blur_transform(s)
    got = np.mean([metrics.pixel_distance(im, fn(im, lm)) for im, lm in zip(ims[:3], lms[:3])])
    assert got == pytest.approx(2.0, rel=0.05)
    assert fn.cache_tag == f"blur-s{s:.4f}"


def test_swap_baseline_uses_a_dissimilar_donor(faces):
    ims, lms = faces
    net = FakeNet()
    emb = np.concatenate([net.embed_faces(im, [lm]) for im, lm in zip(ims[1:], lms[1:])])
    fn = B.swap_transform(ims[1:], lms[1:], emb, net)
    out = fn(ims[0], lms[0])
    assert out.shape == ims[0].shape and out.dtype == np.uint8
    outside = _outside(ims[0], lms[0], margin=40)
    assert (out[outside] == ims[0][outside]).all()
    e0, e1 = net.embed_faces(ims[0], [lms[0]]), net.embed_faces(out, [lms[0]])
    assert net.distance(e0, e1)[0] > 0.02
    with pytest.raises(DeidError, match="dissimilar"):
        B.swap_transform([ims[0]], [lms[0]], net.embed_faces(ims[0], [lms[0]]), net)(ims[0], lms[0])


def test_table3_rows(faces, tmp_path, monkeypatch):
    from deid_core.evaluate.distances import table3
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path))
    ims, lms = faces
    outputs = {"identity": [im.copy() for im in ims], "blur": [B.blur_face(im, lm, 5) for im, lm in zip(ims, lms)]}
    df = table3(ims, lms, outputs, [FakeNet()])
    ident = df[df.method == "identity"].iloc[0]
    assert ident["RGB distance"].startswith("0.00") and ident["same-person rate"] == 1.0
    assert float(df[df.method == "blur"].iloc[0]["face descriptor distance"].split()[0]) > 0
    assert (tmp_path / "tables" / "table3_distances.md").is_file()


def test_attributes_known_answers(faces):
    from deid_core.evaluate.attributes import attribute_preservation, head_pose
    ims, lms = faces
    same = attribute_preservation(ims[:3], [im.copy() for im in ims[:3]])
    assert same["detection_retention"] == 1.0 and same["nme_mean"] == 0.0 and same["yaw_diff"] == 0.0
    shifted = [np.roll(im, 6, axis=1) for im in ims[:3]]  # 6 px to the right
    r = attribute_preservation(ims[:3], shifted)
    iod = np.mean([metrics.inter_ocular(lm) for lm in lms[:3]])
    assert r["nme_mean"] == pytest.approx(6.0 / iod, rel=0.3)
    blank = [np.full_like(im, 128) for im in ims[:3]]
    assert attribute_preservation(ims[:3], blank)["detection_retention"] == 0.0
    # mirroring the landmarks negates yaw and roll
    lm, w = lms[0].astype(np.float64), ims[0].shape[1]
    mir = lm.copy()
    mir[:, 0] = w - 1 - lm[:, 0]
    from deid_core.face import template_landmarks  # noqa: F401  (same 68-point order)
    perm = np.r_[16:-1:-1, 26:16:-1, 27:31, 35:30:-1, 45:41:-1, 47:45:-1, 39:35:-1, 41:39:-1,
                 54:47:-1, 59:54:-1, 64:59:-1, 67:64:-1]
    p0, p1 = head_pose(lm, ims[0].shape), head_pose(mir[perm], ims[0].shape)
    assert p1[0] == pytest.approx(-p0[0], abs=2.0) and p1[2] == pytest.approx(-p0[2], abs=2.0)


def test_identity_consistency():
    from deid_core.evaluate.video_metrics import identity_consistency
    net = FakeNet()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)
    lm = np.zeros((68, 2), np.float32)
    lm[36:42], lm[42:48], lm[30], lm[48], lm[54] = (40, 50), (80, 50), (60, 70), (45, 90), (75, 90)
    same = identity_consistency([frame] * 4, [lm] * 4, net)
    assert same["std"] == pytest.approx(0.0, abs=1e-6) and same["n_frames"] == 4
    noisy = [np.clip(frame + rng.normal(0, 40, frame.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    assert identity_consistency(noisy, [lm] * 4, net)["std"] > 0.01
    with pytest.raises(DeidError, match="at least 2"):
        identity_consistency([frame], [lm], net)


def test_lambda_sweep_outputs(faces, tmp_path, monkeypatch):
    from deid_core.evaluate.lambda_sweep import lambda_sweep
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path))
    ims, lms = faces
    transforms = {lam: B.blur_transform(lam) for lam in (0.05, 0.2, 0.5)}  # stand-in for models by λ
    df = lambda_sweep(ims[:2], lms[:2], transforms, [FakeNet()], name="sweep")
    assert df["RGB distance"].is_monotonic_increasing
    assert df["landmark NME"].iloc[0] < 0.05 < df["landmark NME"].iloc[-1]   # heavy blur moves the points
    assert set(df.attrs["spearman"]) == {"fake"}
    assert (tmp_path / "figures" / "sweep.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "sweep_distance.png").is_file()


def test_deid_transform_runs_the_model_once_per_image(tmp_path, portraits, monkeypatch):
    """Several evaluators share one de-identification of each image (no repeated network runs)."""
    import torch
    from deid_core.face import FaceAligner
    from deid_core.evaluate.conditions import deid_transform
    from deid_core.pipeline import Deidentifier
    from deid_core.model import Generator, ModelConfig
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128")
    ckpt = tmp_path / "g.pt"
    torch.save({"config": {"model": cfg.to_dict()}, "generator": Generator(cfg).state_dict(),
                "step": 0, "lam_state": {"lam": 2e-6, "conditioned": False}}, ckpt)
    calls = []
    real = Deidentifier.generate     # one call per network run
    monkeypatch.setattr(Deidentifier, "generate", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    fn = deid_transform(ckpt)
    img = portraits[0]
    lm = FaceAligner(size=128).detect(img)[0].landmarks
    a = fn(img, lm)
    b = fn(img, lm)
    assert len(calls) == 1 and np.array_equal(a, b) and not np.array_equal(a, img)
    a[:] = 0                                   # callers get copies: the memo cannot be corrupted
    assert np.array_equal(fn(img, lm), b) and len(calls) == 1

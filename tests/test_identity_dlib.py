"""dlib ResNet-29 port: parity with dlib, chips, differentiable path, gradients, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

dlib = pytest.importorskip("dlib")

from deid_core import paths  # noqa: E402
from deid_core.errors import DeidError  # noqa: E402


@pytest.fixture(scope="module")
def dlib_models():
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(paths.dlib_model("shape_predictor_68_face_landmarks.dat")))
    rec = dlib.face_recognition_model_v1(str(paths.dlib_model("dlib_face_recognition_resnet_model_v1.dat")))
    return det, sp, rec


@pytest.fixture(scope="module")
def faces(portraits, dlib_models):
    """(image, dlib shape, landmarks68) for the first six NASA portraits."""
    det, sp, _ = dlib_models
    out = []
    for img in portraits[:6]:
        rects = det(img, 1)
        assert len(rects) >= 1
        shape = sp(img, rects[0])
        lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        out.append((img, shape, lm))
    return out


@pytest.fixture(scope="module")
def net():
    from deid_core.identity.dlib_resnet import load_dlib_resnet
    torch.set_num_threads(1)
    return load_dlib_resnet()


def test_reader_structure():
    from deid_core.identity.dlib_reader import read_dlib_network
    import sys
    sys.setrecursionlimit(5000)
    nodes = read_dlib_network(paths.dlib_model("dlib_face_recognition_resnet_model_v1.dat"))
    kinds = [n.kind for n in nodes]
    assert kinds[0] == "loss_metric" and kinds[-1] == "input"
    assert abs(nodes[0].fields["dist_thresh"] - 0.6) < 1e-6
    cons = [n for n in nodes if n.kind.startswith("con_")]
    assert len(cons) == 29 and cons[-1].fields["weight"].shape == (32, 3, 7, 7)
    assert sum(k.startswith("affine") for k in kinds) == 29
    for c in cons:
        f = c.fields
        assert f["padding_y"] == (f["nr"] // 2 if f["stride_y"] == 1 else 0)


def test_parity_with_dlib(net, faces, dlib_models):
    """PyTorch port vs dlib's compute_face_descriptor on dlib's own chips: max |diff| <= 1e-4."""
    _, _, rec = dlib_models
    chips = np.stack([dlib.get_face_chip(img, shape, 150, 0.25) for img, shape, _ in faces])
    ref = np.array([np.array(rec.compute_face_descriptor(c)) for c in chips])
    x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() - net.mean) / 256
    with torch.no_grad():
        out = net(x).numpy()
    assert out.shape == (len(faces), 128)
    diff = np.abs(out - ref).max()
    assert diff <= 1e-4, diff
    # different people are far apart, so the comparison is not trivially satisfied
    assert np.linalg.norm(out[0] - out[1]) > 0.6


@pytest.fixture(scope="module")
def ident():
    from deid_core.identity import load_identity_network
    torch.set_num_threads(1)
    return load_identity_network("dlib")


def test_chip_matches_dlib(ident, faces):
    """Our chip (from a (68,2) array) and our geometry equal dlib's get_face_chip / chip details."""
    from deid_core.identity.chips import dlib_chip_details
    for img, shape, lm in faces[:3]:
        ref = dlib.get_face_chip(img, shape, 150, 0.25)
        assert np.array_equal(ident.chip(img, lm), ref)
        det = dlib.get_face_chip_details(shape, 150, 0.25)
        angle, (l, t, r, b) = dlib_chip_details(lm)
        assert abs(angle - det.angle) < 1e-9
        assert np.allclose([l, t, r, b], [det.rect.left(), det.rect.top(), det.rect.right(), det.rect.bottom()],
                           atol=1e-3)


def test_embed_matches_dlib(ident, faces, dlib_models):
    _, _, rec = dlib_models
    img, shape, lm = faces[0]
    ours = ident.embed_faces(img, [lm])
    ref = np.array(rec.compute_face_descriptor(img, shape))
    assert ours.shape == (1, 128) and ours.dtype == np.float32
    assert np.abs(ours[0] - ref).max() < 1e-4
    assert ident.distance(ours, ref[None])[0] < 1e-4


def test_crop_to_chip_tensor_close_to_dlib(ident, faces):
    """Differentiable chip path vs dlib.get_face_chip: pixels within uint8 rounding (+pyramid), and
    embeddings far closer than the 0.6 threshold, for full-size NASA faces (pyramid) and small ones."""
    import cv2
    for img, shape, lm in faces[:3]:
        for scale in (1.0, 0.4):
            im = np.ascontiguousarray(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
            sh = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1),
                                            [dlib.point(int(round(x * scale)), int(round(y * scale))) for x, y in lm])
            lms = np.array([[p.x, p.y] for p in sh.parts()], np.float32)
            ref = dlib.get_face_chip(im, sh, 150, 0.25)
            x = torch.from_numpy(im).permute(2, 0, 1)[None].float() / 127.5 - 1
            chip = ident.crop_to_chip_tensor(x, lms)
            assert chip.shape == (1, 3, 150, 150)
            pix = ((chip[0] + 1) * 127.5).permute(1, 2, 0).numpy()
            assert np.abs(pix - ref).mean() < 1.5
            with torch.no_grad():
                e1 = ident.embed_tensor(chip).numpy()
            e2 = ident.embed(ref)
            assert ident.distance(e1, e2)[0] < 0.02


def test_crop_to_chip_tensor_shared_landmarks_batch(ident, faces):
    """One landmark set for the batch (training crops) == the same set given per example."""
    img, _, lm = faces[0]
    x = torch.from_numpy(np.stack([img, img[:, ::-1]])[:, ::2, ::2].copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    shared = ident.crop_to_chip_tensor(x, lm / 2)
    per = ident.crop_to_chip_tensor(x, np.stack([lm / 2, lm / 2]))
    assert shared.shape == (2, 3, 150, 150) and torch.allclose(shared, per, atol=1e-5)
    assert not torch.allclose(shared[0], shared[1])


def test_gradients_flow(ident, faces):
    img, _, lm = faces[0]
    crop = torch.from_numpy(img[::2, ::2].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    crop.requires_grad_(True)
    chips = ident.crop_to_chip_tensor(crop, lm / 2)
    feats = ident.features(chips)
    assert set(feats) == {"a72", "a35", "a17", "a8", "a4", "a2", "descriptor"}
    assert [feats[k].shape[-1] for k in ("a72", "a35", "a17", "a8", "a4", "a2")] == [72, 35, 17, 8, 4, 2]
    for key, value in feats.items():
        grad, = torch.autograd.grad(value.abs().mean(), crop, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, key
    assert torch.allclose(feats["descriptor"], ident.embed_tensor(chips))


def test_bad_input(ident, faces):
    img, _, lm = faces[0]
    with pytest.raises(DeidError):
        ident.embed(np.zeros((2, 150, 150, 3), np.float32))       # wrong dtype
    with pytest.raises(DeidError):
        ident.embed(np.zeros((2, 112, 112, 3), np.uint8))         # wrong size
    with pytest.raises(DeidError):
        ident.embed_tensor(torch.zeros(1, 3, 150, 150) + 200.0)   # [0,255] instead of [-1,1]
    with pytest.raises(DeidError):
        ident.features(torch.zeros(1, 150, 150, 3))               # NHWC
    with pytest.raises(DeidError):
        ident.chip(img, lm[:10])                                  # wrong landmark count
    with pytest.raises(DeidError):
        ident.chip(img.astype(np.float32), lm)                    # float image


def test_registry(monkeypatch, tmp_path):
    from deid_core.identity import load_identity_network
    with pytest.raises(DeidError, match="unknown identity network"):
        load_identity_network("resnet-50")
    # arcface is registered; without weights it says where to put them (nothing downloaded)
    for var in ("DEID_ARCFACE_WEIGHTS", "DEID_ARCFACE_DOWNLOAD", "DEID_ARCFACE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DEID_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DeidError, match="ArcFace weights") as exc:
        load_identity_network("arcface")
    assert "--weights" in str(exc.value) and str(tmp_path / "cache" / "arcface") in str(exc.value)

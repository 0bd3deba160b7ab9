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

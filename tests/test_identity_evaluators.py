"""Independent evaluators: facenet-casia (TF graph → PyTorch) and sface (ONNX) parity and sanity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

dlib = pytest.importorskip("dlib")

from deid_core import paths  # noqa: E402
from deid_core.errors import DeidError  # noqa: E402


@pytest.fixture(scope="module")
def landmarks(portraits):
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(paths.dlib_model("shape_predictor_68_face_landmarks.dat")))
    out = []
    for img in portraits[:6]:
        shape = sp(img, det(img, 1)[0])
        out.append(np.array([[p.x, p.y] for p in shape.parts()], np.float32))
    return out


@pytest.fixture(scope="module")
def facenet():
    from deid_core.identity import load_identity_network
    torch.set_num_threads(1)
    return load_identity_network("facenet-casia")


@pytest.fixture(scope="module")
def sface():
    from deid_core.identity import load_identity_network
    return load_identity_network("sface", threads=1)


def test_facenet_parity_with_cv2(facenet, portraits, landmarks):
    """PyTorch InceptionResnetV1 with the mapped graph weights vs cv2.dnn on the same chips ≤ 1e-4."""
    from deid_core.identity.facenet import cv2_reference_net
    ref_net = cv2_reference_net()
    chips = np.stack([facenet.chip(img, lm) for img, lm in zip(portraits[:5], landmarks[:5])])
    assert chips.shape == (5, 160, 160, 3)
    ours = facenet.embed(chips)  # one batch of 5
    assert ours.shape == (5, 512) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    for chip, emb in zip(chips, ours):
        x = facenet._standardise(torch.from_numpy(chip).permute(2, 0, 1)[None].float()).numpy()
        ref_net.setInput(x)
        ref = ref_net.forward()[0]
        assert np.abs(ref - emb).max() <= 1e-4
    d = facenet.distance(ours[:-1], ours[1:])
    assert (d > 0.3).all()  # different astronauts are not the same embedding


def test_facenet_tensor_path_and_gradients(facenet, portraits, landmarks):
    chip = facenet.chip(portraits[0], landmarks[0])
    x = (torch.from_numpy(chip).permute(2, 0, 1)[None].float() / 127.5 - 1).requires_grad_(True)
    feats = facenet.features(x)
    assert np.abs(feats["descriptor"].detach().numpy() - facenet.embed(chip)).max() < 1e-4
    grad, = torch.autograd.grad(feats["descriptor"].sum() + feats["block35"].mean(), x)
    assert grad.abs().sum() > 0
    with pytest.raises(DeidError):
        facenet.embed_tensor(x.detach() * 255)


def test_sface_parity_with_opencv(sface, portraits, landmarks):
    """onnxruntime batched run vs cv2.FaceRecognizerSF.feature on our aligned 112×112 chips."""
    import cv2
    rec = cv2.FaceRecognizerSF.create(str(sface.path), "")
    chips = np.stack([sface.chip(img, lm) for img, lm in zip(portraits[:4], landmarks[:4])])
    ours = sface.embed(chips)
    assert ours.shape == (4, 128)
    for chip, emb in zip(chips, ours):
        ref = rec.feature(np.ascontiguousarray(chip[..., ::-1]))[0]
        assert np.abs(ref - emb).max() < 1e-4
        assert abs(rec.match(ref[None], emb[None], cv2.FaceRecognizerSF_FR_COSINE) - (1 - sface.distance(ref, emb)[0])) < 1e-5


def test_five_point_alignment(portraits, landmarks):
    from deid_core.identity.chips import ARCFACE_REF_112, align_five_point, arcface_five_points, similarity_transform
    pts = arcface_five_points(landmarks[0])
    assert pts.shape == (5, 2) and pts[0, 0] < pts[1, 0] and pts[2, 1] < pts[3, 1]
    chip = align_five_point(portraits[0], pts, 112)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    M = similarity_transform(pts, ARCFACE_REF_112)
    mapped = pts @ M[:, :2].T + M[:, 2]
    assert np.abs(mapped - ARCFACE_REF_112).max() < 6  # a similarity fits a real face's 5 points to a few px


@pytest.mark.shared_data
def test_same_person_closer_than_different(sface, facenet, shared_data):
    """NASA in-flight photo vs the same astronaut's portrait is closer than vs other astronauts."""
    from PIL import Image
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(paths.dlib_model("shape_predictor_68_face_landmarks.dat")))

    def face(path):
        img = np.asarray(Image.open(path).convert("RGB"))
        rects = sorted(det(img, 1), key=lambda r: -r.area())
        shape = sp(img, rects[0])
        return img, np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    probe = face(shared_data / "nasa-inflight" / "astronaut_eileen_collins.png")
    gallery_names = ["Eileen_Collins", "Alan_Poindexter", "Andrew_Morgan", "Barbara_Morgan", "Charles_Camarda"]
    gallery = [face(shared_data / "nasa-portraits" / f"{n}.jpg") for n in gallery_names]
    for net in (sface, facenet):
        e = net.embed_faces(probe[0], [probe[1]])
        g = np.concatenate([net.embed_faces(img, [lm]) for img, lm in gallery])
        d = net.distance(np.repeat(e, len(g), 0), g)
        assert d.argmin() == 0, (net.name, d)

"""ArcFace backend without real weights: a random ResNet-style net with ArcFace's I/O
signature exported to ONNX, loaded through the backend; the offline error; 5-point alignment."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deid_core.errors import DeidError


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout), nn.PReLU(cout),
                                  nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.body(x) + self.short(x)


class TinyIResNet(nn.Module):
    """LResNet-E-IR layout in miniature: stem, IR blocks, BN-dropout-FC-BN to a 512-d embedding."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.PReLU(8))
        self.blocks = nn.Sequential(_Block(8, 16, 2), _Block(16, 16, 2), _Block(16, 32, 2), _Block(32, 32, 2))
        self.bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512)

    def forward(self, x):
        x = self.bn(self.blocks(self.stem(x)))
        return self.features(self.fc(torch.flatten(x, 1)))


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    torch.manual_seed(0)
    net = TinyIResNet().eval()
    path = tmp_path_factory.mktemp("arcface") / "tiny_arcface.onnx"
    x = torch.randn(1, 3, 112, 112)
    kw = dict(input_names=["input.1"], output_names=["fc1"],
              dynamic_axes={"input.1": {0: "N"}, "fc1": {0: "N"}}, opset_version=17)
    try:
        torch.onnx.export(net, (x,), str(path), dynamo=False, **kw)
    except TypeError:  # older torch without the dynamo switch
        torch.onnx.export(net, (x,), str(path), **kw)
    return path, net


@pytest.fixture(scope="module")
def nasa_landmarks(portraits):
    from deid_core.face import FaceAligner
    al = FaceAligner()
    out = []
    for im in portraits[:4]:
        faces = al.detect(im)
        assert faces, "no face on a NASA portrait"
        out.append(faces[0].landmarks)
    return out


def test_backend_loads_and_matches_torch(onnx_path, portraits, nasa_landmarks):
    from deid_core.identity import load_identity_network
    path, net = onnx_path
    arc = load_identity_network("arcface", weights=str(path))
    assert arc.name == "arcface" and arc.info.dim == 512 and arc.info.chip_size == 112
    assert arc.batched and arc.input_mean == 127.5  # no Sub/Mul at the graph start
    chips = np.stack([arc.chip(im, lm) for im, lm in zip(portraits, nasa_landmarks)])
    assert chips.shape == (4, 112, 112, 3) and chips.dtype == np.uint8
    emb = arc.embed(chips)
    assert emb.shape == (4, 512) and emb.dtype == np.float32
    # batching: one batch == image by image == the torch network on the same normalised input
    arc.batch_size = 1
    assert np.allclose(emb, arc.embed(chips), atol=1e-4)
    x = torch.from_numpy((chips.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5)
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.allclose(emb, ref, atol=1e-3)
    # the alignment path: embed_faces == chip + embed
    assert np.allclose(arc.embed_faces(portraits[0], [nasa_landmarks[0]]), emb[:1], atol=1e-4)
    assert arc.distance(emb[:1], emb[:1])[0] == pytest.approx(0.0, abs=1e-5)


def test_env_variable_and_offline_error(onnx_path, monkeypatch, tmp_path):
    from deid_core.identity.arcface import ENV_WEIGHTS, load
    monkeypatch.setenv("DEID_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DEID_ARCFACE_DOWNLOAD", raising=False)
    monkeypatch.setenv(ENV_WEIGHTS, str(onnx_path[0]))
    assert load().info.dim == 512
    monkeypatch.delenv(ENV_WEIGHTS)
    with pytest.raises(DeidError) as err:
        load()
    msg = str(err.value)
    assert "--weights" in msg and ENV_WEIGHTS in msg and str(tmp_path / "cache" / "arcface") in msg
    with pytest.raises(DeidError, match="not found at"):
        load(weights=str(tmp_path / "nope.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(DeidError, match="not a readable ONNX"):
        load(weights=str(bad))


def test_five_point_alignment_on_nasa(portraits, nasa_landmarks):
    """5-point alignment on the NASA portraits (112×112 ArcFace reference):

    (1) the warp puts the face where the transform says: the 5 points re-detected on the aligned
        chip lie within mean 2 px of the transformed detected points;
    (2) the points we derive from the 68 are the points ArcFace's own detector would give:
        within mean 2 px of MTCNN's 5 points (the detector insightface aligns with), measured
        in the 112×112 frame — see :func:`test_five_points_match_mtcnn`;
    (3) after the fit they lie within mean 4.5 px (≤ 6 px on every face) of the reference points.
        The issue asked ≤ 2 px here, but that measures the face, not the alignment: on all 134
        NASA portraits the residual is 3.34 px for our points and 3.35 px for MTCNN's own (only
        ~10 % of faces reach 2 px with either) — smiling mouth corners sit ~3.5 px wider and
        ~3 px higher than ArcFace's mean face, and no similarity transform can remove that.
    """
    import cv2
    from deid_core.face import FaceAligner
    from deid_core.identity.chips import (ARCFACE_REF_112, align_five_point, arcface_five_points,
                                          five_point_errors, similarity_transform)
    al = FaceAligner(upsample=1)
    errs = []
    for im, lm in zip(portraits, nasa_landmarks):
        p5 = arcface_five_points(lm).astype(np.float64)
        M = similarity_transform(p5, ARCFACE_REF_112)
        mapped = p5 @ M[:, :2].T + M[:, 2]
        err = five_point_errors(p5)
        assert np.allclose(err, np.linalg.norm(mapped - ARCFACE_REF_112, axis=1))
        errs.append(err.mean())
        assert err.mean() <= 6.0, err
        chip = align_five_point(im, p5, 112)
        big = cv2.resize(chip, (224, 224), interpolation=cv2.INTER_CUBIC)
        faces = al.detect(big)
        assert faces, "face not re-detected on the aligned chip"
        again = arcface_five_points(faces[0].landmarks / 2.0)
        assert np.linalg.norm(again - mapped, axis=1).mean() <= 2.0
    assert np.mean(errs) <= 4.5, errs


def test_five_points_match_mtcnn(portrait_paths):
    """Our 68→5 mapping (eye centres, nose tip 30, mouth corners 48/54) agrees with MTCNN's 5
    points — the convention ArcFace/SFace were trained with — within 2 px at 112×112 on the
    typical face (median over the 24 sample portraits; all 134 NASA portraits: median 1.14 px,
    mean 1.37 px, ≤ 2 px on 95 % of faces; scripts/five_point_check.py). The few larger
    disagreements are MTCNN's own misses (on Alan Poindexter and
    Charles Camarda its nose and mouth points sit visibly off the face's, dlib's do not). Both
    fit the reference equally well, so the residual of test (3) above is the faces' geometry."""
    from PIL import Image
    from facenet_pytorch import MTCNN
    from deid_core.face import FaceAligner
    from deid_core.identity.chips import arcface_five_points, five_point_agreement, five_point_errors
    mtcnn, al = MTCNN(keep_all=False, device="cpu"), FaceAligner()
    agree, ours_fit, mtcnn_fit = [], [], []
    for path in portrait_paths:
        im = np.asarray(Image.open(path).convert("RGB"))
        faces = al.detect(im)
        _, _, pts = mtcnn.detect(Image.fromarray(im), landmarks=True)
        assert faces and pts is not None, f"no face found on {path.name}"
        p5 = arcface_five_points(faces[0].landmarks).astype(np.float64)
        m5 = np.asarray(pts[0], np.float64)
        agree.append(five_point_agreement(p5, m5).mean())
        ours_fit.append(five_point_errors(p5).mean())
        mtcnn_fit.append(five_point_errors(m5).mean())
    assert len(agree) == 24
    assert np.median(agree) <= 2.0, agree
    assert np.mean(np.array(agree) <= 2.0) >= 0.75, agree
    assert abs(np.median(ours_fit) - np.median(mtcnn_fit)) <= 1.0, (ours_fit, mtcnn_fit)

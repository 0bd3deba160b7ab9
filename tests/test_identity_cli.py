"""`deid embed`: every face, JSON with box and embedding; dlib chips cut exactly like dlib."""
from __future__ import annotations

import json

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")

from deid_core import paths  # noqa: E402
from deid_core.cli import main  # noqa: E402


def _run(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_embed_dlib_two_faces_matches_dlib(capsys, sample_dir):
    """The two-astronaut in-flight photo: two faces; dlib embeddings equal dlib's own descriptor
    for the chip dlib.get_face_chip(img, shape68, 150, 0.25) (up to float32 rounding)."""
    from deid_core.face import read_image
    path = sample_dir / "inflight" / "Andrew_Morgan__Nick_Hague_inflight.jpg"
    # dlib's own HOG boxes on both sides: the comparison is of the recogniser port, not of
    # the detectors (the default YuNet box gives landmarks ~1 px away, a different chip)
    rc, out, _ = _run(capsys, ["embed", str(path), "--network", "dlib", "--detector", "hog",
                               "--upsample", "1"])
    assert rc == 0
    faces = json.loads(out)
    assert isinstance(faces, list) and len(faces) == 2
    img = read_image(path)
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(paths.dlib_model("shape_predictor_68_face_landmarks.dat")))
    rec = dlib.face_recognition_model_v1(str(paths.dlib_model("dlib_face_recognition_resnet_model_v1.dat")))
    refs = []
    for r in det(img, 1):
        shape = sp(img, r)
        refs.append(np.array(rec.compute_face_descriptor(dlib.get_face_chip(img, shape, 150, 0.25))))
    for face in faces:
        assert len(face["box"]) == 4 and face["box"][2] > face["box"][0] and face["box"][3] > face["box"][1]
        e = np.array(face["embedding"])
        assert e.shape == (128,)
        assert min(np.abs(e - r).max() for r in refs) < 1e-4
    assert np.linalg.norm(np.array(faces[0]["embedding"]) - faces[1]["embedding"]) > 0.6


@pytest.mark.parametrize("network,dim", [("sface", 128), ("facenet-casia", 512)])
def test_embed_evaluators(capsys, portrait_paths, network, dim):
    rc, out, _ = _run(capsys, ["embed", str(portrait_paths[0]), "--network", network])
    assert rc == 0
    faces = json.loads(out)
    assert len(faces) == 1 and len(faces[0]["embedding"]) == dim


def test_embed_errors(capsys, tmp_path, portrait_paths, monkeypatch):
    monkeypatch.delenv("DEID_FACENET_WEIGHTS", raising=False)
    rc, _, err = _run(capsys, ["embed", str(tmp_path / "missing.jpg")])
    assert rc == 1 and "missing.jpg" in err
    rc, _, err = _run(capsys, ["embed", str(portrait_paths[0]), "--network", "facenet-vggface2"])
    assert rc == 1 and "DEID_FACENET_WEIGHTS" in err
    rc, _, err = _run(capsys, ["embed", str(portrait_paths[0]), "--network", "nope"])
    assert rc == 1 and "unknown identity network" in err

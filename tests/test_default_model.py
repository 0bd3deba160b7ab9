"""Regression test of the committed default model (data/checkpoints/): a broken export, loader
or paste path fails here in seconds, on held-out NASA faces, against the bounds its model card
states (``data/checkpoints/MODEL_CARD.json``, measured on the 24 held-out portraits)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deid_core import paths
from deid_core.evaluate import metrics
from deid_core.evaluate.naturalness import detector_box, hf_ratio, landmark_nme
from deid_core.face.aligner import FaceAligner
from deid_core.face.detect import AlignConfig
from deid_core.pipeline import Deidentifier


@pytest.fixture(scope="module")
def card() -> dict:
    ckpt = paths.default_checkpoint()
    if ckpt is None:
        pytest.skip("no committed default model in data/checkpoints/")
    card = json.loads((ckpt.parent / "MODEL_CARD.json").read_text(encoding="utf-8"))
    assert card["checkpoint"] == ckpt.name, "MODEL_CARD.json describes another checkpoint"
    return card


@pytest.fixture(scope="module")
def model(card):
    return Deidentifier.from_checkpoint(paths.default_checkpoint(), "cpu")


@pytest.fixture(scope="module")
def outputs(model, portraits):
    """4 held-out portraits at λ = 0, half the default λ and the default λ (own target)."""
    faces = portraits[:4]
    lam = model.resolve_lam(None)[0]
    lams = [0.0, lam / 2, lam]
    return faces, lams, {l: [model(f, model.embed_target(f), lam=l)[0] for f in faces] for l in lams}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_lambda_zero_returns_the_input(outputs):
    faces, lams, outs = outputs
    for src, out in zip(faces, outs[0.0]):
        assert metrics.pixel_distance(src, out) < 0.5


def test_identity_distance_grows_along_the_dial(model, outputs, card):
    faces, lams, outs = outputs
    src = [_unit(model.embed_target(f)) for f in faces]
    dist = [float(np.mean([np.linalg.norm(s - _unit(model.embed_target(o)))
                           for s, o in zip(src, outs[l])])) for l in lams]
    assert dist[0] < dist[1] < dist[2], dist
    assert dist[2] >= card["bounds"]["dlib_distance_min"], dist


def test_default_lambda_stays_inside_the_card_bounds(outputs, card):
    faces, lams, outs = outputs
    b = card["bounds"]
    aligner = FaceAligner(AlignConfig(size=128, detector="hog"))
    chroma, luma, nme = [], [], []
    for src, out in zip(faces, outs[lams[-1]]):
        lm = aligner.detect(src)[0].landmarks
        r = hf_ratio(src, out, lm)
        chroma.append(r.chroma_ratio)
        luma.append(r.luma_ratio)
        nme.append(float(landmark_nme(aligner, [out], [detector_box(aligner, src, lm)], lm[None])[0]))
    assert b["chroma_ratio"][0] <= np.median(chroma) <= b["chroma_ratio"][1], chroma
    assert b["luma_ratio"][0] <= np.median(luma) <= b["luma_ratio"][1], luma
    assert np.median(nme) <= b["nme_max"], nme

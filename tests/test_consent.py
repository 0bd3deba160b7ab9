"""Consent list (deid_core.video.consent) on real faces: NASA portraits as references, the
in-flight photos (Morgan and Hague together; Collins) as simulated video frames."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from deid_core.errors import DeidError
from deid_core.face import FaceAligner, read_image
from deid_core.identity import load_identity_network
from deid_core.video.consent import ConsentConfig, ConsentList, photo_files


@pytest.fixture(scope="module")
def net():
    return load_identity_network("sface", threads=1)


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner()


def _frames(image: np.ndarray, box: np.ndarray, aligner: FaceAligner, n: int, seed: int):
    """``n`` simulated video frames of the face in ``box``: a window around it shifted, scaled
    and brightened at random, with the face re-detected (frame, 68 landmarks) on each."""
    rng = np.random.default_rng(seed)
    side = float(box[2] - box[0])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    H, W = image.shape[:2]
    out = []
    while len(out) < n:
        dx, dy = rng.uniform(-0.15, 0.15, 2) * side
        half = 1.5 * side * rng.uniform(0.9, 1.1)
        x0, y0 = int(max(0, cx + dx - half)), int(max(0, cy + dy - half))
        x1, y1 = int(min(W, cx + dx + half)), int(min(H, cy + dy + half))
        crop = image[y0:y1, x0:x1].astype(np.float32) * rng.uniform(0.8, 1.2)
        scale = rng.uniform(0.85, 1.3)
        frame = np.asarray(Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(
            (int((x1 - x0) * scale), int((y1 - y0) * scale)), Image.BILINEAR))
        faces = aligner.detect(frame)
        assert faces, "the jittered face must still be detected"
        out.append((frame, faces[0].landmarks))
    return out


@pytest.fixture(scope="module")
def tracks(sample_dir, aligner):
    """Simulated frames of Morgan's and Hague's faces in the photo where both appear."""
    image = read_image(sample_dir / "inflight" / "Andrew_Morgan__Nick_Hague_inflight.jpg")
    faces = sorted(aligner.detect(image), key=lambda f: f.box[0])
    assert len(faces) == 2                  # Morgan on the left, Hague on the right
    return {"morgan": _frames(image, faces[0].box, aligner, 6, 0),
            "hague": _frames(image, faces[1].box, aligner, 6, 1)}


@pytest.fixture(scope="module")
def morgan_ref(sample_dir):
    return sample_dir / "portraits" / "Andrew_Morgan.jpg"


def _observe(cl: ConsentList, track_id, frames) -> list[float]:
    return [cl.observe(track_id, f, lm) for f, lm in frames]


def test_keep_mode_keeps_the_listed_person_and_deidentifies_the_other(morgan_ref, tracks, net, aligner):
    cl = ConsentList.from_photos([morgan_ref], ConsentConfig(mode="keep"), network=net, aligner=aligner)
    assert cl.people == ["Andrew_Morgan"]
    _observe(cl, 1, tracks["morgan"])
    sims = _observe(cl, 2, tracks["hague"])
    assert max(sims) < 0.363                # Hague never looks like Morgan
    morgan, hague = cl.decision(1), cl.decision(2)
    assert (morgan.action, morgan.person, morgan.votes) == ("keep", "Andrew_Morgan", 5)   # 6th call skipped (observe_every)
    assert morgan.statistic >= cl.config.keep_threshold
    assert (hague.action, hague.person) == ("deidentify", None)
    doc = json.loads(json.dumps(cl.to_json()))
    assert doc["mode"] == "keep" and doc["people"] == ["Andrew_Morgan"]
    assert {t["track"]: t["decision"] for t in doc["tracks"]} == {1: "keep", 2: "deidentify"}
    assert "embedding" not in json.dumps(doc)


def test_only_mode_deidentifies_just_the_listed_person(morgan_ref, tracks, net, aligner):
    cl = ConsentList.from_photos([morgan_ref], ConsentConfig(mode="only"), network=net, aligner=aligner)
    _observe(cl, "m", tracks["morgan"])
    _observe(cl, "h", tracks["hague"])
    assert (cl.decision("m").action, cl.decision("m").person) == ("deidentify", "Andrew_Morgan")
    assert (cl.decision("h").action, cl.decision("h").person) == ("keep", None)


@pytest.mark.parametrize("mode", ["keep", "only"])
def test_too_few_votes_is_deidentified_in_both_modes(mode, morgan_ref, tracks, net, aligner):
    cl = ConsentList.from_photos([morgan_ref], ConsentConfig(mode=mode), network=net, aligner=aligner)
    _observe(cl, 1, tracks["morgan"][:2])
    _observe(cl, 2, tracks["hague"][:2])
    for tid in (1, 2):
        d = cl.decision(tid)
        assert (d.action, d.votes) == ("deidentify", 2)
    assert cl.decision("never seen").action == "deidentify"
    assert cl.decision("never seen").votes == 0


def test_folder_of_photos_names_people_by_file_stem(sample_dir, tmp_path, tracks, net, aligner):
    for name in ("Eileen_Collins.jpg", "Nick_Hague.jpg"):
        shutil.copy(sample_dir / "portraits" / name, tmp_path / name)
    cl = ConsentList.from_photos([tmp_path], ConsentConfig(mode="keep"), network=net, aligner=aligner)
    assert cl.people == ["Eileen_Collins", "Nick_Hague"]
    collins = read_image(sample_dir / "inflight" / "Eileen_Collins_inflight.png")
    face = aligner.detect(collins)[0]
    _observe(cl, "c", _frames(collins, face.box, aligner, 5, 2))
    _observe(cl, "m", tracks["morgan"])
    _observe(cl, "h", tracks["hague"])
    assert (cl.decision("c").action, cl.decision("c").person) == ("keep", "Eileen_Collins")
    assert (cl.decision("h").action, cl.decision("h").person) == ("keep", "Nick_Hague")
    assert cl.decision("m").action == "deidentify"      # not on the list


def test_work_per_track_is_bounded(morgan_ref, tracks, net, aligner):
    cfg = ConsentConfig(mode="keep", min_votes=3, observe_every=4, max_observations=5)
    cl = ConsentList.from_photos([morgan_ref], cfg, network=net, aligner=aligner)
    frame, lm = tracks["morgan"][0]
    used = [not math.isnan(cl.observe(7, frame, lm)) for _ in range(40)]
    assert used[:3] == [True, True, True]                # every call until min_votes
    assert used[3:7] == [False, False, False, True]      # then every 4th
    assert sum(used) == 5 and cl.decision(7).votes == 5
    assert not cl.wants(7)


def test_photo_without_a_face_is_named(tmp_path, net, aligner):
    path = tmp_path / "landscape_no_face.png"
    grad = np.linspace(0, 255, 200 * 300 * 3).reshape(200, 300, 3).astype(np.uint8)
    Image.fromarray(grad).save(path)
    with pytest.raises(DeidError, match="landscape_no_face.png.*no face"):
        ConsentList.from_photos([path], network=net, aligner=aligner)


def test_missing_and_unreadable_photos_are_named(tmp_path, morgan_ref, net, aligner):
    with pytest.raises(DeidError, match="not found.*nobody.jpg"):
        ConsentList.from_photos([morgan_ref, tmp_path / "nobody.jpg"], network=net, aligner=aligner)
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    with pytest.raises(DeidError, match="broken.jpg"):
        ConsentList.from_photos([bad], network=net, aligner=aligner)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeidError, match="no images"):
        photo_files([tmp_path / "empty"])


def test_config_is_validated_and_network_checked(morgan_ref, aligner):
    with pytest.raises(DeidError, match="mode"):
        ConsentConfig(mode="blur")
    with pytest.raises(DeidError, match="min_votes"):
        ConsentConfig(min_votes=0)
    with pytest.raises(DeidError, match="keep_threshold"):
        ConsentConfig(keep_threshold=0.2, only_threshold=0.3)
    with pytest.raises(DeidError, match="max_observations"):
        ConsentConfig(min_votes=5, max_observations=3)
    cfg = ConsentConfig()
    assert cfg.keep_threshold > 0.363 > cfg.only_threshold
    dlib_like = type("Net", (), {"info": type("I", (), {"name": "dlib", "metric": "euclidean"})()})()
    with pytest.raises(DeidError, match="sface"):
        ConsentList.from_photos([morgan_ref], network=dlib_like, aligner=aligner)

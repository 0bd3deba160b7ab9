"""User-study kit (Table 2): material with the answer key apart, scoring on a toy CSV with known
answers, confusion figures, the example CSV, and the automatic observer on NASA portraits."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deid_core.errors import DeidError
from deid_core.evaluate import user_study as us


def _toy(tmp_path):
    key = pd.DataFrame([
        ("video", "v1", "real", "original"), ("video", "v2", "modified", "deid"),
        ("identify", "i1", "A", "original"), ("identify", "i2", "B", "original"),
        ("identify", "i3", "A", "deid"), ("identify", "i4", "B", "deid")], columns=us.KEY_COLUMNS)
    resp = pd.DataFrame([
        # observer 1: both videos right (100 %); observer 2: one right (50 %)
        ("o1", "video", "v1", "real"), ("o1", "video", "v2", "modified"),
        ("o2", "video", "v1", "real"), ("o2", "video", "v2", "real"),
        # originals always right; de-ID: A -> B twice, B -> B once, B -> A once
        ("o1", "identify", "i1", "A"), ("o1", "identify", "i2", "B"),
        ("o2", "identify", "i1", "A"), ("o2", "identify", "i2", "B"),
        ("o1", "identify", "i3", "B"), ("o1", "identify", "i4", "B"),
        ("o2", "identify", "i3", "B"), ("o2", "identify", "i4", "A")], columns=us.RESPONSE_COLUMNS)
    kp, rp = tmp_path / "key.csv", tmp_path / "responses.csv"
    key.to_csv(kp, index=False)
    resp.to_csv(rp, index=False)
    return rp, kp


def test_scoring_known_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path / "res"))
    rp, kp = _toy(tmp_path)
    out = us.score_study(rp, kp, name="toy")
    assert out["video"]["mean"] == pytest.approx(75.0)
    assert out["video"]["sd"] == pytest.approx(np.std([100, 50], ddof=1))
    assert out["accuracy_original"] == 1.0 and out["accuracy_deid"] == pytest.approx(0.25)
    c = out["confusion_deid"]
    assert c.loc["A", "B"] == 1.0 and c.loc["A", "A"] == 0.0 and c.loc["B", "A"] == 0.5
    assert np.allclose(out["confusion_original"].values, np.eye(2))
    assert (tmp_path / "res" / "figures" / "toy_confusion_deid.png").stat().st_size > 1000
    assert "53.6" in (tmp_path / "res" / "tables" / "toy_video.md").read_text()


def test_bad_responses(tmp_path):
    rp, kp = _toy(tmp_path)
    pd.DataFrame([("o1", "video", "v9", "real")], columns=us.RESPONSE_COLUMNS).to_csv(rp, index=False)
    with pytest.raises(DeidError, match="missing from the answer key"):
        us.score_study(rp, kp)
    pd.DataFrame([("o1", "video", "v1", "maybe")], columns=us.RESPONSE_COLUMNS).to_csv(rp, index=False)
    with pytest.raises(DeidError, match="'real' or 'modified'"):
        us.score_study(rp, kp)
    pd.DataFrame({"who": ["x"]}).to_csv(rp, index=False)
    with pytest.raises(DeidError, match="missing column"):
        us.score_study(rp, kp)


def test_example_csv_is_marked_and_scores(tmp_path, monkeypatch, sample_dir):
    from deid_core import paths
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path))
    ex = paths.REPO_ROOT / "data" / "user_study"
    first = (ex / "example_responses.csv").read_text().splitlines()[0]
    assert first.startswith("#") and "EXAMPLE" in first
    out = us.score_study(ex / "example_responses.csv", ex / "example_answer_key.csv", label="EXAMPLE")
    assert out["video"]["observers"] == 6 and 0 <= out["video"]["mean"] <= 100


def test_material_and_automatic_observer(tmp_path, portraits):
    """Sheets keep the key apart; the automatic observer (SFace) names the gallery person of
    every original probe when the probe is a mildly changed copy of the gallery image."""
    import cv2
    from deid_core.identity import load_identity_network
    names = ["p1", "p2", "p3"]
    gallery = {n: im for n, im in zip(names, portraits[:3])}
    inputs = {n: cv2.flip(im, 1) for n, im in gallery.items()}          # mirrored copy: same person
    deid = {n: cv2.GaussianBlur(im, (0, 0), 2) for n, im in inputs.items()}
    out = us.make_identification_sheet(gallery, inputs, deid, tmp_path / "study", seed=3)
    trials = pd.read_csv(out["trials"])
    assert set(trials.columns) == {"task", "trial_id", "item"} and len(trials) == 6
    assert out["key"].parent.name == "answer_key" and out["png"].stat().st_size > 1000
    assert "p1" not in (tmp_path / "study" / "identify.html").read_text()
    resp = us.automatic_observer(out["trials"], net=load_identity_network("sface"))
    key = us.read_csv(out["key"], us.KEY_COLUMNS)
    df = us.join_responses(resp, key)
    assert df[df.condition == "original"]["correct"].all()


def test_video_trials_key_apart(tmp_path):
    clips = []
    for k in range(4):
        p = tmp_path / f"c{k}.mp4"
        p.write_bytes(b"0")
        clips.append(p)
    sheet, key = us.make_video_trials(clips[:2], clips[2:], tmp_path / "vs", seed=0)
    t, k = pd.read_csv(sheet), us.read_csv(key, us.KEY_COLUMNS)
    assert "truth" not in t.columns and sorted(k.truth) == ["modified", "modified", "real", "real"]
    assert key.parent != sheet.parent
    with pytest.raises(DeidError, match="clip not found"):
        us.make_video_trials([tmp_path / "nope.mp4"], [], tmp_path / "vs")

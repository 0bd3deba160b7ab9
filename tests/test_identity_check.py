"""The pipeline's identity check: a face the network left recognisable (the rule of `deid audit`,
SFace) is pixelated, in images and for the rest of a video track; a changed face is not."""
from __future__ import annotations

import numpy as np
import pytest

from deid_core import cli
from deid_core import face as A
from deid_core import paths
from deid_core import video as V
from deid_core.audit import AuditConfig, AuditReport, FaceAuditor
from deid_core.identity.change import VisibleRule
from deid_core.pipeline import IdentityCheck, build_pipeline, deidentify_image


def near_copy_net(crops):
    """What a too-weak model does: the face back, slightly darker (SFace still matches)."""
    out = np.clip(crops.astype(np.int16) - 3, 0, 255).astype(np.uint8)
    return out, np.ones(crops.shape[:3], np.float32)


def paint_net(crops):
    """A model that changes the face completely (a flat skin-coloured oval)."""
    n, s = crops.shape[:2]
    return np.full((n, s, s, 3), (190, 140, 120), np.uint8), np.ones((n, s, s), np.float32)


def audit_passes(inp: np.ndarray, out: np.ndarray) -> bool:
    rep = AuditReport("in", "out", [])
    FaceAuditor(AuditConfig(views=(0,))).check(inp, out, None, rep)
    assert rep.faces_checked >= 1
    return rep.passed


def test_rule_known_answers_and_audit_uses_it():
    rule = VisibleRule()
    assert rule.left_visible({"pixel_change": 0.5, "sface": 0.1})        # untouched
    assert rule.left_visible({"pixel_change": 3.0, "sface": 0.9})        # re-encoded copy
    assert not rule.left_visible({"pixel_change": 3.0, "sface": 0.5})    # identity changed
    assert not rule.left_visible({"pixel_change": 20.0, "sface": 0.9})   # painted over
    assert not rule.left_visible({"pixel_change": float("nan"), "sface": float("nan")})
    cfg = AuditConfig(max_sface=0.95)
    assert isinstance(cfg, VisibleRule) and not cfg.left_visible({"pixel_change": 3.0, "sface": 0.9})


def test_recognisable_face_is_pixelated_and_passes_the_audit(portraits):
    im = portraits[0]
    al = A.FaceAligner()
    out0, info0 = al.process(im, near_copy_net)
    assert info0["recognisable"] == [] and not audit_passes(im, out0)     # no check: visible
    al.check = check = IdentityCheck()
    out, info = al.process(im, near_copy_net)
    assert info["recognisable"] == [0] and info["n_obscured"] == 0
    assert check.last["sface"] >= 0.7
    x0, y0, x1, y1 = info["faces"][0].box.astype(int)
    assert np.abs(out[y0:y1, x0:x1].astype(int) - im[y0:y1, x0:x1]).mean() > 8
    assert audit_passes(im, out)


def test_check_is_stricter_than_the_audit(portraits):
    """A face SFace still matches is flagged even when its pixels moved by more than 6 levels."""
    im = portraits[2]
    al = A.FaceAligner()
    al.check = check = IdentityCheck()

    def darker(crops):
        return np.clip(crops.astype(np.int16) - 12, 0, 255).astype(np.uint8), \
            np.ones(crops.shape[:3], np.float32)
    _, info = al.process(im, darker)
    assert check.last["pixel_change"] >= 6 and check.last["sface"] >= 0.7
    assert not AuditConfig().left_visible(check.last) and info["recognisable"] == [0]


def test_changed_face_is_left_to_the_network(portraits):
    im = portraits[1]
    al = A.FaceAligner()
    al.check = IdentityCheck()
    painted, info = al.process(im, paint_net)
    assert info["recognisable"] == []
    al.check = None
    unchecked, _ = al.process(im, paint_net)
    assert np.array_equal(painted, unchecked)


@pytest.fixture(scope="module")
def clip_frames(clip) -> list[np.ndarray]:
    return V.read_frames(clip, max_frames=24)


def test_flagged_track_stays_obscured(clip_frames):
    """Frame 0 comes back recognisable; the track stays pixelated after the net turns good."""
    calls = []

    def net(crops):
        calls.append(len(crops))
        return near_copy_net(crops) if len(calls) == 1 else paint_net(crops)

    al = A.FaceAligner()
    al.check = IdentityCheck()
    first = next(i for i, f in enumerate(clip_frames) if al.detect(f))
    proc = V.FrameProcessor(al, net, V.VideoConfig())
    infos = []
    for i, frame in enumerate(clip_frames[first:first + 4]):
        out, info = proc(frame, i / 25)
        infos.append(info)
    track = infos[0]["recognisable"]
    assert len(track) == 1 and track[0] in infos[0]["obscured"]
    for info in infos[1:]:
        assert info["recognisable"] == track and track[0] in info["obscured"]
        assert info["fallback_faces"] >= 1
    assert len(calls) == 1                  # the flagged track never reaches the network again
    s = V.summarize(infos, {}, 1.0)
    assert s["recognisable_tracks"] == track and s["fallback_faces"] >= 4


def test_check_every_skips_frames(clip_frames):
    """check_every=3: a recognisable face is caught on frame 0 and 3, not on 1 and 2."""
    al = A.FaceAligner()
    al.check = IdentityCheck()
    first = next(i for i, f in enumerate(clip_frames) if al.detect(f))
    calls = []

    def net(crops):          # good on the checked frame 0, recognisable on frames 1-3
        calls.append(len(crops))
        return paint_net(crops) if len(calls) == 1 else near_copy_net(crops)

    proc = V.FrameProcessor(al, net, V.VideoConfig(check_every=3))
    got = [proc(f, i / 25)[1]["recognisable"] for i, f in enumerate(clip_frames[first:first + 5])]
    assert got[0] == got[1] == got[2] == [] and len(got[3]) == 1 and got[4] == got[3]
    with pytest.raises(Exception, match="check_every"):
        V.VideoConfig(check_every=0)


def test_pipeline_wiring_and_cli_switch(tmp_path, portrait_paths):
    ck = paths.resolve_checkpoint(None)
    aligner, _ = build_pipeline(ck)
    assert isinstance(aligner.check, IdentityCheck)
    aligner, _ = build_pipeline(ck, check=False)
    assert aligner.check is None
    parser = cli.build_parser()
    for argv in (["image", "a.jpg", "b.jpg"], ["video", "a.mp4", "b.mp4"], ["live"]):
        assert parser.parse_args(argv).no_check is False
        assert parser.parse_args(argv + ["--no-check"]).no_check is True
    assert parser.parse_args(["live", "--check-every", "2"]).check_every == 2
    # the committed model on two held-out faces (with the warp-head model: one pixelated, one
    # not): the check pixelates exactly the faces whose network output (no check) the rule
    # calls recognisable, and only those differ from the network's output
    check = IdentityCheck()
    for path in portrait_paths[1:3]:
        raw = deidentify_image(path, tmp_path / f"raw_{path.stem}.png", None, check=False)
        out = deidentify_image(path, tmp_path / f"chk_{path.stem}.png", None)
        src, raw_img, out_img = (A.read_image(p) for p in (path, raw["output"], out["output"]))
        face = A.FaceAligner(A.AlignConfig(size=128)).detect(src)[0]
        flagged = check(src, raw_img, face)
        assert raw["n_recognisable"] == 0 and out["n_faces"] == 1
        assert out["n_recognisable"] == int(flagged), check.last
        assert np.array_equal(raw_img, out_img) == (not flagged)

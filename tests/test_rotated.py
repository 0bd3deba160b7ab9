"""Faces turned by 90° (deid_core.face.rotated): found in turned views, mapped back exactly,
merged without duplicates, the rotation policy's schedule, the audit's rotated views, and the
aligner de-identifying a turned face from the mapped landmarks."""
from __future__ import annotations

import numpy as np
import pytest

from deid_core import face as A
from deid_core.audit import AuditConfig, AuditReport, FaceAuditor
from deid_core.errors import DeidError
from deid_core.face import rotated as R

PORTRAITS = ("Nick_Hague", "Alan_Poindexter")


def constant_net(crops):
    n, s = crops.shape[:2]
    return np.full((n, s, s, 3), (255, 0, 255), np.uint8), np.ones((n, s, s), np.float32)


def turn_forward(points, k, turned_shape):
    """Frame points -> the same points in ``np.rot90(frame, k)`` (the inverse view)."""
    return R.unrotate_points(points, (360 - 90 * k) % 360, turned_shape)


@pytest.fixture(scope="module")
def aligner():
    return A.FaceAligner()


@pytest.fixture(scope="module")
def cases(sample_dir, aligner):
    """Per portrait: the upright face, and per turn k in (1, 3) the turned image (the face turned
    90° counter-clockwise / clockwise), its upright detections and its rotated views."""
    out = {}
    for name in PORTRAITS:
        im = A.read_image(sample_dir / "portraits" / f"{name}.jpg")
        up = aligner.detect(im)
        assert len(up) == 1 and up[0].reliable and up[0].view == 0
        turned = {}
        for k in (1, 3):
            t = np.ascontiguousarray(np.rot90(im, k))
            turned[k] = (t, aligner.detect(t), R.detect_views(aligner, t))
        out[name] = (im, up[0], turned)
    return out


def test_unrotate_points_and_box_are_exact():
    H, W = 5, 7
    for view in (90, 180, 270):
        a = np.zeros((H, W))
        a[1, 4] = 1
        y, x = np.argwhere(np.rot90(a, view // 90))[0]
        assert np.allclose(R.unrotate_points([[x, y]], view, a.shape), [[4, 1]]), view
        # a square box keeps its side; its centre (pixel centres) follows the points
        # box corners are pixel edges: the box of that one pixel maps onto the pixel's box
        box = np.array([x, y, x + 1, y + 1], np.float64)
        assert np.allclose(R.unrotate_box(box, view, a.shape), [4, 1, 5, 2]), view
    with pytest.raises(DeidError, match="view"):
        R.unrotate_points([[0, 0]], 45, (4, 4))


def test_turned_portrait_found_only_in_its_view(cases):
    """A portrait turned 90° either way: the upright pass gives no face with the right landmarks
    (YuNet may fire on it, but dlib's 68 points are then 0.3-0.6 of the face size off); the
    view that turns it upright finds it, its landmarks mapping back onto the face."""
    for name, (im, face, turned) in cases.items():
        side = float(face.box[2] - face.box[0])
        for k, (t, upright, views) in turned.items():
            want = turn_forward(face.landmarks, k, t.shape)
            err = lambda f: np.linalg.norm(f.landmarks - want, axis=1).mean() / side  # noqa: E731
            assert all(err(f) > 0.2 for f in upright), (name, k)
            right = [f for f in views if f.view == (360 - 90 * k) % 360]
            assert len(right) == 1 and right[0].reliable, (name, k)
            f = right[0]
            assert err(f) < 0.02, (name, k, err(f))
            assert np.linalg.norm(f.points5 - turn_forward(face.points5, k, t.shape), axis=1
                                  ).mean() < 0.02 * side
            # the box: same size as the upright face's, centred on the same face
            assert np.isclose(f.box[2] - f.box[0], side, atol=1.0)
            assert np.isclose(f.box[3] - f.box[1], side, atol=1.0)
            centre = turn_forward([(face.box[:2] + face.box[2:]) / 2 - 0.5], k, t.shape)[0] + 0.5
            assert np.abs((f.box[:2] + f.box[2:]) / 2 - centre).max() < 1.0


def test_merge_keeps_each_face_once(cases, aligner):
    for name, (im, face, turned) in cases.items():
        # upright image: the upright face stays, as detected; turned views add no duplicate
        merged = R.merge_faces([face], R.detect_views(aligner, im))
        assert len(merged) == 1 and merged[0] is face, name
        for k, (t, upright, views) in turned.items():
            merged = R.merge_faces(upright, views)
            assert len(merged) == 1, (name, k, [(f.view, f.score) for f in merged])
            assert merged[0].view == (360 - 90 * k) % 360 and merged[0].reliable
    # faces of one view are never merged with each other
    f = cases[PORTRAITS[0]][1]
    assert len(R.merge_faces([f, f], [])) == 2


def test_merge_rule_same_face():
    a = np.array([0, 0, 100, 100.0])
    assert R.same_face(a, a + 20)                               # IoU 0.47
    assert R.same_face(a, [40, 40, 240, 240])                   # IoU 0.03, centre inside
    assert not R.same_face(a, [120, 0, 220, 100])               # neighbours


class StubAligner:
    """Finds one face, only in the frame turned 90°, while ``present``."""

    def __init__(self, face: A.Face):
        self.face, self.present, self.calls = face, False, 0

    def detect(self, frame):
        self.calls += 1
        return [self.face] if self.present and frame[0, 0, 0] == 255 else []


def test_policy_schedule_and_cost(cases):
    face = cases[PORTRAITS[0]][1]
    stub = StubAligner(face)
    frame = np.zeros((60, 80, 3), np.uint8)
    frame[0, -1] = 255                                 # top right: top left once turned 90°
    pol = R.RotationPolicy(every=4, hold=2)
    ran = []
    for i in range(16):
        stub.present = 5 <= i <= 9                     # a turned face in frames 5-9
        before = stub.calls
        faces = pol.faces(stub, frame, [])
        ran.append(stub.calls > before)
        if ran[-1] and stub.present:
            assert len(faces) == 1 and faces[0].view == 90
    # every 4th frame; found at 8, then every frame while found and `hold` frames after (9-11)
    assert [i for i, r in enumerate(ran) if r] == [0, 4, 8, 9, 10, 11, 12]
    s = pol.stats()
    assert s["frames"] == 16 and s["runs"] == 7 and np.isclose(s["run_fraction"], 7 / 16)
    assert s["ms_per_frame"] <= s["ms_per_run"]
    with pytest.raises(DeidError):
        R.RotationPolicy(every=0)


def test_audit_finds_a_turned_face_left_visible(cases):
    name = PORTRAITS[0]
    t, upright, views = cases[name][2][1]
    face = R.merge_faces(upright, views)[0]
    auditor = FaceAuditor(AuditConfig())
    found = auditor.faces(t)
    assert len(found) == 1 and found[0][2] == "yunet@270"
    assert R.same_face(found[0][0], face.box)
    rep = AuditReport("in", "out", [])
    auditor.check(t, t.copy(), None, rep)                       # left as it was
    assert rep.faces_checked == 1 and not rep.passed and rep.visible[0]["detector"] == "yunet@270"
    out = t.copy()
    A.obscure(out, A.grow_box(face.box, 1.3), 12)               # pixelated
    rep = AuditReport("in", "out", [])
    auditor.check(t, out, None, rep)
    assert rep.faces_checked == 1 and rep.passed, rep.visible
    with pytest.raises(DeidError, match="views"):
        AuditConfig(views=(45,))


def test_process_deidentifies_a_turned_face(cases, aligner):
    for k, (t, upright, views) in cases[PORTRAITS[0]][2].items():
        faces = R.merge_faces(upright, views)
        out, info = aligner.process(t, constant_net, faces=faces)
        assert info["n_faces"] == 1 and info["n_obscured"] == 0
        f = faces[0]
        c = ((f.box[:2] + f.box[2:]) / 2).astype(int)
        r = int(0.2 * (f.box[2] - f.box[0]))
        centre = np.s_[c[1] - r:c[1] + r, c[0] - r:c[0] + r]
        assert np.abs(out[centre].astype(int) - t[centre]).mean() > 60, k
        # the generated face sits upright in the turned view: the magenta crop lands on the face
        assert (out[centre][..., 1] < 40).mean() > 0.9, k
        x0, y0, x1, y1 = A.grow_box(f.box, 1.6).astype(int)
        outside = np.ones(t.shape[:2], bool)
        outside[max(y0, 0):y1, max(x0, 0):x1] = False
        assert np.array_equal(out[outside], t[outside])

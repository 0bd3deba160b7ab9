"""Faces turned by 90° in the image plane: people lying down, phones held sideways without a
rotation tag. The detectors (YuNet, dlib HOG) and dlib's 68-point predictor only find upright
faces; the alignment itself (a similarity fit of the 68 points, :meth:`FaceAligner.process`)
works at any in-plane angle, so only detection needs help.

:func:`detect_views` runs :meth:`FaceAligner.detect` on ``np.rot90`` copies of the frame
(``view`` = degrees the frame was turned counter-clockwise: 90, 180, 270) and maps every face
back into the frame: landmarks and ``points5`` point by point, the box as the same square (same
side, same centre) turned with the frame, ``Face.view`` set to the view. Reliability (step b')
is judged in the rotated view, where it is valid (its measures do not depend on the angle).
:func:`merge_faces` joins upright and rotated detections without duplicates: YuNet also fires on
turned faces in the wrong view (sideways or upside down, landmarks far off), so across views the
detection of best :func:`quality` (score minus 5-point disagreement) is kept.

Cheap check (:class:`RotationPolicy`): the rotated views cost about two upright detections (two
more frames through YuNet and its 2× pass), so they are run on every ``every``-th frame while no
rotated face is being followed, and on every frame while one was found in the last ``hold``
frames. A sideways face that appears is found within ``every - 1`` frames (in video, fail-closed
tracking holds it from then on); a frame-by-frame caller pays ``1/every`` of the views' cost
on average when nobody is lying down. The policy counts frames, runs and the seconds spent
(:meth:`RotationPolicy.stats`), so its cost is measured where it runs.

Measured (``benchmarks/bench_rotated.py``, 640×480 frame with one face, YuNet default, CPU,
one thread, on a busy 2-core machine, three runs): upright detection 105-170 ms, the views
90+270 2.1-3.1× that (two more YuNet 1×+2× passes plus landmarks); with ``every=10`` and no
turned face the policy's measured cost is 0.14-0.23× the upright detection per frame (views on
4 of 40 frames); while a turned face is followed the views run on every frame (about 2.3×
extra). The faces found are identical to the upright pass's on the turned image (exact
``np.rot90``, so landmarks map back with zero error on the NASA portraits).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from deid_core.errors import DeidError
from deid_core.face.detect import Face, box_iou
from deid_core.face.template import five_points


VIEWS = (90, 180, 270)


def _turns(view: int) -> int:
    if int(view) not in VIEWS:
        raise DeidError(f"rotated view must be one of {VIEWS} degrees, got {view!r}")
    return int(view) // 90


def unrotate_points(points: np.ndarray, view: int, shape: Sequence[int]) -> np.ndarray:
    """Points (N×2, pixel centres) of ``np.rot90(frame, view // 90)`` in the frame's pixels;
    ``shape`` is the frame's ``(H, W, ...)``."""
    H, W = int(shape[0]), int(shape[1])
    p = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = p[:, 0] + 0.5, p[:, 1] + 0.5          # pixel edges: the turn is exact on them
    k = _turns(view)
    if k == 1:
        x, y = W - y, x
    elif k == 2:
        x, y = W - x, H - y
    else:
        x, y = y, H - x
    return np.stack([x - 0.5, y - 0.5], axis=1)


def unrotate_box(box: Sequence[float], view: int, shape: Sequence[int]) -> np.ndarray:
    """Box ``x0, y0, x1, y1`` of the rotated view in frame pixels (width and height swap for 90°
    and 270°; a square keeps its side and its centre follows the face)."""
    b = np.asarray(box, np.float64).reshape(2, 2)        # corners are pixel edges, not centres
    corners = unrotate_points(b - 0.5, view, shape) + 0.5
    return np.r_[corners.min(0), corners.max(0)]


def rotate_frame(frame: np.ndarray, view: int) -> np.ndarray:
    """The frame turned ``view`` degrees counter-clockwise (``np.rot90``), contiguous."""
    return np.ascontiguousarray(np.rot90(frame, _turns(view)))


def unrotate_face(face: Face, view: int, shape: Sequence[int]) -> Face:
    """A face detected in ``rotate_frame(frame, view)`` in the frame's coordinates."""
    pts = None if face.points5 is None else unrotate_points(face.points5, view, shape)
    return replace(face, box=unrotate_box(face.box, view, shape),
                   landmarks=unrotate_points(face.landmarks, view, shape), points5=pts,
                   view=int(view))


def detect_views(aligner: Any, rgb: np.ndarray, angles: Sequence[int] = (90, 270)) -> list[Face]:
    """Faces found by ``aligner.detect`` in the frame turned by each of ``angles`` (degrees,
    counter-clockwise), in the frame's coordinates with ``Face.view`` set. Upright faces are
    not included (merge with :func:`merge_faces`); the same face may come from two views."""
    out: list[Face] = []
    for view in angles:
        turned = rotate_frame(np.asarray(rgb), view)
        out += [unrotate_face(f, view, rgb.shape) for f in aligner.detect(turned)]
    return out


def same_face(a: np.ndarray, b: np.ndarray, max_iou: float = 0.3) -> bool:
    """Boxes of one face seen in two views: IoU ≥ ``max_iou`` or either box's centre inside the
    other (a face detected in a wrong view gets a shifted box: IoU 0.3-0.8 with the right one)."""
    a, b = np.asarray(a, np.float64).reshape(4), np.asarray(b, np.float64).reshape(4)
    if box_iou(a, b)[0, 0] >= max_iou:
        return True
    ca, cb = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    return bool(np.all((b[:2] <= ca) & (ca <= b[2:])) or np.all((a[:2] <= cb) & (cb <= a[2:])))


def quality(face: Face) -> float:
    """Ranking of one face's detections across views: detector score minus the disagreement of
    its 5 points with the 68 landmarks (fraction of the box side). NASA portraits turned by 0/90/
    270°: the right view 0.92-0.96 score and ≤ 0.03 disagreement, wrong views (YuNet also fires
    on sideways and upside-down faces, with landmarks 0.3-0.85 of the face size off, a third of
    them passing the reliability check) score 0.60-0.91 with ≥ 0.05 disagreement."""
    q = float(face.score)
    if face.points5 is not None:
        side = max(float(face.box[2] - face.box[0]), 1e-6)
        q -= float(np.linalg.norm(five_points(face.landmarks) - face.points5, axis=1).mean()) / side
    return q


def merge_faces(upright: Sequence[Face], rotated: Sequence[Face], max_iou: float = 0.3
                ) -> list[Face]:
    """Upright and rotated detections without duplicates, largest first.

    Greedy, best :func:`quality` first (not reliability: a wrong view's landmarks may pass the
    check while the right view's are flagged, and then obscuring is the safe choice); a face is
    dropped when it is
    :func:`same_face` as a taken face *of another view* (faces of one view were already
    separated by the detector's NMS and are never merged, so the upright result is kept as it
    is where no view found anything). A turned face that YuNet also finds upright, with wrong
    landmarks, is thus replaced by its detection in the right view.
    """
    cands = sorted(list(upright) + list(rotated), key=lambda f: -quality(f))
    kept: list[Face] = []
    for f in cands:
        if any(k.view != f.view and same_face(f.box, k.box, max_iou) for k in kept):
            continue
        kept.append(f)
    kept.sort(key=lambda f: -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    return kept


@dataclass
class RotationPolicy:
    """Per-frame decision whether the rotated views are worth running (module doc).

    Use :meth:`faces` per frame (decides, runs, merges, counts), or :meth:`due` then
    :meth:`record` around your own call. ``every``: run on every n-th frame (frame 0, n, 2n...)
    while no rotated face is followed; ``hold``: run on every frame for this many frames after
    one was found. :meth:`stats` reports the measured cost.
    """
    every: int = 10
    hold: int = 5
    angles: tuple[int, ...] = (90, 270)
    max_iou: float = 0.3
    frames: int = 0                  # frames seen (the next frame's index)
    runs: int = 0                    # frames on which the views ran
    seconds: float = 0.0             # time spent in the views
    last_found: int | None = None    # last frame on which a rotated face was kept

    def __post_init__(self) -> None:
        if self.every < 1 or self.hold < 0:
            raise DeidError("RotationPolicy: every must be >= 1 and hold >= 0")
        for a in self.angles:
            _turns(a)

    @property
    def following(self) -> bool:
        """A rotated face was kept within the last ``hold`` frames."""
        return self.last_found is not None and self.frames - self.last_found <= self.hold

    def due(self) -> bool:
        """Run the rotated views on the current frame?"""
        return self.following or self.frames % self.every == 0

    def record(self, ran: bool, found: bool = False, seconds: float = 0.0) -> None:
        """Close the current frame: whether the views ran, kept a rotated face, and their time."""
        if ran:
            self.runs += 1
            self.seconds += float(seconds)
            if found:
                self.last_found = self.frames
        self.frames += 1

    def faces(self, aligner: Any, rgb: np.ndarray, upright: Sequence[Face]) -> list[Face]:
        """This frame's faces: ``upright`` (from ``aligner.detect``) merged with the rotated
        views' faces when :meth:`due`; otherwise ``upright`` unchanged."""
        if not self.due():
            self.record(False)
            return list(upright)
        t0 = time.perf_counter()
        merged = merge_faces(upright, detect_views(aligner, rgb, self.angles), self.max_iou)
        self.record(True, any(f.view for f in merged), time.perf_counter() - t0)
        return merged

    def stats(self) -> dict:
        """Frames, runs, run fraction and cost: ``ms_per_run`` and ``ms_per_frame`` (average
        over all frames, the number to compare with the upright detection's time)."""
        return {"frames": self.frames, "runs": self.runs,
                "run_fraction": self.runs / max(self.frames, 1),
                "ms_per_run": 1000 * self.seconds / max(self.runs, 1),
                "ms_per_frame": 1000 * self.seconds / max(self.frames, 1)}

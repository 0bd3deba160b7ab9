"""Track replay for video files: a face covered in the frames where the detector missed it.

A file, unlike a live stream, can be read twice, so a face does not have to wait for its first
detection to be covered (beyond the paper, which works strictly per frame, §4). From the frame
where a track is born the face is followed *backwards* in time, and from the last frame where it
was seen *forwards*, over at most ``VideoConfig.replay_seconds``:

1. **Optical flow**: pyramidal Lucas-Kanade on the 68 landmarks and a 5×5 grid inside the face
   box, kept where the forward-backward error is below ``fb_error`` px, then one similarity
   transform (RANSAC) moves the face's landmarks and box to the next frame -- accepted only when
   the face's inner region correlates (NCC ≥ 0.6) with the same region in the next frame, so a
   face that simply appears (the sample clip's cut from an empty room) is not extended.
2. **Motion model** where the flow fails (the face is leaving the frame, blurred or occluded)
   after it had moved under flow: the last flow velocity, until the box leaves the frame or
   the horizon ends.
3. In each replayed frame the 68 landmarks are re-fitted inside the moved box; when the fit is
   plausible and agrees with the moved landmarks, the face is **de-identified** there like a
   detected one, otherwise (a face half out of the frame, in profile, a motion-model guess) it is
   **obscured** (pixelated).

Replay stops at a scene cut and where another track already covers the place.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import cv2
import numpy as np

from deid_core.face.detect import Face
from deid_core.face.template import shape_error

LK_PARAMS = dict(winSize=(21, 21), maxLevel=3,
                 criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))


def gray(frame: np.ndarray) -> np.ndarray:
    """uint8 grayscale of an RGB frame (flow and landmark re-fits work on it)."""
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _grid(box: np.ndarray, n: int = 5) -> np.ndarray:
    x0, y0, x1, y1 = box
    u = (np.arange(n) + 0.5) / n
    gx, gy = np.meshgrid(x0 + u * (x1 - x0), y0 + u * (y1 - y0))
    return np.stack([gx.ravel(), gy.ravel()], 1)


def _roi(box: np.ndarray, shape: tuple[int, ...], grow: float = 2.0) -> tuple[int, int, int, int]:
    """The face box grown ``grow``× around its centre, clipped to the frame (flow works there)."""
    H, W = shape[:2]
    b = np.asarray(box, np.float64)
    c, h = (b[:2] + b[2:]) / 2, (b[2:] - b[:2]) * grow / 2 + 16
    x0, y0 = int(max(c[0] - h[0], 0)), int(max(c[1] - h[1], 0))
    x1, y1 = int(min(c[0] + h[0], W)), int(min(c[1] + h[1], H))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def flow_transform(src: np.ndarray, dst: np.ndarray, face: Face, fb_error: float = 1.5,
                   min_points: int = 8, min_similarity: float = 0.6) -> np.ndarray | None:
    """2×3 similarity moving ``face`` from gray frame ``src`` to ``dst``, or None when fewer
    than ``min_points`` points survive the forward-backward check inside the frame or the
    face's inner region does not match across the move (:func:`patch_similarity`). The flow
    runs on the region around the face only (twice the box), so its cost does not grow with
    the frame size."""
    x0, y0, x1, y1 = _roi(face.box, src.shape)
    a, b = src[y0:y1, x0:x1], dst[y0:y1, x0:x1]
    H, W = a.shape[:2]
    off = np.array([x0, y0], np.float32)
    pts = np.concatenate([np.asarray(face.landmarks, np.float32),
                          _grid(np.asarray(face.box, np.float64))]).astype(np.float32) - off
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < W - 1) & (pts[:, 1] >= 0) & (pts[:, 1] < H - 1)
    pts = pts[inside]
    if len(pts) < min_points:
        return None
    p0 = pts.reshape(-1, 1, 2)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **LK_PARAMS)
    if p1 is None:
        return None
    pb, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **LK_PARAMS)
    fb = np.linalg.norm((pb - p0).reshape(-1, 2), axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < fb_error)
    q1 = p1.reshape(-1, 2)
    ok &= (q1[:, 0] >= 0) & (q1[:, 0] < W - 1) & (q1[:, 1] >= 0) & (q1[:, 1] < H - 1)
    if ok.sum() < min_points:
        return None
    M, inl = cv2.estimateAffinePartial2D(pts[ok] + off, q1[ok] + off, method=cv2.RANSAC,
                                         ransacReprojThreshold=2.0)
    if M is None or inl is None or inl.sum() < min_points:
        return None
    if patch_similarity(src, dst, face, M) < min_similarity:
        return None          # the points moved, but the face is not there (appeared, occluded)
    return M


def patch_similarity(src: np.ndarray, dst: np.ndarray, face: Face, M: np.ndarray) -> float:
    """Normalised cross-correlation between the face's inner region in ``src`` and the same
    region in ``dst`` brought back by ``M``, over the pixels inside both frames."""
    H, W = src.shape[:2]
    lm = np.asarray(face.landmarks, np.float64)
    lo, hi = lm.min(0), lm.max(0)
    c, r = (lo + hi) / 2, (hi - lo) * 0.4
    x0, y0 = int(max(c[0] - r[0], 0)), int(max(c[1] - r[1], 0))
    x1, y1 = int(min(c[0] + r[0], W)), int(min(c[1] + r[1], H))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    T = np.array(M, np.float64)                    # window pixel (u, v) → dst at M·(u+x0, v+y0)
    T[:, 2] = T[:, 2] + T[:, :2] @ np.array([x0, y0], np.float64)
    size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    back = cv2.warpAffine(dst, T, size, flags=flags, borderValue=0)
    v, u = np.mgrid[0:size[1], 0:size[0]]
    mx, my = T[0, 0] * u + T[0, 1] * v + T[0, 2], T[1, 0] * u + T[1, 1] * v + T[1, 2]
    valid = (mx >= 0) & (mx <= W - 1) & (my >= 0) & (my <= H - 1)   # dst pixels inside the frame
    if valid.sum() < 16:
        return 0.0
    a = src[y0:y1, x0:x1].astype(np.float64)[valid]
    b = back.astype(np.float64)[valid]
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-6 else 0.0


def move_face(face: Face, M: np.ndarray) -> Face:
    """``face`` with landmarks, 5 points and box moved by the 2×3 transform ``M``."""
    def tf(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, np.float64)
        return (p @ M[:, :2].T + M[:, 2]).astype(np.float32)
    b = np.asarray(face.box, np.float64)
    c = tf(((b[:2] + b[2:]) / 2)[None])[0]
    s = (b[2] - b[0]) * float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    box = np.array([c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2], np.float32)
    return dataclasses.replace(face, box=box, landmarks=tf(face.landmarks), score=0.0,
                               points5=None if face.points5 is None else tf(face.points5))


def shift(face: Face, v: np.ndarray) -> Face:
    """``face`` translated by ``v`` (px): the motion model."""
    M = np.array([[1, 0, v[0]], [0, 1, v[1]]], np.float64)
    return move_face(face, M)


def in_frame(box: np.ndarray, shape: tuple[int, ...], min_fraction: float = 0.0) -> bool:
    """Whether more than ``min_fraction`` of ``box``'s area lies inside a frame of ``shape``."""
    H, W = shape[:2]
    b = np.asarray(box, np.float64)
    iw = max(0.0, min(b[2], W) - max(b[0], 0.0))
    ih = max(0.0, min(b[3], H) - max(b[1], 0.0))
    area = max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)
    return iw * ih / area > min_fraction


def fit_replayed(aligner: Any, frame_gray: np.ndarray, moved: Face, max_shape_error: float | None,
                 agree: float = 0.1) -> Face:
    """Re-fit the 68 landmarks inside a replayed face's box: reliable (de-identified) when the
    box lies inside the frame, the fit is plausible and within ``agree`` × box side of the moved
    landmarks; otherwise the moved face, unreliable (obscured)."""
    b = np.asarray(moved.box, np.float64)
    side = max(b[2] - b[0], 1.0)
    H, W = frame_gray.shape[:2]
    unreliable = dataclasses.replace(moved, reliable=False,
                                     reason="replayed: landmarks could not be fitted")
    if b[0] < 0 or b[1] < 0 or b[2] > W or b[3] > H:
        return unreliable
    x0, y0, x1, y1 = _roi(b, frame_gray.shape, grow=1.5)     # the predictor sees the face only
    off = np.array([x0, y0, x0, y0], np.float64)
    lm = np.asarray(aligner.landmarks(frame_gray[y0:y1, x0:x1], b - off), np.float32) + [x0, y0]
    if max_shape_error is not None and shape_error(lm) > max_shape_error:
        return unreliable
    if np.linalg.norm(lm - moved.landmarks, axis=1).mean() > agree * side:
        return unreliable
    return dataclasses.replace(moved, landmarks=lm, reliable=True, reason="")


class Replayer:
    """Follows faces through the frames around their detections (module doc).

    Keeps the last ``horizon`` gray frames (bounded memory: one byte per pixel each) for the
    backward replay of a track born in the newest frame."""

    def __init__(self, aligner: Any, horizon: int, fb_error: float = 1.5, min_points: int = 8):
        self.aligner, self.horizon = aligner, int(horizon)
        self.fb_error, self.min_points = fb_error, min_points
        self.frames: deque[tuple[int, np.ndarray, bool]] = deque(maxlen=self.horizon + 1)
        cfg = getattr(aligner, "config", None)
        self.max_shape_error = getattr(cfg, "max_shape_error", None)

    def push(self, index: int, frame_gray: np.ndarray, cut: bool) -> None:
        """Add the newest frame (``cut``: a scene cut starts at it)."""
        self.frames.append((index, frame_gray, cut))

    def step(self, face: Face, src: np.ndarray, dst: np.ndarray,
             velocity: np.ndarray | None) -> tuple[Face, np.ndarray | None, bool]:
        """Move ``face`` from ``src`` to ``dst``: (moved face, flow velocity or None, by flow)."""
        M = flow_transform(src, dst, face, self.fb_error, self.min_points)
        if M is not None:
            moved = move_face(face, M)
            v = (np.asarray(moved.box[:2], np.float64) - np.asarray(face.box[:2], np.float64))
            return moved, v, True
        return shift(face, velocity if velocity is not None else np.zeros(2)), velocity, False

    def _continue(self, by_flow: bool, velocity: np.ndarray | None) -> bool:
        """Motion model only for a face that was moving under flow before (one that simply
        appears -- a cut the detector missed, a pop-in -- is not extended)."""
        return by_flow or (velocity is not None and float(np.linalg.norm(velocity)) > 0.5)

    def backward(self, face: Face) -> list[tuple[int, Face]]:
        """(frame index, face) for the frames before the newest one, newest first, until the
        horizon, a scene cut, or the face leaving the frame."""
        out: list[tuple[int, Face]] = []
        frames = list(self.frames)
        if len(frames) < 2 or frames[-1][2]:
            return out
        cur, velocity = face, None
        for k in range(len(frames) - 2, -1, -1):
            idx, g, _ = frames[k]
            moved, velocity, by_flow = self.step(cur, frames[k + 1][1], g, velocity)
            if not self._continue(by_flow, velocity) or not in_frame(moved.box, g.shape):
                break
            fitted = fit_replayed(self.aligner, g, moved, self.max_shape_error) if by_flow else \
                dataclasses.replace(moved, reliable=False, reason="replayed: motion model")
            out.append((idx, fitted))
            cur = fitted
            if frames[k][2]:          # this frame starts a scene: nothing before it
                break
        return out

    def forward(self, face: Face, velocity: np.ndarray | None) -> tuple[Face, np.ndarray | None] | None:
        """Move a face seen in the previous frame into the newest one (None: left the frame)."""
        if len(self.frames) < 2 or self.frames[-1][2]:
            return None
        src, dst = self.frames[-2][1], self.frames[-1][1]
        moved, velocity, by_flow = self.step(face, src, dst, velocity)
        if not self._continue(by_flow, velocity) or not in_frame(moved.box, dst.shape):
            return None
        fitted = fit_replayed(self.aligner, dst, moved, self.max_shape_error) if by_flow else \
            dataclasses.replace(moved, reliable=False, reason="replayed: motion model")
        return fitted, velocity

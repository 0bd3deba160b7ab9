"""Video and live de-identification around the per-frame pipeline (paper §3, test time).

The paper applies its test-time steps (a)–(h) "strictly per frame" (§4). This module runs
them on video files and live streams and adds what a usable tool needs (beyond the paper):

- **I/O** (:func:`deidentify_video`): PyAV decode in a reader thread and H.264 encode in a
  writer thread, both behind bounded queues; same resolution, same frame count, and the
  input's own frame timestamps (so the same frame rate, also for 29.97 fps or VFR input);
  the audio stream is **remuxed packet by packet** (no re-encode) when mp4 accepts its
  codec (:data:`MP4_AUDIO_COPY`), otherwise re-encoded to AAC; output written to a temp file
  in the output's folder and ``os.replace``d; a JSON summary sidecar ``OUT.json``.
  Phone videos (pixels stored sideways plus a display-rotation matrix) are decoded upright
  (:func:`upright`) and written upright without a rotation matrix, so the output displays
  as the input does (its stored width and height are the input's display ones).
- **Tracking** (:class:`FrameProcessor`): per-face tracks matched by box IoU and landmark
  distance (Hungarian assignment); detection every ``detect_every`` frames, in between the
  68 landmarks are re-fitted (dlib shape predictor) on a box predicted from the track; each
  track keeps one target embedding for its whole life.
- **Stabilisation**: a One-Euro filter (Casiry et al., CHI 2012) on each track's landmarks
  before the similarity transform and the hull (``stabilize=False`` turns it off).
- **Fail-closed privacy mode** (default; ``fail_closed=False`` is the paper's plain per-frame
  behaviour): a track the detector loses stays obscured (pixelated) at its predicted box --
  its last box moved by its velocity and grown with the frames since it was last seen --
  until it is detected again or the box leaves the frame; there is no frame-count expiry (a
  scene cut -- thumbnails of consecutive frames differing by more than ``scene_cut`` grey
  levels on average; 26-37 at the cuts of the sample and Hamilton clips, at most 16 elsewhere --
  ends lost tracks, since the place a face was lost no longer exists).
  Faces whose landmarks are unreliable or that are too small to align are obscured by the
  aligner (:meth:`deid_core.align.FaceAligner.process`). Every frame/face handled by the
  fallback is counted in the summary (``fallback_frames``, ``fallback_faces``).
- **Live** (:func:`run_live`): OpenCV capture (camera index, stream URL or a file with
  ``realtime=True`` pacing it at its own fps), a one-slot queue that drops the oldest frame
  when the pipeline is slower than the source, an fps overlay, optional side-by-side
  preview window and optional mp4 output.
- **Flicker metric** (:func:`flicker`, :func:`flicker_ratio`, :func:`measure_flicker`):
  mean absolute difference of consecutive frames inside the face hull, output vs input.

Frames are uint8 RGB H×W×3 everywhere (BGR only at the OpenCV edge).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import cv2
import numpy as np

from deid_core import paths
from deid_core.align import Face, obscure, shape_error
from deid_core.errors import DeidError

NetFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: audio codecs the mp4 muxer takes as they are (remuxed, bit-exact); others → AAC.
MP4_AUDIO_COPY = ("aac", "mp3", "ac3", "eac3", "alac", "opus", "flac")
#: largest frame accepted (4K DCI and UHD fit); bigger frames → DeidError.
MAX_FRAME_SIDE = 4096
MAX_FRAME_PIXELS = 4096 * 2304


# ----------------------------------------------------------------------------------------
# Configuration.

@dataclass
class VideoConfig:
    """Settings of the video/live pipeline (tracking, smoothing, fail-closed, I/O)."""
    detect_every: int = 1          # run the detector every k frames; landmarks re-fitted between
    stabilize: bool = True         # One-Euro smoothing of each track's landmarks
    min_cutoff: float = 1.0        # One-Euro: minimum cutoff frequency (Hz)
    beta: float = 1.5              # One-Euro: speed coefficient (speed in face sizes / s)
    d_cutoff: float = 1.0          # One-Euro: cutoff for the speed estimate (Hz)
    iou_threshold: float = 0.3     # box IoU to match a detection to a track
    track_ttl: int = 12            # fail-open only: frames a missed track is kept for matching
    fail_closed: bool = True       # keep lost faces obscured until re-detected or off-frame
    pixel_block: int = 12          # fail-closed pixelation: blocks across the face box
    fail_closed_expand: float = 1.6  # fail-closed region: box side × this, around the centre
    lost_growth: float = 0.05      # lost face: region grows by this × side per missed frame
    lost_max_expand: float = 3.0   # ... up to this × the face box side
    lost_motion_frames: int = 15   # lost face: follow its last velocity for at most this many frames
    scene_cut: float = 20.0        # mean |Δ| of 32×18 gray thumbnails that ends lost tracks (0: never)
    min_face: int = 24             # faces with a box side below this are not aligned (obscured)
    queue_size: int = 8            # decode/encode queue length (frames), bounded
    crf: int = 18                  # libx264 quality
    preset: str = "veryfast"       # libx264 speed preset
    max_frames: int | None = None  # stop after this many frames (tests, benchmarks)
    progress: bool = True          # tqdm progress bar with fps

    def __post_init__(self) -> None:
        if not (isinstance(self.detect_every, (int, np.integer)) and self.detect_every >= 1):
            raise DeidError(f"detect_every must be an integer >= 1, got {self.detect_every!r}")
        if not 0.0 < self.iou_threshold < 1.0:
            raise DeidError(f"iou_threshold must be in (0, 1), got {self.iou_threshold!r}")
        if self.track_ttl < 0 or self.queue_size < 1 or self.pixel_block < 2:
            raise DeidError("track_ttl must be >= 0, queue_size >= 1, pixel_block >= 2")
        if self.max_frames is not None and self.max_frames < 1:
            raise DeidError(f"max_frames must be >= 1, got {self.max_frames!r}")


# ----------------------------------------------------------------------------------------
# One-Euro filter (Casiez, Roussel, Vogel: "1€ filter", CHI 2012).

class OneEuroFilter:
    """Adaptive low-pass filter for arrays: little lag when moving, little jitter at rest.

    ``scale`` normalises the speed (here: the face size in pixels), so ``beta`` is in
    face sizes per second and the filter behaves the same for small and large faces.
    The cutoff is computed per point from that point's speed (norm over the last axis).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 1.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self.x = self.dx = self.t = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self.t
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True) / max(scale, 1e-6)
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = a * x + (1 - a) * self.x
        self.t = t
        return self.x.copy()


# ----------------------------------------------------------------------------------------
# Tracking.

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes ``a`` (N×4) and ``b`` (M×4), x0, y0, x1, y1."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _lm_box(landmarks: np.ndarray) -> np.ndarray:
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    return np.array([lo[0], lo[1], hi[0], hi[1]], np.float64)


def _square_box(box: np.ndarray) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    s = max(box[2] - box[0], box[3] - box[1])
    return np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], np.float32)


@dataclass
class Track:
    """One face followed through the video; it keeps one target for its whole life."""
    id: int
    face: Any                       # latest raw Face (detected, or landmarks re-fitted)
    box_rel: np.ndarray             # detector box in units of the landmark box (x0, y0, x1, y1)
    last_seen: int                  # frame index of the last detection / re-fit
    first_frame: int
    target: Any = None              # target embedding (or None for a fixed net)
    filter: OneEuroFilter | None = None
    smoothed: Any = None            # latest smoothed Face
    missed: bool = False            # the detector did not find it in the last detection frame
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))  # box centre px/frame

    def lost_box(self, index: int, cfg: "VideoConfig") -> np.ndarray:
        """Where a lost face may be now: its last box moved by its velocity (at most
        ``lost_motion_frames``) and grown with the frames since it was last seen."""
        k = max(index - self.last_seen, 0)
        b = np.asarray(self.face.box, np.float64)
        shift = self.velocity * min(k, cfg.lost_motion_frames)
        grow = min(cfg.fail_closed_expand * (1.0 + cfg.lost_growth * k), cfg.lost_max_expand)
        return _expand(b + np.r_[shift, shift], grow)

    def predicted_box(self) -> np.ndarray:
        """Detector-like box for re-fitting landmarks, from the latest landmarks."""
        lb = _lm_box(self.face.landmarks)
        w, h = lb[2] - lb[0], lb[3] - lb[1]
        r = self.box_rel
        return np.array([lb[0] + r[0] * w, lb[1] + r[1] * h, lb[0] + r[2] * w, lb[1] + r[3] * h])


def _box_rel(box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    lb = _lm_box(landmarks)
    w, h = max(lb[2] - lb[0], 1e-3), max(lb[3] - lb[1], 1e-3)
    return np.array([(box[0] - lb[0]) / w, (box[1] - lb[1]) / h,
                     (box[2] - lb[0]) / w, (box[3] - lb[1]) / h])


class NetProvider(Protocol):
    """What :class:`FrameProcessor` needs from a de-identification model."""

    def target_for(self, frame: np.ndarray, face: Any) -> Any: ...   # once per new track
    def net_for(self, target: Any) -> NetFn: ...                    # callable for FaceAligner.process


class FixedNet:
    """A :class:`NetProvider` with one network for every face (pass-through, tests, benchmarks)."""

    def __init__(self, net: NetFn):
        self.net = net

    def target_for(self, frame: np.ndarray, face: Any) -> Any:
        return None

    def net_for(self, target: Any) -> NetFn:
        return self.net


class DeidentifierNet:
    """Wraps ``inference.Deidentifier``: one target embedding for all tracks (``--target``),
    or, without one, each track's first appearance as its target, embedded once and kept for
    the whole track (§3: "a target image, which is any image of the person in the video").
    """

    def __init__(self, deid: Any, lam: float | None = None, target_embedding: Any = None):
        self.deid, self.lam, self.target = deid, lam, target_embedding
        self._nets: dict[int, tuple[Any, NetFn]] = {}

    def target_for(self, frame: np.ndarray, face: Any) -> Any:
        if self.target is not None:
            return self.target
        al = self.deid.aligner          # the model's own crop (size, margin, template)
        crop = al.warp(frame, al.transform(face.landmarks))
        return self.deid.embed_crops(crop[None])[0]

    def net_for(self, target: Any) -> NetFn:
        key = id(target)
        if key not in self._nets:
            self._nets[key] = (target, self.deid.net_fn(target, self.lam))
        return self._nets[key][1]


def pixelate(frame: np.ndarray, box: Sequence[float], blocks: int = 12) -> None:
    """Pixelate ``frame[box]`` in place into about ``blocks``×``blocks`` cells (fail-closed;
    :func:`deid_core.align.obscure`)."""
    obscure(frame, box, blocks)


def _expand(box: np.ndarray, f: float) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * f / 2, (box[3] - box[1]) * f / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


class FrameProcessor:
    """Per-frame de-identification with tracks, smoothing and fail-closed regions.

    ``aligner`` is a :class:`deid_core.align.FaceAligner` (``detect``, ``landmarks``,
    ``process``); ``net`` a :data:`NetFn` or a :class:`NetProvider`. Call it once per frame,
    in order: ``out, info = proc(frame_rgb, t_seconds)``.
    """

    def __init__(self, aligner: Any, net: NetFn | NetProvider, config: VideoConfig | None = None):
        self.aligner = aligner
        self.provider: NetProvider = net if hasattr(net, "net_for") else FixedNet(net)  # type: ignore[arg-type]
        self.cfg = config or VideoConfig()
        self.tracks: list[Track] = []
        self.index = 0
        self._next_id = 0
        self._thumb: np.ndarray | None = None      # previous frame's thumbnail (scene cuts)
        import scipy.optimize  # noqa: F401  (imported here, not inside the timed tracking)
        self.times: dict[str, float] = {k: 0.0 for k in
                                        ("detect", "refit", "track", "warp", "net", "paste", "fail_closed")}

    def warm_up(self, shape: tuple[int, ...]) -> None:
        """Load the detector, landmark and network weights and run each once on a blank frame,
        so that a live source does not start by dropping the frames of that start-up time."""
        blank = np.zeros((max(int(shape[0]), 32), max(int(shape[1]), 32), 3), np.uint8)
        self.aligner.detect(blank)
        if hasattr(self.aligner, "predictor"):
            self.aligner.predictor
        size = int(getattr(self.aligner, "size", 128))
        self.provider.net_for(None)(np.zeros((1, size, size, 3), np.uint8))

    # -- tracking ------------------------------------------------------------------------
    def _new_track(self, frame: np.ndarray, face: Any) -> Track:
        tr = Track(id=self._next_id, face=face, box_rel=_box_rel(face.box, face.landmarks),
                   last_seen=self.index, first_frame=self.index,
                   filter=OneEuroFilter(self.cfg.min_cutoff, self.cfg.beta, self.cfg.d_cutoff))
        self._next_id += 1
        if self._face_side(face) >= self.cfg.min_face and getattr(face, "reliable", True):
            tr.target = self.provider.target_for(frame, face)
        return tr

    @staticmethod
    def _face_side(face: Any) -> float:
        b = np.asarray(face.box, np.float64)
        return float(min(b[2] - b[0], b[3] - b[1]))

    def _track_box(self, tr: Track) -> np.ndarray:
        """The box a detection is matched against: predicted from the landmarks for a live
        track, moved by the velocity (not grown) for a lost one."""
        if not tr.missed:
            return tr.predicted_box()
        k = min(self.index - tr.last_seen, self.cfg.lost_motion_frames)
        shift = tr.velocity * k
        return tr.predicted_box() + np.r_[shift, shift]

    def _match(self, dets: list[Any]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Hungarian assignment on (1 − IoU) + normalised landmark distance; a lost track also
        matches a detection whose centre lies inside its grown (uncertain) region."""
        from scipy.optimize import linear_sum_assignment
        if not self.tracks or not dets:
            return [], list(range(len(self.tracks))), list(range(len(dets)))
        tb = np.stack([self._track_box(t) for t in self.tracks])
        db = np.stack([np.asarray(d.box, np.float64) for d in dets])
        iou = box_iou(tb, db)
        side = np.maximum(tb[:, 2] - tb[:, 0], 1.0)[:, None]
        lmd = np.array([[np.linalg.norm(t.face.landmarks - d.landmarks, axis=1).mean()
                         for d in dets] for t in self.tracks]) / side
        centres = (db[:, :2] + db[:, 2:]) / 2
        inside = np.zeros_like(iou, bool)
        for i, t in enumerate(self.tracks):
            if t.missed:
                g = t.lost_box(self.index, self.cfg)
                dside = db[:, 2] - db[:, 0]
                tside = float(np.asarray(t.face.box)[2] - np.asarray(t.face.box)[0])
                inside[i] = ((centres[:, 0] >= g[0]) & (centres[:, 0] <= g[2])
                             & (centres[:, 1] >= g[1]) & (centres[:, 1] <= g[3])
                             & (dside > 0.5 * tside) & (dside < 2.0 * tside))
        cost = (1 - iou) + np.minimum(lmd, 1.0) - 0.5 * inside
        rows, cols = linear_sum_assignment(cost)
        pairs = [(r, c) for r, c in zip(rows, cols)
                 if iou[r, c] >= self.cfg.iou_threshold or lmd[r, c] < 0.15 or inside[r, c]]
        mt, md = {r for r, _ in pairs}, {c for _, c in pairs}
        return (pairs, [i for i in range(len(self.tracks)) if i not in mt],
                [j for j in range(len(dets)) if j not in md])

    def _refit(self, frame: np.ndarray, tr: Track) -> None:
        box = tr.predicted_box()
        lm = self.aligner.landmarks(frame, box)
        # one more pass with the box re-centred on the new landmarks (follows fast motion)
        tmp = Face(box=_square_box(box), landmarks=lm)
        box2 = Track(id=-1, face=tmp, box_rel=tr.box_rel, last_seen=0, first_frame=0).predicted_box()
        lm = np.asarray(self.aligner.landmarks(frame, box2), np.float32)
        limit = getattr(getattr(self.aligner, "config", None), "max_shape_error", None)
        err = shape_error(lm) if limit is not None else 0.0
        ok = limit is None or err <= limit          # re-fitted points checked like detected ones
        self._set_face(tr, Face(box=_square_box(box2), landmarks=lm, score=0.0, reliable=ok,
                                reason="" if ok else f"implausible landmark shape ({err:.3f})"))

    def _set_face(self, tr: Track, face: Any) -> None:
        """A new observation of ``tr``: update its face, velocity and last-seen frame."""
        old = np.asarray(tr.face.box, np.float64)
        new = np.asarray(face.box, np.float64)
        k = max(self.index - tr.last_seen, 1)
        v = ((new[:2] + new[2:]) - (old[:2] + old[2:])) / 2 / k
        tr.velocity = 0.5 * tr.velocity + 0.5 * v if self.index > tr.first_frame else v * 0
        tr.face, tr.missed, tr.last_seen = face, False, self.index

    def _smooth(self, tr: Track, t: float) -> Any:
        if not self.cfg.stabilize or tr.filter is None:
            return tr.face
        lm = tr.filter(tr.face.landmarks, t, scale=max(self._face_side(tr.face), 1.0))
        lm = lm.astype(np.float32)
        box = _square_box(_lm_box(lm) + (np.asarray(tr.face.box, np.float64) - _lm_box(tr.face.landmarks)))
        return dataclasses.replace(tr.face, box=box, landmarks=lm)

    def _keep(self, tr: Track, shape: tuple[int, ...]) -> bool:
        """Fail-closed: a lost track is kept until its region leaves the frame; fail-open:
        for ``track_ttl`` frames (for matching only, it is not shown)."""
        if not tr.missed:
            return True
        if not self.cfg.fail_closed:
            return self.index - tr.last_seen <= self.cfg.track_ttl
        H, W = shape[:2]
        b = tr.lost_box(self.index, self.cfg)
        return b[2] > 0 and b[3] > 0 and b[0] < W and b[1] < H

    # -- one frame -----------------------------------------------------------------------
    def __call__(self, frame: np.ndarray, t: float | None = None) -> tuple[np.ndarray, dict]:
        cfg, T = self.cfg, self.times
        t = self.index / 25.0 if t is None else float(t)
        thumb = cv2.resize(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY), (32, 18),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = (cfg.scene_cut > 0 and self._thumb is not None
               and float(np.abs(thumb - self._thumb).mean()) > cfg.scene_cut)
        self._thumb = thumb
        self.tracks = [tr for tr in self.tracks if self._keep(tr, frame.shape)]
        detect_now = (cut or self.index % cfg.detect_every == 0
                      or not any(not tr.missed for tr in self.tracks))
        n_det = None
        if detect_now:
            t0 = time.perf_counter()
            dets = list(self.aligner.detect(frame))
            t1 = time.perf_counter()
            n_det = len(dets)
            pairs, lost, new = self._match(dets)
            for r, c in pairs:
                tr = self.tracks[r]
                self._set_face(tr, dets[c])
                tr.box_rel = _box_rel(dets[c].box, dets[c].landmarks)
            for r in lost:
                self.tracks[r].missed = True
            if cut:                               # a new scene: lost faces are not in it
                self.tracks = [tr for tr in self.tracks if not tr.missed]
            self.tracks += [self._new_track(frame, dets[c]) for c in new]
            # a lost track overlapping a live one is the same face found again: drop it
            live = [np.asarray(tr.face.box, np.float64) for tr in self.tracks if not tr.missed]
            if live:
                self.tracks = [tr for tr in self.tracks if not tr.missed or box_iou(
                    tr.lost_box(self.index, cfg), np.stack(live)).max() < cfg.iou_threshold]
            T["detect"] += t1 - t0
            T["track"] += time.perf_counter() - t1
        else:
            t0 = time.perf_counter()
            for tr in self.tracks:
                if not tr.missed:
                    self._refit(frame, tr)
            T["refit"] += time.perf_counter() - t0

        active = [tr for tr in self.tracks if not tr.missed]
        missed = [tr for tr in self.tracks if tr.missed]
        n_small = 0
        for tr in active:
            tr.smoothed = self._smooth(tr, t)
            if self._face_side(tr.face) < cfg.min_face:      # too small to align: obscured
                n_small += 1
                tr.smoothed = dataclasses.replace(tr.smoothed, reliable=False,
                                                  reason="face too small to align")
            if tr.target is None and tr.smoothed.reliable:
                tr.target = self.provider.target_for(frame, tr.face)
        # (e)–(h): one FaceAligner.process call per distinct target (one for a fixed net);
        # faces with unreliable landmarks are obscured there instead of generated
        out = frame
        groups: dict[int, list[Track]] = {}
        for tr in active:
            groups.setdefault(id(tr.target), []).append(tr)
        for trs in groups.values():
            out, pinfo = self.aligner.process(out, self.provider.net_for(trs[0].target),
                                              faces=[tr.smoothed for tr in trs])
            for k in ("warp", "net", "paste"):
                T[k] += pinfo.get("times", {}).get(k, 0.0)
            T["fail_closed"] += pinfo.get("times", {}).get("obscure", 0.0)
        if out is frame:
            out = frame.copy()
        obscured = [tr.id for tr in active if not tr.smoothed.reliable]
        # fail-closed: lost faces stay obscured at their predicted, grown box
        closed = []
        if cfg.fail_closed and missed:
            t0 = time.perf_counter()
            for tr in missed:
                pixelate(out, tr.lost_box(self.index, cfg), cfg.pixel_block)
                closed.append(tr.id)
            T["fail_closed"] += time.perf_counter() - t0
        info = {"index": self.index, "n_faces": len(active), "n_detected": n_det,
                "detected": detect_now, "tracks": [tr.id for tr in active],
                "missed_tracks": [tr.id for tr in missed], "small_faces": n_small,
                "fail_closed": closed, "obscured": obscured,
                "fallback_faces": len(closed) + len(obscured),
                "faces": [tr.smoothed for tr in active]}
        self.index += 1
        return out, info


# ----------------------------------------------------------------------------------------
# Decoding, encoding, audio.

@dataclass
class VideoInfo:
    """What :func:`probe_video` finds in a file."""
    path: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int               # from the container (0 when unknown)
    duration: float           # seconds (video stream or container)
    codec: str
    audio_codec: str | None
    audio_duration: float | None
    rotation: int = 0         # display rotation (degrees counter-clockwise); width/height upright

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["fps"], d["time_base"] = float(self.fps), str(self.time_base)
        return d


def _open_input(path: Path):
    import av
    if not path.exists():
        raise DeidError(f"input video not found: {path}")
    if not path.is_file():
        raise DeidError(f"input video is not a file: {path}")
    if not os.access(path, os.R_OK):
        raise DeidError(f"input video is not readable: {path}")
    try:
        return av.open(str(path), "r")
    except Exception as exc:  # av.error.InvalidDataError, OSError...
        raise DeidError(f"cannot open video {path}: {exc} (corrupt, truncated or not a video?)") from exc


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Stream facts of a video file; DeidError when missing, unreadable or without video."""
    path = Path(path)
    with _open_input(path) as c:
        if not c.streams.video:
            raise DeidError(f"no video stream in {path}")
        vs = c.streams.video[0]
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
        tb = vs.time_base or Fraction(1, 90000)
        dur = float(vs.duration * tb) if vs.duration else (c.duration or 0) / 1e6
        a = c.streams.audio[0] if c.streams.audio else None
        adur = (float(a.duration * a.time_base) if a is not None and a.duration else
                ((c.duration or 0) / 1e6 if a is not None else None))
        w, h = vs.codec_context.width, vs.codec_context.height
        if w <= 0 or h <= 0:
            raise DeidError(f"video stream of {path} has no frame size (corrupt?)")
        rot = _display_rotation(c)
        if rot in (90, 270):
            w, h = h, w
        return VideoInfo(str(path), w, h, Fraction(fps), Fraction(tb), int(vs.frames or 0), dur,
                         _codec_id(vs), _codec_id(a) if a is not None else None, adur, rot)


def _display_rotation(container: Any) -> int:
    """The display rotation of the first video frame (phone videos store pixels sideways and
    a display matrix), in degrees counter-clockwise, one of 0, 90, 180, 270."""
    try:
        frame = next(container.decode(container.streams.video[0]))
    except Exception:
        return 0
    finally:
        container.seek(0)
    return _rotation(frame)


def _rotation(frame: Any) -> int:
    return int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4 * 90


def upright(frame: Any) -> np.ndarray:
    """A decoded PyAV frame as RGB uint8, turned as it is meant to be displayed."""
    img = frame.to_ndarray(format="rgb24")
    k = _rotation(frame) // 90
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


_END = object()


def _codec_id(stream: Any) -> str:
    """The stream's codec (AVCodecID name, e.g. ``mp3`` — not the decoder ``mp3float``)."""
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


class FrameReader(threading.Thread):
    """Decode video frames (RGB uint8) into a bounded queue: ``(index, pts, time_s, frame)``.

    Decoding errors (corrupt or truncated data) stop the reader; what was decoded so far is
    delivered and the error is kept in :attr:`error` for the summary.
    """

    def __init__(self, path: Path, queue_size: int = 8, max_frames: int | None = None):
        super().__init__(daemon=True, name="deid-reader")
        self.path, self.max_frames = path, max_frames
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.error: str | None = None
        self.decoded = 0
        self.seconds = 0.0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            with _open_input(self.path) as c:
                vs = c.streams.video[0]
                vs.thread_type = "AUTO"
                tb = vs.time_base or Fraction(1, 90000)
                fps = vs.average_rate or vs.guessed_rate or Fraction(25)
                it = c.decode(vs)
                while not self._stop.is_set():
                    t0 = time.thread_time()
                    try:
                        f = next(it)
                    except StopIteration:
                        break
                    except Exception as exc:  # corrupt / truncated packet stream
                        self.error = f"decoding stopped after {self.decoded} frames: {exc}"
                        break
                    img = upright(f)                 # display rotation applied
                    self.seconds += time.thread_time() - t0
                    pts = f.pts if f.pts is not None else None
                    ts = float(pts * tb) if pts is not None else self.decoded / float(fps)
                    if not self._put((self.decoded, pts, ts, img)):
                        return
                    self.decoded += 1
                    if self.max_frames and self.decoded >= self.max_frames:
                        break
        except DeidError as exc:
            self.error = str(exc)
        except Exception as exc:  # pragma: no cover - unexpected
            self.error = f"decoding failed: {exc!r}"
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[tuple[int, Any, float, np.ndarray]]:
        while True:
            item = self.q.get()
            if item is _END:
                return
            yield item


class Mp4Writer:
    """H.264 (libx264, yuv420p; yuv444p for odd frame sides) mp4 writer keeping the given
    timestamps, plus the audio of
    ``audio_from`` remuxed (or re-encoded to AAC), interleaved by time. Runs in a thread.
    """

    def __init__(self, path: Path, width: int, height: int, fps: Fraction, time_base: Fraction,
                 audio_from: Path | None = None, crf: int = 18, preset: str = "veryfast",
                 queue_size: int = 8, audio_end: float | None = None):
        import av
        self.path = path
        self.container = av.open(str(path), "w", format="mp4")
        self.vs = self.container.add_stream("libx264", rate=fps)
        # yuv420p needs even sides; odd-sized input keeps its size with 4:4:4 chroma instead
        self.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.vs.width, self.vs.height, self.vs.pix_fmt = width, height, self.pix_fmt
        self.vs.codec_context.time_base = time_base
        self.vs.time_base = time_base
        self.vs.options = {"crf": str(crf), "preset": preset}
        self.time_base, self.fps = time_base, fps
        self.audio_mode: str | None = None
        self.audio_codec: str | None = None
        self._ain = None
        self._apackets: Iterator | None = None
        self._pending_audio: Any = None
        self.audio_end: float | None = None       # cut audio here (set by close())
        self._resampled = None
        if audio_from is not None:
            self._setup_audio(audio_from)
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.error: BaseException | None = None
        self.frames = 0
        self.seconds = 0.0
        self._last_pts: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="deid-writer")
        self._thread.start()

    # audio -------------------------------------------------------------------------------
    def _setup_audio(self, src: Path) -> None:
        import av
        try:
            self._ain = av.open(str(src), "r")
        except Exception:
            return
        if not self._ain.streams.audio:
            self._ain.close()
            self._ain = None
            return
        ain = self._ain.streams.audio[0]
        name = _codec_id(ain)
        self.audio_codec = name
        if name in MP4_AUDIO_COPY:
            self.as_ = self.container.add_stream_from_template(ain)
            self.audio_mode = "copy"
        else:
            rate = ain.codec_context.sample_rate or 48000
            # AAC needs a named layout ("2 channels" from .avi is not one); >2 ch -> 5.1/stereo
            nch = ain.codec_context.channels or 2
            layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(nch, "stereo")
            self.as_ = self.container.add_stream("aac", rate=rate, layout=layout)
            self.audio_mode = "aac"
        self._astream = ain
        self._apackets = self._ain.demux(ain)

    def _audio_until(self, t: float | None) -> None:
        """Mux audio packets with start time <= t seconds (all when t is None)."""
        if self._apackets is None:
            return
        while True:
            pkt = self._pending_audio
            if pkt is None:
                try:
                    pkt = next(self._apackets)
                except (StopIteration, Exception):
                    self._apackets = None
                    break
            if pkt.dts is None and pkt.pts is None:       # flush packet
                continue
            ts = float((pkt.pts if pkt.pts is not None else pkt.dts) * pkt.time_base)
            if self.audio_end is not None and ts >= self.audio_end:
                continue                                  # past the last video frame (max_frames)
            if t is not None and ts > t:
                self._pending_audio = pkt
                return
            self._pending_audio = None
            if self.audio_mode == "copy":
                pkt.stream = self.as_
                self.container.mux(pkt)
            else:
                try:
                    frames = pkt.decode()
                except Exception:
                    continue
                for fr in frames:
                    fr.pts = None
                    for op in self.as_.encode(fr):
                        self.container.mux(op)
        if self.audio_mode == "aac":
            for op in self.as_.encode(None):
                self.container.mux(op)

    # video -------------------------------------------------------------------------------
    def write(self, frame: np.ndarray, pts: int | None) -> None:
        """Queue one RGB frame with its presentation time (in ``time_base`` units)."""
        while True:
            if self.error is not None:
                raise DeidError(f"writing {self.path} failed: {self.error}")
            try:
                self.q.put((frame, pts), timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        import av
        try:
            while True:
                item = self.q.get()
                if item is _END:
                    break
                frame, pts = item
                t0 = time.thread_time()
                if pts is None:
                    pts = int(round(self.frames / self.fps / self.time_base))
                if self._last_pts is not None and pts <= self._last_pts:
                    pts = self._last_pts + 1                # keep timestamps strictly increasing
                self._last_pts = pts
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vf.pts, vf.time_base = pts, self.time_base
                for pkt in self.vs.encode(vf):
                    self._audio_until(float(pkt.pts * self.time_base) if pkt.pts is not None else None)
                    self.container.mux(pkt)
                self.frames += 1
                self.seconds += time.thread_time() - t0
            t0 = time.thread_time()
            for pkt in self.vs.encode(None):
                self.container.mux(pkt)
            self._audio_until(None)
            self.seconds += time.thread_time() - t0
        except BaseException as exc:  # reported to the producer
            self.error = exc
            while True:                                      # unblock the producer
                try:
                    if self.q.get_nowait() is _END:
                        break
                except queue.Empty:
                    break

    def close(self, audio_end: float | None = None) -> None:
        """Flush and close; ``audio_end`` (s) cuts the audio (when only part of the video was
        processed). Raises DeidError if encoding failed."""
        self.audio_end = audio_end
        if self._thread.is_alive():
            while self.error is None:
                try:
                    self.q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        try:
            self.container.close()
        finally:
            if self._ain is not None:
                self._ain.close()
        if self.error is not None:
            raise DeidError(f"writing {self.path} failed: {self.error}")

    def abort(self) -> None:
        try:
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass
        try:
            self.q.put_nowait(_END)
        except queue.Full:
            pass
        self._thread.join(timeout=10)
        for c in (self.container, self._ain):
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass


def remux_copy(src: Path, dst: Path, expect_frames: int | None = None) -> bool:
    """Copy the streams of ``src`` into mp4 ``dst`` without re-encoding (video must be H.264
    and audio mp4-compatible). Returns False when that is not possible, or when the copy
    does not hold ``expect_frames`` video frames (checked by decoding it)."""
    import av
    with av.open(str(src)) as inp:
        if not inp.streams.video or _codec_id(inp.streams.video[0]) != "h264":
            return False
        streams = [inp.streams.video[0]]
        if inp.streams.audio:
            if _codec_id(inp.streams.audio[0]) not in MP4_AUDIO_COPY:
                return False
            streams.append(inp.streams.audio[0])
        with av.open(str(dst), "w", format="mp4") as out:
            omap = {s.index: out.add_stream_from_template(s) for s in streams}
            for pkt in inp.demux(*streams):
                if pkt.size == 0:          # demuxer flush packets
                    continue
                pkt.stream = omap[pkt.stream.index]
                out.mux(pkt)
    if expect_frames is not None:
        with av.open(str(dst)) as chk:
            if sum(1 for _ in chk.decode(chk.streams.video[0])) != expect_frames:
                return False
    return True


# ----------------------------------------------------------------------------------------
# Files: argument checks and the whole run.

def check_paths(inp: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False
                ) -> tuple[Path, Path]:
    """Input must exist; output must differ from it, be .mp4 and not exist (unless overwrite)."""
    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise DeidError(f"input video not found: {inp}")
    if out.suffix.lower() != ".mp4":
        raise DeidError(f"output must be an .mp4 file (H.264), got {out}")
    same = out.resolve() == inp.resolve() or (out.exists() and os.path.samefile(out, inp))
    if same:
        raise DeidError(f"output {out} is the input video: refusing to overwrite the input")
    if out.exists() and not overwrite:
        raise DeidError(f"output {out} exists: pass --overwrite to replace it")
    if out.exists() and out.is_dir():
        raise DeidError(f"output {out} is a folder")
    side = summary_path(out)
    if side.exists() and not overwrite and side.resolve() != inp.resolve():
        raise DeidError(f"the summary file {side} exists: pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return inp, out


def _ranges(idx: Sequence[int]) -> list[list[int]]:
    """[1, 2, 3, 7] -> [[1, 3], [7, 7]] (compact frame lists in the summary)."""
    out: list[list[int]] = []
    for i in idx:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def summary_path(out: Path) -> Path:
    """The JSON summary sidecar of an output video: ``OUT.mp4`` -> ``OUT.json``."""
    return Path(out).with_suffix(".json")


def _write_json_atomic(path: Path, obj: dict) -> None:
    paths.write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def summarize(frame_infos: list[dict], times: dict[str, float], wall: float,
              extra: dict | None = None) -> dict:
    """The JSON summary: frames, faces per frame, no-face and fail-closed frames, stage times.

    ``fallback_frames`` / ``fallback_faces`` count the frames and face-frames handled by the
    obscuring fallback instead of the network (lost, too small, or unreliable landmarks)."""
    n = len(frame_infos)
    faces = [fi["n_faces"] for fi in frame_infos]
    no_face = [fi["index"] for fi in frame_infos if fi["n_faces"] == 0]
    closed = [fi["index"] for fi in frame_infos if fi["fail_closed"]]
    fallback = [fi["index"] for fi in frame_infos if fi.get("fallback_faces")]
    tracks = sorted({t for fi in frame_infos for t in fi["tracks"]})
    s = {
        "frames": n,
        "faces_per_frame": faces,
        "frames_with_faces": n - len(no_face),
        "frames_no_face": len(no_face),
        "frames_no_face_ranges": _ranges(no_face),
        "fail_closed_frames": len(closed),
        "fail_closed_ranges": _ranges(closed),
        "fallback_frames": len(fallback),
        "fallback_faces": int(sum(fi.get("fallback_faces", 0) for fi in frame_infos)),
        "fallback_ranges": _ranges(fallback),
        "detector_runs": sum(1 for fi in frame_infos if fi["detected"]),
        "tracks": len(tracks),
        "small_faces": int(sum(fi["small_faces"] for fi in frame_infos)),
        "time_s": {k: round(v, 4) for k, v in times.items()},
        "ms_per_frame": {k: round(1000 * v / max(n, 1), 2) for k, v in times.items()},
        "wall_s": round(wall, 3),
        "fps": round(n / wall, 2) if wall > 0 else None,
    }
    if extra:
        s.update(extra)
    return s


def deidentify_video(inp: str | os.PathLike, out: str | os.PathLike, aligner: Any,
                     net: NetFn | NetProvider, config: VideoConfig | None = None,
                     overwrite: bool = False) -> dict:
    """De-identify a video file: every frame through :class:`FrameProcessor`, H.264 mp4 out
    with the input's resolution, frame timestamps and (remuxed) audio; ``OUT.json`` summary.

    Nothing is written at ``out`` unless the run completes (temp file + ``os.replace``); the
    input is only read. Zero faces in the whole clip → the output is a stream copy of the
    input (or its re-encode) and the summary carries a warning.
    """
    cfg = config or VideoConfig()
    inp, out = check_paths(inp, out, overwrite)
    info = probe_video(inp)
    if max(info.width, info.height) > MAX_FRAME_SIDE or info.width * info.height > MAX_FRAME_PIXELS:
        raise DeidError(f"{inp}: frames of {info.width}x{info.height} exceed the supported "
                        f"maximum ({MAX_FRAME_SIDE} px side, 4K); downscale first, e.g. "
                        f"ffmpeg -i IN -vf scale=-2:2160 OUT")
    warns: list[str] = []
    if info.width % 2 or info.height % 2:
        warns.append(f"odd frame size {info.width}x{info.height}: encoded as H.264 4:4:4 "
                     f"(yuv444p) to keep the size; some players only play yuv420p")
    if info.width * info.height > 1920 * 1080:
        warns.append(f"large frames ({info.width}x{info.height}): consider detect_scale < 1 "
                     f"(--detect-scale) and --detect-every > 1 for speed")
    tmp = paths.atomic_write_path(out)
    proc = FrameProcessor(aligner, net, cfg)
    reader = FrameReader(inp, cfg.queue_size, cfg.max_frames)
    writer: Mp4Writer | None = None
    frame_infos: list[dict] = []
    t_start = time.perf_counter()
    pbar = None
    try:
        writer = Mp4Writer(tmp, info.width, info.height, info.fps, info.time_base,
                           audio_from=inp, crf=cfg.crf, preset=cfg.preset, queue_size=cfg.queue_size)
        if cfg.progress:
            from tqdm import tqdm
            total = min(info.frames, cfg.max_frames) if cfg.max_frames and info.frames else (
                info.frames or cfg.max_frames or None)
            pbar = tqdm(total=total, unit="frame", desc=f"deid {inp.name}", dynamic_ncols=True)
        reader.start()
        last_ts = 0.0
        for idx, pts, ts, frame in reader:
            last_ts = ts
            res, fi = proc(frame, ts)
            fi.pop("faces", None)
            frame_infos.append(fi)
            writer.write(res, pts)
            if pbar is not None:
                pbar.update(1)
        if pbar is not None:
            pbar.close()
        if not frame_infos:
            raise DeidError(f"no frame could be decoded from {inp}"
                            + (f": {reader.error}" if reader.error else ""))
        cut = cfg.max_frames is not None and len(frame_infos) >= cfg.max_frames
        writer.close(audio_end=last_ts + 1.0 / float(info.fps) if cut else None)
        wall = time.perf_counter() - t_start
        times = dict(proc.times, decode=reader.seconds, encode=writer.seconds)
        truncated = bool(reader.error) or (info.frames > 0 and len(frame_infos) < info.frames
                                           and not cfg.max_frames)
        if reader.error:
            warns.append(f"{inp}: {reader.error}; the output holds the {len(frame_infos)} "
                         f"frames decoded before it")
        elif truncated:
            warns.append(f"{inp}: container lists {info.frames} frames but only "
                         f"{len(frame_infos)} could be decoded (truncated?)")
        n_fb = sum(fi.get("fallback_faces", 0) for fi in frame_infos)
        if n_fb:
            n_fbf = sum(1 for fi in frame_infos if fi.get("fallback_faces"))
            warns.append(f"{n_fb} face(s) in {n_fbf} frame(s) were obscured (pixelated) instead "
                         f"of de-identified by the network: lost by the detector, too small, "
                         f"or with unreliable landmarks (see fallback_ranges)")
        copied = False
        if all(fi["n_faces"] == 0 and not fi["fail_closed"] for fi in frame_infos):
            # (a rotated input is re-encoded upright: a stream copy would drop its rotation)
            warns.append(f"no face found in any frame of {inp}: output is a copy of the input "
                         f"(faces below ~20 px need --upsample 1; dlib HOG needs ~80 px)")
            if not truncated and not cfg.max_frames and not info.rotation:
                tmp2 = tmp.with_name(tmp.name + ".copy.mp4")
                try:
                    copied = remux_copy(inp, tmp2, expect_frames=len(frame_infos))
                    if copied:
                        os.replace(tmp2, tmp)
                except Exception:
                    copied = False     # keep the re-encode of the unchanged frames
                finally:
                    if tmp2.exists():
                        tmp2.unlink()
        summary = summarize(frame_infos, times, wall, {
            "input": info.to_json(), "output": str(out),
            "frames_expected": info.frames, "truncated": truncated,
            "decode_error": reader.error, "copied_without_faces": copied,
            "audio": {"mode": writer.audio_mode if not copied else "copy",
                      "codec": writer.audio_codec},
            "config": dataclasses.asdict(cfg), "warnings": warns,
        })
        os.replace(tmp, out)
        _write_json_atomic(summary_path(out), summary)
        for w in warns:
            warnings.warn(w, stacklevel=2)
        return summary
    except BaseException:
        reader.stop()
        if writer is not None:
            writer.abort()
        if pbar is not None:
            pbar.close()
        raise
    finally:
        reader.stop()
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------
# Live.

def gui_available() -> tuple[bool, str]:
    """Whether ``cv2.imshow`` can open a window here (GUI build and a display)."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display ($DISPLAY is not set)"
    info = cv2.getBuildInformation()
    gui = [ln for ln in info.splitlines() if ln.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
        return False, "this OpenCV build has no GUI (opencv-python-headless)"
    return True, ""


class LiveSource(threading.Thread):
    """Capture thread with a one-slot (``maxsize``) queue that drops the oldest frame when
    the consumer is slower than the source. ``realtime`` paces a file at its own fps."""

    def __init__(self, source: int | str, realtime: bool = False, maxsize: int = 1,
                 max_frames: int | None = None):
        super().__init__(daemon=True, name="deid-capture")
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            raise DeidError(f"cannot open video source {source!r} (camera index, file or URL)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1 <= fps <= 240 else 30.0
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.realtime, self.max_frames = realtime, max_frames
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.captured = self.dropped = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            while not self._stop.is_set():
                ok, bgr = self.cap.read()
                if not ok:
                    break
                if self.realtime:
                    due = t0 + self.captured / self.fps
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                item = (self.captured, time.perf_counter() - t0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                self.captured += 1
                while True:
                    try:
                        self.q.put_nowait(item)
                        break
                    except queue.Full:
                        try:
                            self.q.get_nowait()               # drop the oldest frame
                            self.dropped += 1
                        except queue.Empty:
                            pass
                if self.max_frames and self.captured >= self.max_frames:
                    break
        finally:
            self.cap.release()
            while True:
                try:
                    self.q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    try:
                        self.q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass


def draw_fps(frame: np.ndarray, fps: float, text: str = "") -> np.ndarray:
    """Overlay ``"NN.N fps"`` in the top-left corner (in place; returns the frame)."""
    s = f"{fps:5.1f} fps {text}".rstrip()
    scale = max(0.5, frame.shape[0] / 720)
    cv2.putText(frame, s, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                int(4 * scale), cv2.LINE_AA)
    cv2.putText(frame, s, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(1.5 * scale)), cv2.LINE_AA)
    return frame


def run_live(source: int | str, aligner: Any, net: NetFn | NetProvider,
             config: VideoConfig | None = None, out: str | os.PathLike | None = None,
             show: bool = False, realtime: bool = False, overwrite: bool = False,
             overlay: bool = True, duration: float | None = None) -> dict:
    """Live de-identification from a camera/stream/file (``realtime`` paces a file).

    Frames that arrive while the pipeline is busy are dropped (a one-frame queue), never
    queued without bound. ``out`` writes the processed frames (fps overlay included) to an
    mp4 with their capture times (variable frame rate); ``show`` opens a side-by-side
    preview window (needs a GUI build of OpenCV and a display; 'q' or Esc quits).
    """
    cfg = config or VideoConfig(fail_closed=True)
    if show:
        ok, why = gui_available()
        if not ok:
            raise DeidError(f"--show needs a display and a GUI build of OpenCV: {why}. "
                            f"Run headless with --out FILE.mp4 instead "
                            f"(or install opencv-python instead of opencv-python-headless)")
    out_path: Path | None = None
    if out is not None:
        out_path = Path(out)
        if out_path.suffix.lower() != ".mp4":
            raise DeidError(f"output must be an .mp4 file, got {out_path}")
        if isinstance(source, str) and Path(source).exists() and out_path.resolve() == Path(source).resolve():
            raise DeidError(f"output {out_path} is the input: refusing to overwrite the input")
        if out_path.exists() and not overwrite:
            raise DeidError(f"output {out_path} exists: pass --overwrite to replace it")
        out_path.parent.mkdir(parents=True, exist_ok=True)
    src = LiveSource(source, realtime=realtime, max_frames=cfg.max_frames)
    proc = FrameProcessor(aligner, net, cfg)
    proc.warm_up((src.height, src.width))       # before the capture clock starts
    tmp = paths.atomic_write_path(out_path) if out_path else None
    writer = (Mp4Writer(tmp, src.width, src.height, Fraction(src.fps).limit_denominator(1001),
                        Fraction(1, 1000), crf=cfg.crf, preset=cfg.preset) if tmp else None)
    infos: list[dict] = []
    t_start = time.perf_counter()
    ema = None
    last = None
    latencies: list[float] = []
    interrupted = False
    try:
        src.start()
        while True:
            try:
                item = src.q.get()
            except KeyboardInterrupt:           # Ctrl-C ends a live session normally
                interrupted = True
                break
            if item is _END:
                break
            idx, t_cap, rgb = item
            res, fi = proc(rgb, t_cap)
            fi.pop("faces", None)
            fi["source_index"] = idx
            infos.append(fi)
            now = time.perf_counter()
            latencies.append(now - t_start - t_cap)
            if last is not None:
                inst = 1.0 / max(now - last, 1e-6)
                ema = inst if ema is None else 0.9 * ema + 0.1 * inst
            last = now
            if overlay:
                draw_fps(res, ema or 0.0, f"faces {fi['n_faces']}")
            if writer is not None:
                writer.write(res, int(round(t_cap * 1000)))
            if show:
                view = cv2.cvtColor(np.hstack([rgb, res]), cv2.COLOR_RGB2BGR)
                cv2.imshow("deid live (input | de-identified)", view)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            if duration is not None and now - t_start >= duration:
                break
        src.stop()
        if writer is not None:
            writer.close()
            os.replace(tmp, out_path)
        wall = time.perf_counter() - t_start
        n_fb = sum(fi.get("fallback_faces", 0) for fi in infos)
        warns = ([f"{n_fb} face(s) were obscured (pixelated) instead of de-identified by the "
                  f"network: lost by the detector, too small, or with unreliable landmarks"]
                 if n_fb else [])
        summary = summarize(infos, dict(proc.times), wall, {
            "source": str(source), "source_fps": src.fps, "captured": src.captured,
            "dropped": src.dropped, "realtime": realtime, "interrupted": interrupted, "output": str(out_path) if out_path else None,
            "latency_ms_mean": round(1000 * float(np.mean(latencies)), 1) if latencies else None,
            "first_source_index": infos[0]["source_index"] if infos else None,
            "max_gap": int(np.diff([fi["source_index"] for fi in infos]).max()) if len(infos) > 1 else 0,
            "config": dataclasses.asdict(cfg), "warnings": warns,
        })
        if out_path is not None:
            _write_json_atomic(summary_path(out_path), summary)
        return summary
    except BaseException:
        src.stop()
        if writer is not None:
            writer.abort()
        raise
    finally:
        src.stop()
        if show:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
        if tmp is not None and tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------
# Flicker metric.

def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> list[np.ndarray]:
    """All (or the first ``max_frames``) frames of a video as RGB uint8 arrays."""
    r = FrameReader(Path(path), queue_size=4, max_frames=max_frames)
    r.start()
    frames = [f for _, _, _, f in r]
    if r.error and not frames:
        raise DeidError(r.error)
    return frames


def hull_mask(landmarks_list: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Boolean H×W mask: union of the convex hulls of the given 68-point landmark sets."""
    m = np.zeros(shape[:2], np.uint8)
    for lm in landmarks_list:
        cv2.fillConvexPoly(m, cv2.convexHull(np.round(np.asarray(lm)).astype(np.int32)), 1)
    return m.astype(bool)


def flicker(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Mean |f_t − f_{t−1}| (0–255 scale, all channels) over pixels inside both frames'
    face masks, averaged over consecutive pairs that have such pixels."""
    vals = []
    for t in range(1, len(frames)):
        m = masks[t] & masks[t - 1]
        if m.any():
            d = np.abs(frames[t].astype(np.int16) - frames[t - 1].astype(np.int16))
            vals.append(float(d[m].mean()))
    return float(np.mean(vals)) if vals else float("nan")


def flicker_ratio(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                  masks: Sequence[np.ndarray]) -> float:
    """Temporal flicker of the output over that of the input, inside the face hulls
    (1 = as steady as the source; > 1 = the de-identification adds flicker)."""
    if len(inputs) != len(outputs) or len(inputs) != len(masks):
        raise DeidError(f"flicker_ratio: {len(inputs)} inputs, {len(outputs)} outputs, "
                        f"{len(masks)} masks")
    return flicker(outputs, masks) / max(flicker(inputs, masks), 1e-9)


def face_masks(frames: Sequence[np.ndarray], aligner: Any) -> list[np.ndarray]:
    """Per-frame hull masks of the faces the aligner detects in the *input* frames (the
    same reference masks for every output being compared)."""
    return [hull_mask([f.landmarks for f in aligner.detect(fr)], fr.shape) for fr in frames]


def measure_flicker(input_path: str | os.PathLike, output_paths: dict[str, str | os.PathLike],
                    aligner: Any, max_frames: int | None = None) -> dict[str, float]:
    """Flicker ratio (output vs input, inside the input's face hulls) of each output video."""
    inp = read_frames(input_path, max_frames)
    masks = face_masks(inp, aligner)
    res = {}
    for name, p in output_paths.items():
        outf = read_frames(p, len(inp))
        res[name] = flicker_ratio(inp, outf, masks)
    return res


def pattern_net(size: int, alpha: float = 0.6) -> NetFn:
    """A deterministic stand-in network that paints a fixed textured pattern (in crop
    coordinates) with a constant mask: any jitter of the alignment shows up as flicker in
    the output, which a pass-through network would hide. For the stabilisation measurement."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    pat = np.stack([128 + 100 * np.sin(12 * x), 128 + 100 * np.sin(12 * y),
                    128 + 100 * np.sin(9 * (x + y))], -1).clip(0, 255).astype(np.uint8)

    def net(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(crops)
        return np.repeat(pat[None], n, 0), np.full((n, size, size), alpha, np.float32)
    return net


# ----------------------------------------------------------------------------------------
# Model wiring for the CLI (one place: `deid video`, `deid live`, notebooks).

def check_target_image(path: str | os.PathLike, aligner: Any) -> np.ndarray:
    """Read a target photo and require exactly one detectable face in it (§3: "a target
    image, which is any image of the person"). Returns the RGB image."""
    from deid_core.align import read_image
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"target image not found: {path}")
    img = read_image(path)
    n = len(aligner.detect(img))
    if n == 0:
        raise DeidError(f"no face found in the target image {path}: give a photo of the person "
                        f"with one clearly visible face")
    if n > 1:
        raise DeidError(f"the target image {path} shows {n} faces: give a photo with exactly one "
                        f"face (crop it to the person)")
    return img


def build_pipeline(checkpoint: str | os.PathLike | None, target: str | os.PathLike | None = None,
                   lam: float | None = None, device: str = "cpu", passthrough: bool = False,
                   detector: str | None = None, upsample: int = 0, detect_scale: float = 1.0,
                   upscale_every: int = 1) -> tuple[Any, NetFn | NetProvider]:
    """The ``(aligner, net)`` pair for :func:`deidentify_video` / :func:`run_live`.

    With a checkpoint (None: the committed starter checkpoint when present):
    ``inference.Deidentifier`` and the target's embedding (or, without
    ``target``, each face track's own first appearance). ``passthrough=True`` runs the
    pipeline with the identity network (debugging; nothing is de-identified). ``upscale_every``
    runs YuNet's 2× pass on every n-th detection only (live: speed).
    """
    from deid_core.align import DEFAULT_DETECTOR, AlignConfig, FaceAligner, passthrough_net
    detector = detector or DEFAULT_DETECTOR
    if passthrough:
        aligner = FaceAligner(AlignConfig(detector=detector, upsample=upsample,
                                          detect_scale=detect_scale, upscale_every=upscale_every))
        return aligner, passthrough_net
    from deid_core.inference import Deidentifier
    try:
        ckpt = paths.resolve_checkpoint(checkpoint)
    except DeidError as exc:
        raise DeidError(f"{exc}, or --passthrough to test the pipeline without "
                        "de-identification") from None
    if not ckpt.is_file():
        raise DeidError(f"checkpoint not found: {ckpt}")
    det_cfg = dict(detector=detector, upsample=upsample, detect_scale=detect_scale)
    img = check_target_image(target, FaceAligner(AlignConfig(**det_cfg))) if target else None
    det_cfg["upscale_every"] = upscale_every
    deid = Deidentifier.from_checkpoint(ckpt, device)
    aligner = FaceAligner(dataclasses.replace(deid.aligner.config, **det_cfg))
    emb = None
    if img is not None:       # the one target face, cropped as the model was trained
        face = aligner.detect(img)[0]
        emb = deid.embed_crops(deid.aligner.warp(img, deid.aligner.transform(face.landmarks))[None])[0]
    return aligner, DeidentifierNet(deid, lam=lam, target_embedding=emb)

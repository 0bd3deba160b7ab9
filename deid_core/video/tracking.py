"""Per-face tracks and the fail-closed frame processor (beyond the paper's per-frame §3 a–h).

- **Tracking** (:class:`FrameProcessor`): per-face tracks matched by box IoU and landmark
  distance (Hungarian assignment); detection every ``detect_every`` frames, in between the
  68 landmarks are re-fitted (dlib shape predictor) on a box predicted from the track; each
  track keeps one target embedding for its whole life.
- **Fail-closed privacy mode** (default; ``fail_closed=False`` is the paper's plain per-frame
  behaviour): a track the detector loses stays obscured (pixelated) at its predicted box --
  its last box moved by its velocity and grown with the frames since it was last seen --
  until it is detected again or the box leaves the frame; there is no frame-count expiry (a
  scene cut -- thumbnails of consecutive frames differing by more than ``scene_cut`` grey
  levels on average (26-37 at the cuts of the sample and Hamilton clips, at most 16 elsewhere)
  *and* grey histograms by more than ``scene_cut_hist`` in L1 (0.23-0.65 at those cuts, at most
  0.08 in a fast pan, whose thumbnails differ by 19-25) -- ends lost tracks, since the place a
  face was lost no longer exists).
  Faces whose landmarks are unreliable or that are too small to align are obscured by the
  aligner (:meth:`deid_core.face.FaceAligner.process`), and so is a generated face its
  identity check (``aligner.check``, every ``check_every``-th frame) finds still recognisable;
  such a track stays obscured for the rest of its life (``recognisable`` in the frame info).
  Every frame/face handled by the fallback is counted in the summary (``fallback_frames``,
  ``fallback_faces``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import cv2
import numpy as np

from deid_core.face.aligner import CropFn
from deid_core.face.detect import Face, box_iou, obscure
from deid_core.face.template import shape_error
from deid_core.video.config import VideoConfig
from deid_core.video.smoothing import OneEuroFilter


# ----------------------------------------------------------------------------------------
# Tracking.
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


@dataclass
class TrackView:
    """One track in one frame, as the renderer needs it.

    ``state``: ``detected`` / ``refit`` (landmarks of this frame), ``replayed`` (moved here by
    optical flow or the motion model from a frame where the face was seen), ``lost`` (only a
    region, ``box``, to obscure). ``action``: ``deidentify`` or ``keep`` (consent list)."""
    track: int
    face: Any
    target: Any
    state: str
    box: np.ndarray | None = None
    action: str = "deidentify"
    smoothed: Any = None


@dataclass
class FrameObs:
    """What the tracking half saw in one frame (:meth:`FrameProcessor.observe`)."""
    index: int
    t: float
    detected: bool
    n_detected: int | None
    cut: bool
    views: list[TrackView]
    born: list[int] = dataclasses.field(default_factory=list)   # track ids new in this frame


class CropFnProvider(Protocol):
    """What :class:`FrameProcessor` needs from a de-identification model."""

    def target_for(self, frame: np.ndarray, face: Any) -> Any: ...   # once per new track
    def crop_fn_for(self, target: Any) -> CropFn: ...                    # callable for FaceAligner.process


class FixedCropFn:
    """A :class:`CropFnProvider` with one network for every face (pass-through, tests, benchmarks)."""

    def __init__(self, net: CropFn):
        self.net = net

    def target_for(self, frame: np.ndarray, face: Any) -> Any:
        return None

    def crop_fn_for(self, target: Any) -> CropFn:
        return self.net


def pixelate(frame: np.ndarray, box: Sequence[float], blocks: int = 12) -> None:
    """Pixelate ``frame[box]`` in place into about ``blocks``×``blocks`` cells (fail-closed;
    :func:`deid_core.face.obscure`)."""
    obscure(frame, box, blocks)


def _expand(box: np.ndarray, f: float) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * f / 2, (box[3] - box[1]) * f / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


class FrameProcessor:
    """Per-frame de-identification with tracks, smoothing and fail-closed regions.

    ``aligner`` is a :class:`deid_core.face.FaceAligner` (``detect``, ``landmarks``,
    ``process``); ``net`` a :data:`CropFn` or a :class:`CropFnProvider`. Call it once per frame,
    in order: ``out, info = proc(frame_rgb, t_seconds)``.
    """

    def __init__(self, aligner: Any, net: CropFn | CropFnProvider, config: VideoConfig | None = None,
                 detect: Callable[[np.ndarray], list[Any]] | None = None):
        self.aligner = aligner
        self.provider: CropFnProvider = net if hasattr(net, "crop_fn_for") else FixedCropFn(net)  # type: ignore[arg-type]
        self.cfg = config or VideoConfig()
        self.tracks: list[Track] = []
        self.index = 0
        self._next_id = 0
        self._thumb: tuple | None = None           # previous frame's thumbnail, histogram (cuts)
        self._filters: dict[int, OneEuroFilter] = {}  # render: One-Euro filter per track id
        self._recognisable: set[int] = set()         # render: tracks the aligner's check flagged
        self.detect = detect or aligner.detect       # frame → faces (rotated views: a wrapper)
        import scipy.optimize  # noqa: F401  (here, not in the timed tracking; lazy: not on the GPU image)
        self.times: dict[str, float] = {k: 0.0 for k in
                                        ("detect", "refit", "track", "warp", "net", "paste", "check",
                                         "fail_closed")}

    def warm_up(self, shape: tuple[int, ...]) -> None:
        """Load the detector, landmark and network weights and run each once on a blank frame,
        so that a live source does not start by dropping the frames of that start-up time."""
        blank = np.zeros((max(int(shape[0]), 32), max(int(shape[1]), 32), 3), np.uint8)
        self.aligner.detect(blank)
        if hasattr(self.aligner, "predictor"):
            self.aligner.predictor
        size = int(getattr(self.aligner, "size", 128))
        self.provider.crop_fn_for(None)(np.zeros((1, size, size, 3), np.uint8))

    def state(self) -> dict:
        """What tracking carries from frame to frame (picklable): a resumed scan restores it."""
        return {"tracks": self.tracks, "index": self.index, "next_id": self._next_id,
                "thumb": self._thumb}

    def restore(self, state: dict) -> None:
        """Continue tracking from :meth:`state`."""
        self.tracks, self.index = state["tracks"], state["index"]
        self._next_id, self._thumb = state["next_id"], state["thumb"]

    # -- tracking ------------------------------------------------------------------------
    def _new_track(self, frame: np.ndarray, face: Any) -> Track:
        tr = Track(id=self._next_id, face=face, box_rel=_box_rel(face.box, face.landmarks),
                   last_seen=self.index, first_frame=self.index)
        self._next_id += 1
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
        from scipy.optimize import linear_sum_assignment  # not on the GPU image (tests/README.md)
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

    def _smooth(self, track: int, face: Any, t: float) -> Any:
        """One-Euro smoothing of a track's landmarks (one filter per track id, in time order)."""
        if not self.cfg.stabilize:
            return face
        f = self._filters.get(track)
        if f is None:
            f = self._filters[track] = OneEuroFilter(self.cfg.min_cutoff, self.cfg.beta, self.cfg.d_cutoff)
        lm = f(face.landmarks, t, scale=max(self._face_side(face), 1.0)).astype(np.float32)
        box = _square_box(_lm_box(lm) + (np.asarray(face.box, np.float64) - _lm_box(face.landmarks)))
        return dataclasses.replace(face, box=box, landmarks=lm)

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
    def observe(self, frame: np.ndarray, t: float | None = None) -> FrameObs:
        """Tracking half of a frame: detect or re-fit, match, keep lost tracks; nothing drawn."""
        cfg, T = self.cfg, self.times
        t = self.index / 25.0 if t is None else float(t)
        small = cv2.resize(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY), (64, 36),
                           interpolation=cv2.INTER_AREA)
        thumb = cv2.resize(small, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32)
        hist = cv2.calcHist([small], [0], None, [16], [0, 256]).ravel() / small.size
        cut = (cfg.scene_cut > 0 and self._thumb is not None
               and float(np.abs(thumb - self._thumb[0]).mean()) > cfg.scene_cut
               and float(np.abs(hist - self._thumb[1]).sum()) > cfg.scene_cut_hist)
        self._thumb = (thumb, hist)
        self.tracks = [tr for tr in self.tracks if self._keep(tr, frame.shape)]
        detect_now = (cut or self.index % cfg.detect_every == 0
                      or not any(not tr.missed for tr in self.tracks))
        n_det, born = None, []
        if detect_now:
            t0 = time.perf_counter()
            dets = list(self.detect(frame))
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
            born = [self._new_track(frame, dets[c]) for c in new]
            self.tracks += born
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
        for tr in self.tracks:
            if not tr.missed and tr.target is None and self._face_side(tr.face) >= cfg.min_face \
                    and getattr(tr.face, "reliable", True):
                tr.target = self.provider.target_for(frame, tr.face)
        views = [TrackView(tr.id, tr.face, tr.target, "detected" if detect_now else "refit")
                 for tr in self.tracks if not tr.missed]
        views += [TrackView(tr.id, tr.face, tr.target, "lost", tr.lost_box(self.index, cfg))
                  for tr in self.tracks if tr.missed and cfg.fail_closed]
        obs = FrameObs(index=self.index, t=t, detected=detect_now, n_detected=n_det, cut=cut,
                       views=views, born=[tr.id for tr in born])
        self.index += 1
        return obs

    def render(self, frame: np.ndarray, obs: FrameObs) -> tuple[np.ndarray, dict]:
        """Drawing half of a frame (steps e–h per face, smoothed; obscured where needed)."""
        cfg, T = self.cfg, self.times
        faces = [v for v in obs.views if v.state != "lost"]
        n_small = 0
        for v in faces:
            v.smoothed = self._smooth(v.track, v.face, obs.t)
            if self._face_side(v.face) < cfg.min_face:      # too small to align: obscured
                n_small += 1
                v.smoothed = dataclasses.replace(v.smoothed, reliable=False,
                                                 reason="face too small to align")
            elif v.track in self._recognisable:             # the check flagged it: stays obscured
                v.smoothed = dataclasses.replace(v.smoothed, reliable=False,
                                                 reason="left recognisable by the network")
        # (e)–(h): one FaceAligner.process call per distinct target (one for a fixed net);
        # faces with unreliable landmarks are obscured there instead of generated
        out = frame
        groups: dict[int, list[TrackView]] = {}
        for v in faces:
            if v.action != "keep":
                groups.setdefault(id(v.target), []).append(v)
        flagged = []
        for vs in groups.values():
            out, pinfo = self.aligner.process(out, self.provider.crop_fn_for(vs[0].target),
                                              faces=[v.smoothed for v in vs],
                                              check=obs.index % cfg.check_every == 0)
            for k in ("warp", "net", "paste", "check"):
                T[k] += pinfo.get("times", {}).get(k, 0.0)
            T["fail_closed"] += pinfo.get("times", {}).get("obscure", 0.0)
            flagged += [vs[i].track for i in pinfo.get("recognisable", [])]
        self._recognisable.update(flagged)
        if out is frame:
            out = frame.copy()
        obscured = [v.track for v in faces if v.action != "keep" and not v.smoothed.reliable]
        obscured += flagged
        # fail-closed: lost faces stay obscured at their predicted, grown box
        closed = []
        t0 = time.perf_counter()
        for v in obs.views:
            if v.state == "lost" and v.action != "keep":
                pixelate(out, v.box, cfg.pixel_block)
                closed.append(v.track)
        T["fail_closed"] += time.perf_counter() - t0
        info = {"index": obs.index, "n_faces": len(faces), "n_detected": obs.n_detected,
                "detected": obs.detected, "tracks": [v.track for v in faces],
                "missed_tracks": [v.track for v in obs.views if v.state == "lost"],
                "small_faces": n_small, "fail_closed": closed, "obscured": obscured,
                "replayed": [v.track for v in faces if v.state == "replayed"],
                "kept": [v.track for v in obs.views if v.action == "keep"],
                "recognisable": sorted(t for t in obscured if t in self._recognisable),
                "fallback_faces": len(closed) + len(obscured),
                "faces": [v.smoothed for v in faces]}
        return out, info

    def __call__(self, frame: np.ndarray, t: float | None = None) -> tuple[np.ndarray, dict]:
        """One frame, in order: :meth:`observe` then :meth:`render` (the one-pass mode)."""
        return self.render(frame, self.observe(frame, t))


def pattern_crops(size: int, alpha: float = 0.6) -> CropFn:
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

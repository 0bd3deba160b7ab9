"""Simple de-identification baselines for Tables 3-5, run through the same metrics.

- Gaussian blur of the face (inside the 68-point hull, feathered as in §3 h), σ chosen so that the
  mean pixel distance matches a target (ours, or the paper's Table 3 level when no checkpoint).
- Pixelation of the face region (blocks across the face).
- The [41]-style swap: the gallery face of a *different* person (descriptor distance above the
  evaluator's threshold) that is nearest in aligned pixels, pasted through our own alignment and
  hull merge (``FaceAligner.process``).
All take and return uint8 RGB images (``fn(image, landmarks68) -> image``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from deid_core.errors import DeidError
from deid_core.evaluate import metrics
from deid_core.face import Face, FaceAligner


PAPER_TABLE3_OURS_RGB = (2.72, 2.35, 3.92)  # "Our high" RGB distances, paper Table 3


def face_weight(shape: tuple[int, ...], landmarks: np.ndarray, feather: float = 0.08) -> np.ndarray:
    """H×W float32 merge weight: 1 inside the landmarks' convex hull, feathered to 0 at its edge
    (the align helper's ``hull_weight``)."""
    H, W = shape[:2]
    out = np.zeros((H, W), np.float32)
    hw = FaceAligner(feather=feather).hull_weight(landmarks, (H, W))
    if hw is None:
        return out
    (x, y, w, h), wt = hw
    out[y:y + h, x:x + w] = wt
    return out


def _blend(image: np.ndarray, modified: np.ndarray, weight: np.ndarray) -> np.ndarray:
    w = weight[..., None]
    return np.clip(image * (1 - w) + modified * w + 0.5, 0, 255).astype(np.uint8)


def blur_face(image: np.ndarray, landmarks: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (σ in pixels of this image) inside the face hull."""
    if sigma <= 0:
        return image.copy()
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma))
    return _blend(image.astype(np.float32), blurred.astype(np.float32), face_weight(image.shape, landmarks))


def pixelate_face(image: np.ndarray, landmarks: np.ndarray, blocks: int = 8) -> np.ndarray:
    """Pixelate the face: ``blocks`` cells across the hull's width, nearest-neighbour upscaled."""
    lm = np.asarray(landmarks, np.float64)
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    H, W = image.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image.copy()
    roi = image[y0:y1, x0:x1]
    cell = max(1.0, (x1 - x0) / blocks)
    small = cv2.resize(roi, (max(1, round((x1 - x0) / cell)), max(1, round((y1 - y0) / cell))),
                       interpolation=cv2.INTER_AREA)
    pix = image.copy()
    pix[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return _blend(image.astype(np.float32), pix.astype(np.float32),
                  face_weight(image.shape, landmarks, feather=0.0))


def blur_transform(sigma_rel: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Blur with σ relative to the inter-ocular distance (so one setting fits any image size)."""
    def fn(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return blur_face(image, landmarks, sigma_rel * float(metrics.inter_ocular(landmarks)))
    fn.cache_tag = f"blur-s{sigma_rel:.4f}"  # type: ignore[attr-defined]
    return fn


def pixelate_transform(blocks: int = 8) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def fn(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return pixelate_face(image, landmarks, blocks)
    fn.cache_tag = f"pixelate-b{blocks}"  # type: ignore[attr-defined]
    return fn


def sigma_for_pixel_distance(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                             target: float, lo: float = 0.0, hi: float = 1.0, iters: int = 12) -> float:
    """Relative blur σ (× inter-ocular distance) whose mean pixel distance over ``images`` ≈ ``target``.

    Pixel distance grows monotonically with σ; bisection on [lo, hi].
    """
    if not len(images):
        raise DeidError("no images to fit the blur σ on")

    def dist(s: float) -> float:
        fn = blur_transform(s)
        return float(np.mean([metrics.pixel_distance(im, fn(im, lm)) for im, lm in zip(images, landmarks)]))

    if dist(hi) < target:
        return hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if dist(mid) < target else (lo, mid)
    return (lo + hi) / 2


def swap_transform(donors: Sequence[np.ndarray], donor_landmarks: Sequence[np.ndarray],
                   donor_embeddings: np.ndarray, net, aligner=None,
                   ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """[41]-style baseline: paste the pixel-nearest *dissimilar* donor face through our pipeline.

    Among donors whose descriptor distance to the source (``net``'s own metric) exceeds
    ``net.threshold``, the one with the smallest mean absolute difference between aligned crops
    is warped into the source's aligned crop and merged in the hull (``FaceAligner.process``).
    """
    aligner = aligner or FaceAligner(size=128)
    crops = np.stack([aligner.warp(d, aligner.transform(lm)) for d, lm in zip(donors, donor_landmarks)])
    donor_embeddings = np.asarray(donor_embeddings, np.float32)

    def fn(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        M = aligner.transform(landmarks)
        crop = aligner.warp(image, M)
        e = net.embed_faces(image, [landmarks])
        far = net.distance(np.repeat(e, len(donor_embeddings), 0), donor_embeddings) > net.threshold
        if not far.any():
            raise DeidError("no donor face is dissimilar enough to the source for the swap baseline")
        d = np.abs(crops.astype(np.float32) - crop.astype(np.float32)).mean((1, 2, 3))
        d[~far] = np.inf
        donor = crops[int(np.argmin(d))]
        face = Face(box=np.r_[landmarks.min(0), landmarks.max(0)].astype(np.float32),
                    landmarks=np.asarray(landmarks, np.float32))
        out, _ = aligner.process(image, lambda c: (donor[None].repeat(len(c), 0),
                                                   np.ones(c.shape[:3], np.float32)), faces=[face])
        return out
    return fn

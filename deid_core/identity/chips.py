"""Recognizer-specific face chips: each identity network gets faces cut the way it was trained.

- dlib ResNet-29: ``get_face_chip(img, shape, 150, 0.25)`` (dlib/image_transforms/interpolation.h):
  a similarity transform from a mean-face template (68 points: 27–67 minus the lower lip;
  or 5 points) with padding, bilinear sampling at integer pixel centres, and a 5×5 Gaussian image
  pyramid when the chip is much smaller than the face. :func:`dlib_face_chip` calls dlib itself
  (exact); :func:`crop_to_chip_tensor` re-implements the same geometry with ``grid_sample`` so the
  generator's output can be fed to the loss network differentiably (§3.2.1).
- ArcFace / SFace: the standard 5-point similarity alignment to 112×112 (:func:`align_five_point`)
  with 5 points from the 68 (:func:`arcface_five_points`).
- FaceNet: a 160×160 dlib-style similarity chip with padding 0.3 (:func:`facenet_chip`).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from deid_core.errors import DeidError

ARCFACE_REF_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                            [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)

# dlib's mean face (points 17..67), get_face_chip_details.
_MEAN_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689])
_MEAN_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182])
_IDX68 = np.array([i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67)])  # no eyebrows, no lower lip
_MEAN5 = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                   [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                   [0.4901123135679, 0.6277975316475]])


def check_landmarks(landmarks: np.ndarray, counts=(68,)) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] not in counts or not np.isfinite(lm).all():
        raise DeidError(f"landmarks must be a finite ({' or '.join(map(str, counts))}, 2) array, "
                        f"got shape {getattr(landmarks, 'shape', None)}")
    return lm


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DeidError(f"{name} must be a uint8 H×W×3 RGB array, got "
                        f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
    return image


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, as dlib's find_similarity_transform): 2×3 M, dst ≈ M·[src;1]."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    var_s = (s0 ** 2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, d, vt = np.linalg.svd(cov)
    S = np.eye(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        S[1, 1] = -1
    R = u @ S @ vt
    c = (d * np.diag(S)).sum() / var_s if var_s > 0 else 1.0
    M = np.zeros((2, 3))
    M[:, :2] = c * R
    M[:, 2] = md - c * R @ ms
    return M


def dlib_chip_details(landmarks: np.ndarray, size: int = 150, padding: float = 0.25):
    """dlib's ``get_face_chip_details``: (angle, rect (l, t, r, b) in image pixels)."""
    lm = check_landmarks(landmarks, (68, 5))
    if lm.shape[0] == 68:
        tmpl = np.stack([_MEAN_X, _MEAN_Y], 1)[_IDX68 - 17]
        to = lm[_IDX68]
    else:
        tmpl, to = _MEAN5, lm
    frm = (padding + tmpl) / (2 * padding + 1) * size
    M = similarity_transform(frm, to)
    p = M[:, :2] @ np.array([1.0, 0.0])
    angle = math.atan2(p[1], p[0])
    scale = math.hypot(p[0], p[1])
    cx, cy = M @ np.array([size / 2.0, size / 2.0, 1.0])
    w = size * scale - 1  # centered_drect: width-- ; height--
    return angle, (cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2)


def _chip_matrix(angle: float, rect, size: int) -> np.ndarray:
    """2×3 map from chip pixel (c, r) to image pixel, as extract_image_chips' affine from 3 corners."""
    l, t, r, b = rect
    cx, cy = (l + r) / 2, (t + b) / 2
    ca, sa = math.cos(angle), math.sin(angle)
    kx, ky = (r - l) / (size - 1), (b - t) / (size - 1)
    A = np.array([[ca * kx, -sa * ky], [sa * kx, ca * ky]])
    off = np.array([cx, cy]) - A @ np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    return np.concatenate([A, off[:, None]], 1)


def dlib_chip_matrix(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """2×3 map chip pixel → image pixel of dlib's face chip (no image pyramid)."""
    angle, rect = dlib_chip_details(landmarks, size, padding)
    return _chip_matrix(angle, rect, size)


def dlib_face_chip(image: np.ndarray, landmarks: np.ndarray, size: int = 150,
                   padding: float = 0.25) -> np.ndarray:
    """Exactly ``dlib.get_face_chip(image, shape, size, padding)`` from 68 or 5 landmarks (uint8 RGB)."""
    import dlib  # not on the GPU image (scripts/gpu/importguard.py)
    image = check_image(image)
    lm = check_landmarks(landmarks, (68, 5))
    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in lm]
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    shape = dlib.full_object_detection(
        dlib.rectangle(int(x0), int(y0), int(math.ceil(x1)), int(math.ceil(y1))), pts)
    return np.asarray(dlib.get_face_chip(np.ascontiguousarray(image), shape, size, padding))


def _round_pt(v: float) -> int:
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


def _pyramid_plan(angle: float, rect, size: int, img_w: int, img_h: int):
    """extract_image_chips' pyramid depth, sub-image origin and the chip rect at that level."""
    def down(rc):
        return (rc[0] / 2 - 1.25, rc[1] / 2 - 0.75, rc[2] / 2 - 1.25, rc[3] / 2 - 0.75)

    def area(rc):
        return max(rc[2] - rc[0] + 1, 0) * max(rc[3] - rc[1] + 1, 0) if False else (rc[2] - rc[0]) * (rc[3] - rc[1])

    depth, grow, rc = 0, 2.0, down(rect)
    while area(rc) > size * size:
        rc = down(rc)
        depth += 1
        grow = grow * 2 + 2
    if depth == 0 and area(down(rect)) <= size * size:
        return -1, (0, 0), rect
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    ca, sa = math.cos(angle), math.sin(angle)
    xs, ys = [], []
    for px, py in ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]), (rect[2], rect[3])):
        dx, dy = px - cx, py - cy
        xs.append(cx + ca * dx - sa * dy)
        ys.append(cy + sa * dx + ca * dy)
    l, t = max(min(xs) - grow, 0.0), max(min(ys) - grow, 0.0)
    ox, oy = _round_pt(l), _round_pt(t)
    rc = (rect[0] - ox, rect[1] - oy, rect[2] - ox, rect[3] - oy)
    level = -1
    while area(down(rc)) > size * size:
        level += 1
        rc = down(rc)
    return level, (ox, oy), rc


_PYR = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_PYR2 = (_PYR[:, None] * _PYR[None, :] / 256.0)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    """dlib pyramid_down<2>: separable [1 4 6 4 1]² / 256 filter, every other pixel."""
    k = _PYR2.to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(x, k, stride=2, groups=x.shape[1])


def crop_to_chip_tensor(x: torch.Tensor, crop_landmarks68, size: int = 150,
                        padding: float = 0.25) -> torch.Tensor:
    """Differentiable dlib face chip from an aligned crop (any size), §3.2.1 loss input.

    ``x``: N×3×H×W in [−1, 1]; ``crop_landmarks68``: (68, 2) shared by the batch or (N, 68, 2), in
    crop pixels. Returns N×3×size×size chips in [−1, 1], sampled like ``dlib.get_face_chip``
    (same similarity transform and pixel-centre convention, same Gaussian pyramid for small chips,
    bilinear; no uint8 rounding, zero outside).
    """
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise DeidError(f"crop_to_chip_tensor: x must be a float N×3×H×W tensor, got "
                        f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    lms = np.asarray(crop_landmarks68.detach().cpu() if torch.is_tensor(crop_landmarks68) else crop_landmarks68,
                     dtype=np.float64)
    n, _, h, w = x.shape
    if lms.ndim == 2:    # one landmark set for the batch (training crops): one grid, no loop
        return _chip_batch(x, lms, size, padding)
    if lms.shape[0] != n:
        raise DeidError(f"crop_to_chip_tensor: {lms.shape[0]} landmark sets for {n} images")
    return torch.cat([_chip_batch(x[i:i + 1], lms[i], size, padding) for i in range(n)])


def _chip_batch(x: torch.Tensor, lm: np.ndarray, size: int, padding: float) -> torch.Tensor:
    """:func:`crop_to_chip_tensor` for a batch sharing one (68, 2) landmark set."""
    h, w = x.shape[2], x.shape[3]
    angle, rect = dlib_chip_details(lm, size, padding)
    level, (ox, oy), rc = _pyramid_plan(angle, rect, size, w, h)
    img = (x + 1.0) * 127.5
    if level >= 0:
        img = img[:, :, oy:, ox:]
        for _ in range(level + 1):
            img = _pyr_down(img)
    M = torch.from_numpy(_chip_matrix(angle, rc, size)).to(x)
    ih, iw = img.shape[2], img.shape[3]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=x.dtype, device=x.device),
                            torch.arange(size, dtype=x.dtype, device=x.device), indexing="ij")
    px = M[0, 0] * xs + M[0, 1] * ys + M[0, 2]
    py = M[1, 0] * xs + M[1, 1] * ys + M[1, 2]
    grid = torch.stack([2 * px / (iw - 1) - 1, 2 * py / (ih - 1) - 1], -1)[None]
    grid = grid.expand(img.shape[0], -1, -1, -1)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out / 127.5 - 1.0


def arcface_five_points(landmarks68: np.ndarray) -> np.ndarray:
    """ArcFace's 5 points from the 68: left eye centre, right eye centre (image left/right),
    nose tip (30), mouth corners (48, 54). (5, 2) float32."""
    lm = check_landmarks(landmarks68)
    pts = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    return pts.astype(np.float32)


def five_point_errors(pts5: np.ndarray, ref: np.ndarray = ARCFACE_REF_112) -> np.ndarray:
    """Per-point distance (pixels of the 112×112 reference frame) between the 5 points after
    their least-squares similarity fit and the reference points: how far a face's own
    geometry sits from ArcFace's mean face once aligned. (5,)"""
    pts = check_landmarks(pts5, (5,))
    M = similarity_transform(pts, ref)
    return np.linalg.norm(pts @ M[:, :2].T + M[:, 2] - ref, axis=1)


def five_point_agreement(pts5: np.ndarray, other5: np.ndarray,
                         ref: np.ndarray = ARCFACE_REF_112) -> np.ndarray:
    """Per-point distance between two 5-point sets of one face (e.g. ours from the 68 and
    MTCNN's, the detector ArcFace was trained with), in the 112×112 frame ``other5`` aligns to. (5,)"""
    a, b = check_landmarks(pts5, (5,)), check_landmarks(other5, (5,))
    M = similarity_transform(b, ref)
    return np.linalg.norm((a - b) @ M[:, :2].T, axis=1)


def align_five_point(image: np.ndarray, pts5: np.ndarray, size: int = 112) -> np.ndarray:
    """Standard ArcFace/SFace alignment: similarity to the 112×112 reference points (scaled to
    ``size``), ``cv2.warpAffine`` bilinear, black border. uint8 size×size×3."""
    image = check_image(image)
    pts = check_landmarks(pts5, (5,))
    M = similarity_transform(pts, ARCFACE_REF_112 * (size / 112.0))
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def facenet_chip(image: np.ndarray, landmarks68: np.ndarray, size: int = 160,
                 padding: float = 0.3) -> np.ndarray:
    """FaceNet input: dlib-style similarity chip at 160×160 with padding 0.3 (close to the MTCNN box
    + margin crop FaceNet was trained on; best of 0.15–0.6 on an LFW-a subset)."""
    image = check_image(image)
    M = dlib_chip_matrix(landmarks68, size, padding)
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderValue=0)

"""Averaged-face template and the similarity transform onto it (paper §3, step c).

``deid_core/assets/template68.json`` holds the mean 68-point shape (derived offline by
``scripts/derive_template.py``: generalised Procrustes over the NASA portraits, plus CelebA
crops when present), normalised so its landmark bounding box is centred at (0.5, 0.5) with its
larger side 1. In a crop of side ``S`` with margin ``m``, the landmark box has side
``(1 − 2m)·S``, is centred horizontally and shifted down by ``m/4·S`` (more forehead than
neck). Default ``m = 0.2``. The transform is a least-squares similarity (scale, rotation,
translation; no reflection) from all 68 landmarks, Umeyama (1991) (:func:`umeyama`).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from deid_core.errors import DeidError


DEFAULT_MARGIN = 0.2


TEMPLATE_FILE = Path(__file__).resolve().parent.parent / "assets" / "template68.json"


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


def grow_box(box: Sequence[float], factor: float) -> np.ndarray:
    """``box`` scaled by ``factor`` about its centre."""
    b = np.asarray(box, np.float64)
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    hw, hh = (b[2] - b[0]) * factor / 2, (b[3] - b[1]) * factor / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def square_box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    cx, cy, side = (x0 + x1) / 2.0, (y0 + y1) / 2.0, max(x1 - x0, y1 - y0)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)

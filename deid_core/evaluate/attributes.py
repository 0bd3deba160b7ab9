"""Attribute preservation (beyond the paper): what de-identification should *keep* (§1, §3).

- 68-landmark NME between input and output, normalised by the input's inter-ocular distance
  (expression / shape kept);
- head-pose difference (yaw, pitch, roll in degrees) from ``cv2.solvePnP`` of 6 landmarks on a
  generic 3-D face (pose kept);
- face-detection retention: the fraction of outputs in which the detector still finds a face
  (a de-ID that destroys the face is not what the paper does).
"""
from __future__ import annotations

from typing import Sequence, Callable

import cv2
import numpy as np
import pandas as pd

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.evaluate import metrics
from deid_core.evaluate.conditions import baseline_transforms, deid_transform, load_faces
from deid_core.evaluate.faces import LandmarkDetector
from deid_core.evaluate.table_writer import write_table


# generic 3-D model points (mm) for landmarks 30 (nose tip), 8 (chin), 36, 45 (outer eye
# corners), 48, 54 (mouth corners) — the usual solvePnP head-pose set
MODEL_3D = np.array([[0.0, 0.0, 0.0], [0.0, -330.0, -65.0], [-225.0, 170.0, -135.0],
                     [225.0, 170.0, -135.0], [-150.0, -150.0, -125.0], [150.0, -150.0, -125.0]])


POSE_IDX = [30, 8, 36, 45, 48, 54]


def head_pose(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(yaw, pitch, roll) in degrees from 68 landmarks in an image of ``shape`` (pinhole, f = width)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise DeidError(f"expected 68×2 landmarks, got {lm.shape}")
    h, w = shape[:2]
    K = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], np.float64)
    ok, rvec, _ = cv2.solvePnP(MODEL_3D, lm[POSE_IDX], K, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    R, _ = cv2.Rodrigues(rvec)
    sy = np.hypot(R[0, 0], R[1, 0])
    pitch = np.degrees(np.arctan2(R[2, 1], R[2, 2]))
    yaw = np.degrees(np.arctan2(-R[2, 0], sy))
    roll = np.degrees(np.arctan2(R[1, 0], R[0, 0]))
    return np.array([yaw, pitch, roll])


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def attribute_preservation(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                           detector: Callable[[np.ndarray], np.ndarray | None] | None = None) -> dict:
    """NME, head-pose difference and detection retention between matched input/output images.

    Inputs without a detected face are skipped (counted in ``n_input_faces``).
    """
    if len(inputs) != len(outputs):
        raise DeidError(f"{len(inputs)} inputs but {len(outputs)} outputs")
    detector = detector or LandmarkDetector()
    nmes, dpose, found, n_in = [], [], 0, 0
    for a, b in zip(inputs, outputs):
        if a.shape != b.shape:
            raise DeidError(f"input {a.shape} and output {b.shape} differ in shape")
        la = detector(a)
        if la is None:
            continue
        n_in += 1
        lb = detector(b)
        if lb is None:
            continue
        found += 1
        nmes.append(float(metrics.nme(lb, la)))
        dpose.append(_angle_diff(head_pose(lb, b.shape), head_pose(la, a.shape)))
    dpose = np.array(dpose) if dpose else np.full((0, 3), np.nan)
    return {"n_images": len(inputs), "n_input_faces": n_in, "detection_retention": found / max(n_in, 1),
            "nme_mean": float(np.mean(nmes)) if nmes else float("nan"),
            "nme_median": float(np.median(nmes)) if nmes else float("nan"),
            "yaw_diff": float(np.nanmean(dpose[:, 0])) if len(dpose) else float("nan"),
            "pitch_diff": float(np.nanmean(dpose[:, 1])) if len(dpose) else float("nan"),
            "roll_diff": float(np.nanmean(dpose[:, 2])) if len(dpose) else float("nan")}


def attributes_table(inputs: Sequence[np.ndarray], outputs_by_method: dict[str, Sequence[np.ndarray]],
                     name: str = "attributes", notes: Sequence[str] = ()) -> pd.DataFrame:
    """One row per method → ``results/tables/NAME.csv|md`` (no paper numbers: beyond the paper)."""
    det = LandmarkDetector()
    rows = []
    for method, outs in outputs_by_method.items():
        r = attribute_preservation(inputs, outs, det)
        rows.append({"method": method, "images": r["n_input_faces"],
                     "detection retention": round(r["detection_retention"], 3),
                     "landmark NME": round(r["nme_mean"], 4),
                     "|Δyaw| °": round(r["yaw_diff"], 2), "|Δpitch| °": round(r["pitch_diff"], 2),
                     "|Δroll| °": round(r["roll_diff"], 2), "paper": ""})
    df = pd.DataFrame(rows)
    write_table(name, df, "Attribute preservation (beyond the paper): input vs output", [
        "NME: mean landmark distance / input inter-ocular (outer eye corners), on outputs where a face is found.",
        "Head pose: solvePnP of 6 landmarks on a generic 3-D face; mean absolute angle difference.",
        *notes])
    return df


def run_attributes(images_dir: str | None = None, checkpoint: str | None = None, max_images: int | None = 16,
                   name: str = "attributes"):
    """Attribute preservation (``deid eval attributes``) for de-ID (if a checkpoint) and the baselines."""
    ims, lms, _ = load_faces(images_dir or str(paths.sample_dir() / "portraits"), max_images)
    outs = {}
    if checkpoint:
        fn = deid_transform(checkpoint)
        outs["deid"] = [fn(im, lm) for im, lm in zip(ims, lms)]
    bt, _ = baseline_transforms(ims, lms)
    for k, fn in bt.items():
        outs[k] = [fn(im, lm) for im, lm in zip(ims, lms)]
    return attributes_table(ims, outs, name=name,
                            notes=[] if checkpoint else ["No de-ID rows: no checkpoint given."])

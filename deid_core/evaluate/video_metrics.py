"""Video metrics (paper §4, video): temporal flicker inside the face hull, output vs input, and
identity consistency of the de-identified face across a track (§1: the new identity should stay
the same from frame to frame; the paper argues this from per-frame determinism).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import cv2
import numpy as np

from deid_core.errors import DeidError
from deid_core.video import read_frames


def identity_consistency(frames: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], net) -> dict:
    """Spread of the evaluator embedding of one face track.

    ``landmarks[t]``: the track's 68 points in frame t (None where missing). Returns ``std`` (root
    mean per-dimension std of the unit-normalised embeddings), ``mean_distance_to_centroid``
    (the evaluator's own metric) and ``n_frames`` used.
    """
    embs = [net.embed_faces(f, [lm])[0] for f, lm in zip(frames, landmarks) if lm is not None]
    if len(embs) < 2:
        raise DeidError(f"identity consistency needs a face in at least 2 frames, got {len(embs)}")
    e = np.stack(embs).astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    c = e.mean(0, keepdims=True)
    return {"n_frames": len(e), "std": float(np.sqrt((e.std(0) ** 2).mean())),
            "mean_distance_to_centroid": float(net.distance(e, np.repeat(c, len(e), 0)).mean())}


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

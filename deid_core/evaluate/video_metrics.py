"""Video metrics: temporal flicker (the video helper's ``deid_core.video.flicker_ratio``) and
identity consistency of the de-identified face across a track (§1: the new identity should stay
the same from frame to frame; the paper argues this from per-frame determinism).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from deid_core.errors import DeidError


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


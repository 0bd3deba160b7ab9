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


def video_report(input_frames: Sequence[np.ndarray], outputs: dict[str, Sequence[np.ndarray]],
                 net, aligner=None) -> dict[str, dict]:
    """Per output: flicker ratio vs the input (inside the input's face hulls) and identity
    consistency (chips cut at the *input's* landmarks, the same faces for every output)."""
    from deid_core.align import FaceAligner
    from deid_core.video import flicker_ratio, hull_mask
    aligner = aligner or FaceAligner()
    lms = []
    for f in input_frames:
        faces = aligner.detect(f)
        lms.append(faces[0].landmarks if faces else None)
    masks = [hull_mask([lm] if lm is not None else [], f.shape) for f, lm in zip(input_frames, lms)]
    res = {"input": {"flicker_ratio": 1.0, **identity_consistency(input_frames, lms, net)}}
    for name, outs in outputs.items():
        outs = list(outs)[:len(input_frames)]
        res[name] = {"flicker_ratio": float(flicker_ratio(list(input_frames)[:len(outs)], outs, masks[:len(outs)])),
                     **identity_consistency(outs, lms[:len(outs)], net)}
    return res

"""LFW verification check of the recognizers themselves (§4, Table 5 protocol), each with its own alignment.

Pairs, 10-fold accuracy and TPR@FAR come from :mod:`deid_core.evaluate` (``lfw.read_pairs``,
``metrics.kfold_accuracy`` / ``metrics.tpr_at_far``: thresholds fitted on the other folds). Scores
are the negated distance in each network's own metric (euclidean for dlib, cosine otherwise).

Landmarks: dlib HOG (no upsampling, then 1× upsampling when nothing is found) + the 68-point
predictor on the largest face; when HOG finds
no face (LFW-a is grayscale and pre-aligned, so the face is always in the centre), the predictor
runs on the fixed centre box :data:`LFW_CENTRE_BOX` (the median HOG box on LFW-a) instead.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
from tqdm import tqdm

from deid_core import paths
from deid_core.face import read_image
from deid_core.evaluate import metrics
from deid_core.evaluate.lfw import find_lfw_root, read_pairs

LFW_CENTRE_BOX = (67, 80, 175, 187)  # x0, y0, x1, y1 in the 250×250 LFW image


@dataclass
class LandmarkPass:
    landmarks: np.ndarray  # (N, 68, 2) float32
    detected: np.ndarray   # (N,) bool: False = centre-box fallback


def lfw_landmarks(root: Path, files: list[str], upsample: int = 1, cache: bool = True,
                  progress: bool = True) -> LandmarkPass:
    """68 landmarks for each file (HOG detection, centre-box fallback), cached in the user cache."""
    h = hashlib.sha1(f"{Path(root).resolve()}|0+{upsample}|{LFW_CENTRE_BOX}".encode())
    for f in files:
        h.update(f.encode())
    cpath = paths.cache_dir() / "identity" / f"lfw_lm68_{h.hexdigest()[:16]}.npz"
    if cache and cpath.is_file():
        z = np.load(cpath)
        return LandmarkPass(z["landmarks"], z["detected"])
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(paths.dlib_model("shape_predictor_68_face_landmarks.dat")))
    lms = np.zeros((len(files), 68, 2), np.float32)
    found = np.zeros(len(files), bool)
    for i, f in enumerate(tqdm(files, desc="LFW landmarks", disable=not progress)):
        img = read_image(Path(root) / f)
        rects = det(img, 0)
        if not rects and upsample:
            rects = det(img, upsample)
        if rects:
            rect, found[i] = max(rects, key=lambda r: r.area()), True
        else:
            rect = dlib.rectangle(*LFW_CENTRE_BOX)
        lms[i] = [(p.x, p.y) for p in sp(img, rect).parts()]
    if cache:
        with paths.atomic_write(cpath) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, landmarks=lms, detected=found)
    return LandmarkPass(lms, found)


def embed_lfw(net, root: Path, files: list[str], lm: LandmarkPass, progress: bool = True,
              batch: int = 64) -> np.ndarray:
    """Embeddings (N×D) of LFW files with ``net``'s own chips."""
    out = []
    for s in tqdm(range(0, len(files), batch), desc=f"embed {net.name}", disable=not progress):
        chips = []
        for i in range(s, min(s + batch, len(files))):
            img = read_image(Path(root) / files[i])
            chips.append(net.chip(img, lm.landmarks[i]))
        out.append(net.embed(np.stack(chips)))
    return np.concatenate(out)


def verify_networks(networks: list, pairs_path: Path, root: Path, per_fold: int | None = None,
                    far: float = 1e-3, seed: int = 0, progress: bool = True) -> dict[str, dict]:
    """10-fold accuracy and TPR@FAR of each network on LFW ``pairs.txt`` (``per_fold``: keep that
    many matched and mismatched pairs per fold, deterministic in ``seed``; None = all 6,000)."""
    root = find_lfw_root(root)
    pairs = read_pairs(pairs_path, root)
    if per_fold:
        pairs = pairs.subsample(per_fold, seed=seed)
    files = sorted(set(pairs.a) | set(pairs.b))
    pos = {f: i for i, f in enumerate(files)}
    ia, ib = np.array([pos[f] for f in pairs.a]), np.array([pos[f] for f in pairs.b])
    lm = lfw_landmarks(root, files, progress=progress)
    results = {}
    for net in networks:
        emb = embed_lfw(net, root, files, lm, progress=progress)
        scores = -net.distance(emb[ia], emb[ib])
        acc = metrics.kfold_accuracy(scores, pairs.same, pairs.fold)
        tpr, far_m = metrics.tpr_at_far(scores, pairs.same, pairs.fold, far=far)
        results[net.name] = {"acc": acc.mean, "acc_std": acc.std, "tpr_at_far": tpr.mean,
                             "tpr_std": tpr.std, "far": far, "far_measured": far_m.mean,
                             "n_pairs": len(pairs), "n_images": len(files),
                             "n_fallback": int((~lm.detected).sum())}
    return results

"""LFW verification check of the recognizers themselves (§4, Table 5 protocol), each with its own alignment.

Pairs, 10-fold accuracy and TPR@FAR come from :mod:`deid_core.evaluate` (``lfw.read_pairs``,
``metrics.kfold_accuracy`` / ``metrics.tpr_at_far``: thresholds fitted on the other folds). Scores
are the negated distance in each network's own metric (euclidean for dlib, cosine otherwise).

Landmarks: the evaluation's shared, cached 68-point pass (:func:`faces.dataset_landmarks`,
the same landmarks Table 5 chips from); where no face is detected the predictor runs inside the
dataset's median detected box.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from deid_core.face import read_image
from deid_core.evaluate import metrics
from deid_core.evaluate.faces import Dataset, dataset_landmarks
from deid_core.evaluate.lfw import find_lfw_root, read_pairs


def embed_lfw(net, root: Path, files: list[str], landmarks: np.ndarray, progress: bool = True,
              batch: int = 64) -> np.ndarray:
    """Embeddings (N×D) of LFW files with ``net``'s own chips."""
    out = []
    for s in tqdm(range(0, len(files), batch), desc=f"embed {net.name}", disable=not progress):
        chips = []
        for i in range(s, min(s + batch, len(files))):
            img = read_image(Path(root) / files[i])
            chips.append(net.chip(img, landmarks[i]))
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
    ds = Dataset(root=root, files=files, identities=[f.split('/')[0] for f in files])
    landmarks, detected = dataset_landmarks(ds, progress=progress)
    results = {}
    for net in networks:
        emb = embed_lfw(net, root, files, landmarks, progress=progress)
        scores = -net.distance(emb[ia], emb[ib])
        acc = metrics.kfold_accuracy(scores, pairs.same, pairs.fold)
        tpr, far_m = metrics.tpr_at_far(scores, pairs.same, pairs.fold, far=far)
        results[net.name] = {"acc": acc.mean, "acc_std": acc.std, "tpr_at_far": tpr.mean,
                             "tpr_std": tpr.std, "far": far, "far_measured": far_m.mean,
                             "n_pairs": len(pairs), "n_images": len(files),
                             "n_fallback": int((~detected).sum())}
    return results

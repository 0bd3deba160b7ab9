"""Metric functions for the paper's automatic evaluation (Sec. 4, Tables 3-5).

One implementation of each metric; the tables, the CLI, the identity package and the tests call
these. Scores are *similarities* (higher = more likely the same person); pass ``-distance`` for
distance-based recognizers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deid_core.errors import DeidError


@dataclass
class FoldResult:
    """Mean ± std over folds, plus the per-fold values."""
    mean: float
    std: float
    per_fold: np.ndarray

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f}"


def _check_pairs(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, ...]:
    scores = np.asarray(scores, np.float64).ravel()
    same = np.asarray(same).astype(bool).ravel()
    folds = np.asarray(folds).ravel()
    if not (len(scores) == len(same) == len(folds)):
        raise DeidError(f"scores/same/folds lengths differ: {len(scores)}, {len(same)}, {len(folds)}")
    if not np.isfinite(scores).all():
        raise DeidError(f"{int((~np.isfinite(scores)).sum())} pair scores are not finite")
    if len(np.unique(folds)) < 2:
        raise DeidError("need at least 2 folds")
    return scores, same, folds


def threshold_at_far(negative_scores: np.ndarray, far: float) -> float:
    """Threshold t such that the fraction of negatives with score > t is at most ``far``.

    Accept a pair when ``score > t``. With n negatives, at most ``floor(far * n)`` exceed t.
    """
    neg = np.sort(np.asarray(negative_scores, np.float64))[::-1]
    if len(neg) == 0:
        raise DeidError("no mismatched pairs to choose a threshold on")
    m = int(np.floor(far * len(neg) + 1e-9))
    return float(neg[min(m, len(neg) - 1)])


def tpr_at_far(scores: np.ndarray, same: np.ndarray, folds: np.ndarray,
               far: float = 1e-3) -> tuple[FoldResult, FoldResult]:
    """Table 5's TPR at FAR: for each fold, the threshold is chosen on the mismatched pairs of
    the other folds (:func:`threshold_at_far`), then TPR (and FAR) measured on the held-out fold.

    Returns (TPR over folds, measured FAR over folds).
    """
    scores, same, folds = _check_pairs(scores, same, folds)
    tprs, fars = [], []
    for f in np.unique(folds):
        test = folds == f
        t = threshold_at_far(scores[~test & ~same], far)
        pos, neg = scores[test & same], scores[test & ~same]
        tprs.append(float((pos > t).mean()) if len(pos) else np.nan)
        fars.append(float((neg > t).mean()) if len(neg) else np.nan)
    tprs, fars = np.array(tprs), np.array(fars)
    return (FoldResult(float(np.nanmean(tprs)), float(np.nanstd(tprs)), tprs),
            FoldResult(float(np.nanmean(fars)), float(np.nanstd(fars)), fars))


def best_accuracy_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising verification accuracy (accept when ``score > t``)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    order = np.argsort(s)
    s, y = s[order], y[order]
    # candidate t between consecutive distinct scores, and below the minimum
    cand = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2])
    # accuracy(t at index k: all with index >= k accepted) = negatives below + positives at/above
    neg_below = np.concatenate([[0], np.cumsum(~y)[:-1]])
    pos_above = y.sum() - np.concatenate([[0], np.cumsum(y)[:-1]])
    acc = (neg_below + pos_above) / len(y)
    valid = np.concatenate([[True], s[1:] > s[:-1]])
    acc = np.where(valid, acc, -1)
    # also "accept nothing"
    k = int(np.argmax(acc))
    if (~y).mean() > acc[k]:
        return float(s[-1] + 1.0)
    return float(cand[k])


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> FoldResult:
    """LFW's standard 10-fold verification accuracy (threshold fitted on the other 9 folds)."""
    scores, same, folds = _check_pairs(scores, same, folds)
    accs = []
    for f in np.unique(folds):
        test = folds == f
        t = best_accuracy_threshold(scores[~test], same[~test])
        accs.append(float(((scores[test] > t) == same[test]).mean()))
    accs = np.array(accs)
    return FoldResult(float(accs.mean()), float(accs.std()), accs)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two N×D arrays."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return (a * b).sum(-1)


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Table 3's "face descriptor" distance: L2 between L2-normalised embeddings (0..2)."""
    return np.sqrt(np.maximum(2.0 - 2.0 * cosine_similarity(a, b), 0.0))


def ranks_from_similarity(sim: np.ndarray, true_index: np.ndarray) -> np.ndarray:
    """1-based rank of the true identity per row of a P×G similarity matrix (ties count in its favour)."""
    sim = np.asarray(sim)
    true_index = np.asarray(true_index, np.int64)
    if sim.ndim != 2 or len(true_index) != sim.shape[0]:
        raise DeidError(f"similarity matrix {sim.shape} does not match {len(true_index)} true indices")
    if (true_index < 0).any() or (true_index >= sim.shape[1]).any():
        raise DeidError("true identity index outside the gallery")
    true = sim[np.arange(len(sim)), true_index]
    return 1 + (sim > true[:, None]).sum(1)


def rank_summary(ranks: np.ndarray, gallery_size: int | None = None) -> dict:
    """Table 4's columns: median, mean ± SD, rank-1/rank-5 rates and median rank as % of gallery."""
    r = np.asarray(ranks, np.float64)
    out = {"n": int(len(r)), "median": float(np.median(r)), "mean": float(r.mean()),
           "sd": float(r.std()), "rank1": float((r <= 1).mean()), "rank5": float((r <= 5).mean())}
    if gallery_size:
        out["median_pct"] = 100.0 * out["median"] / gallery_size
        out["gallery_size"] = int(gallery_size)
    return out


INNER_EYES = (39, 42)
OUTER_EYES = (36, 45)


def inter_ocular(landmarks: np.ndarray, outer: bool = True) -> np.ndarray:
    """Inter-ocular distance of (…,68,2) landmarks (outer eye corners 36/45, the 300-W convention)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape[-2:] != (68, 2):
        raise DeidError(f"expected (...,68,2) landmarks, got {lm.shape}")
    i, j = OUTER_EYES if outer else INNER_EYES
    return np.linalg.norm(lm[..., i, :] - lm[..., j, :], axis=-1)


def nme(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Normalised mean error per face: mean point distance / inter-ocular distance of ``ref``."""
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    if pred.shape != ref.shape:
        raise DeidError(f"landmark shapes differ: {pred.shape} vs {ref.shape}")
    d = np.linalg.norm(pred - ref, axis=-1).mean(-1)
    return d / np.maximum(inter_ocular(ref), 1e-9)


def pixel_distance(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Table 3's "RGB values" distance: mean |a-b| over pixels and channels, 0-255 scale.

    With ``mask`` (H×W bool/float), the mean is taken over the masked pixels only.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise DeidError(f"image shapes differ: {a.shape} vs {b.shape}")
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if d.ndim == 3:
        d = d.mean(-1)
    if mask is None:
        return float(d.mean())
    m = np.asarray(mask, np.float64)
    if m.shape != d.shape:
        raise DeidError(f"mask shape {m.shape} does not match image {d.shape}")
    return float((d * m).sum() / max(m.sum(), 1e-9))

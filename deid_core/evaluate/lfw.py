"""LFW verification (Table 5): ``pairs.txt`` parsing, any LFW folder layout, TPR@FAR and accuracy.

The paper de-identifies the *second* image of every pair and reports the true-positive rate at
FAR = 1e-3 for two FaceNet models. Here each evaluator embeds both images (the second one
optionally after an image transform: de-ID or a baseline) and :mod:`metrics` computes TPR@FAR with
thresholds chosen on the mismatched pairs of the other folds, and 10-fold accuracy.
LFW-a (the shared stand-in) is grayscale and pre-aligned; the real LFW works the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from deid_core.errors import DeidError
from deid_core.evaluate import metrics
from deid_core.evaluate.conditions import (DEFAULT_EVALUATORS, condition_transforms, find_pairs,
                                           shared_dataset, load_evaluators)
from deid_core.evaluate.embed import embed_files
from deid_core.evaluate.faces import Dataset, dataset_landmarks
from deid_core.evaluate.table_writer import mean_sd, write_table
from deid_core.face import IMAGE_SUFFIXES


PAPER_TABLE5 = {  # evaluator -> (original, de-ID) TPR at FAR 1e-3 (mean ± std)
    "facenet-vggface2": ("0.986 ± 0.010", "0.038 ± 0.015"),
    "facenet-casia": ("0.965 ± 0.016", "0.035 ± 0.011"),
}


@dataclass
class Pairs:
    """LFW pairs: file paths relative to the dataset root, match flags and folds."""
    a: list[str]
    b: list[str]
    same: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    def subsample(self, per_fold: int, seed: int = 0) -> "Pairs":
        """Keep ``per_fold`` matched and ``per_fold`` mismatched pairs in every fold."""
        rng = np.random.default_rng(seed)
        keep: list[int] = []
        for f in np.unique(self.fold):
            for s in (True, False):
                idx = np.flatnonzero((self.fold == f) & (self.same == s))
                keep.extend(sorted(rng.choice(idx, min(per_fold, len(idx)), replace=False).tolist()))
        keep = sorted(keep)
        return Pairs([self.a[i] for i in keep], [self.b[i] for i in keep], self.same[keep], self.fold[keep])


def find_lfw_root(root: str | os.PathLike) -> Path:
    """The folder holding ``<person>/<person>_0001.jpg`` (the given folder or one level below,
    e.g. ``lfw/``, ``lfw-deepfunneled/``, ``lfw-a/lfw/``)."""
    root = Path(root)
    if not root.is_dir():
        raise DeidError(f"LFW folder not found: {root}")
    for cand in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        probe = cand / "Aaron_Eckhart"
        if probe.is_dir() or any((d / f"{d.name}_0001.jpg").is_file()
                                 for d in list(cand.iterdir())[:50] if d.is_dir()):
            return cand
    raise DeidError(f"no LFW person folders (e.g. {root}/Aaron_Eckhart/Aaron_Eckhart_0001.jpg) under {root}")


def _image_rel(root: Path, name: str, num: str) -> str:
    for ext in IMAGE_SUFFIXES:
        rel = f"{name}/{name}_{int(num):04d}{ext}"
        if (root / rel).is_file():
            return rel
    return f"{name}/{name}_{int(num):04d}.jpg"


def read_pairs(pairs_path: str | os.PathLike, root: str | os.PathLike) -> Pairs:
    """Parse LFW ``pairs.txt`` (view 2: header ``10 300``; or ``pairsDevTest.txt``: header ``500``).

    Matched lines ``name i j``, mismatched ``name1 i name2 j``. Every referenced image must
    exist under ``root`` (any layout accepted by :func:`find_lfw_root`); otherwise a DeidError
    lists the missing files.
    """
    pairs_path = Path(pairs_path)
    if not pairs_path.is_file():
        raise DeidError(f"pairs file not found: {pairs_path}")
    root = find_lfw_root(root)
    lines = [ln.split() for ln in pairs_path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise DeidError(f"pairs file is empty: {pairs_path}")
    head = lines[0]
    try:
        if len(head) == 2:
            n_folds, n_per = int(head[0]), int(head[1])
        elif len(head) == 1:
            n_folds, n_per = 1, int(head[0])
        else:
            raise ValueError
    except ValueError:
        raise DeidError(f"{pairs_path}: first line must be '<folds> <pairs per set>', got {' '.join(head)!r}")
    body = lines[1:]
    if len(body) != 2 * n_folds * n_per:
        raise DeidError(f"{pairs_path}: header says {n_folds} folds × 2 × {n_per} pairs = "
                        f"{2 * n_folds * n_per} lines, found {len(body)}")
    a, b, same, fold = [], [], [], []
    for k, parts in enumerate(body):
        if len(parts) == 3:
            a.append(_image_rel(root, parts[0], parts[1]))
            b.append(_image_rel(root, parts[0], parts[2]))
            same.append(True)
        elif len(parts) == 4:
            a.append(_image_rel(root, parts[0], parts[1]))
            b.append(_image_rel(root, parts[2], parts[3]))
            same.append(False)
        else:
            raise DeidError(f"{pairs_path}:{k + 2}: expected 3 or 4 fields, got {' '.join(parts)!r}")
        fold.append(k // (2 * n_per))
    missing = sorted({p for p in a + b if not (root / p).is_file()})
    if missing:
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DeidError(f"{pairs_path}: {len(missing)} referenced images are missing under {root}:\n"
                        f"  {shown}{more}")
    return Pairs(a, b, np.array(same, bool), np.array(fold, np.int64))


def pairs_dataset(pairs: Pairs, root: str | os.PathLike) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """A :class:`Dataset` over the pairs' unique images and the (a, b) indices into it."""
    root = find_lfw_root(root)
    files = sorted(set(pairs.a) | set(pairs.b))
    pos = {f: i for i, f in enumerate(files)}
    ds = Dataset(root=root, files=files, identities=[f.split("/")[0] for f in files])
    return ds, np.array([pos[f] for f in pairs.a]), np.array([pos[f] for f in pairs.b])


def verification_scores(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Pair similarity: cosine (every evaluator's embeddings are compared on the unit sphere)."""
    return metrics.cosine_similarity(emb_a, emb_b)


def verify(scores: np.ndarray, pairs: Pairs, far: float = 1e-3) -> dict:
    """TPR@FAR (other-fold thresholds), measured FAR and 10-fold accuracy for pair scores."""
    tpr, far_m = metrics.tpr_at_far(scores, pairs.same, pairs.fold, far=far)
    acc = metrics.kfold_accuracy(scores, pairs.same, pairs.fold)
    return {"tpr": tpr.mean, "tpr_std": tpr.std, "far_measured": far_m.mean,
            "acc": acc.mean, "acc_std": acc.std, "n_pairs": len(pairs),
            "n_neg_for_threshold": int(round((~pairs.same).sum() * (1 - 1 / len(np.unique(pairs.fold)))))}


def lfw_verification(net, pairs: Pairs, root: str | os.PathLike, landmarks_fn=None,
                     transforms: dict | None = None, far: float = 1e-3,
                     progress: bool = True) -> dict[str, dict]:
    """Table 5 for one evaluator: ``{"original": {...}, name: {...} for each transform}``.

    ``transforms``: name -> :data:`embed.ImageTransform` applied to the second image of each pair.
    ``landmarks_fn(ds) -> (landmarks, detected)`` defaults to the cached dlib pass.
    """
    ds, ia, ib = pairs_dataset(pairs, root)
    lm, det = (landmarks_fn or (lambda d: dataset_landmarks(d, progress=progress)))(ds)
    emb = embed_files(net, ds, lm, range(len(ds.files)), progress=progress)
    ea = emb[ia]
    out = {"original": verify(verification_scores(ea, emb[ib]), pairs, far)}
    out["original"]["face_detected"] = float(det.mean())
    for name, fn in (transforms or {}).items():
        eb = embed_files(net, ds, lm, ib, transform=fn, tag=name, progress=progress)
        out[name] = verify(verification_scores(ea, eb), pairs, far)
    return out


# ----------------------------------------------------------------------------- Table 5
def table5(evaluators: Sequence, pairs, root, transforms: dict | None = None, far: float = 1e-3,
           name: str = "table5_lfw", notes: Sequence[str] = (), progress: bool = True) -> pd.DataFrame:
    """Table 5: LFW TPR@FAR (and 10-fold accuracy) per evaluator, original vs each transform.

    ``evaluators``: identity networks (objects with ``name``, ``chip``, ``embed``). ``transforms``
    map a condition name (``deid``, ``blur``, ``pixelate``...) to ``fn(image, landmarks) -> image``
    applied to the second image of every pair.
    """
    rows = []
    for net in evaluators:
        res = lfw_verification(net, pairs, root, transforms=transforms, far=far, progress=progress)
        for cond, r in res.items():
            paper = PAPER_TABLE5.get(net.name, ("", ""))
            rows.append({"evaluator": net.name + (" (loss network!)" if net.name == "dlib" else ""),
                         "condition": cond, f"TPR@FAR={far:g}": mean_sd(r["tpr"], r["tpr_std"]),
                         "FAR measured": round(r["far_measured"], 4),
                         "10-fold accuracy": mean_sd(r["acc"], r["acc_std"]), "pairs": r["n_pairs"],
                         "paper": paper[0] if cond == "original" else (paper[1] if cond == "deid" else "")})
    df = pd.DataFrame(rows)
    n_neg = int(round((~pairs.same).sum() * 0.9))
    write_table(name, df, f"Table 5 — LFW verification, TPR at FAR = {far:g} (mean ± std over folds)", [
        f"Pairs: {len(pairs)} of LFW view 2 ({len(np.unique(pairs.fold))} folds); the second image of "
        f"each pair is transformed. Threshold per fold from the {n_neg} mismatched pairs of the other folds "
        f"(at most floor(FAR·n) of them above it).",
        f"Images: {root} — if this is LFW-a, it is grayscale and pre-aligned (the paper used colour LFW).",
        "Chips of modified images are cut at the original image's landmarks (detection failure never "
        "counts as de-identification).", *notes])
    return df


def run_lfw(evaluators: Sequence[str] = DEFAULT_EVALUATORS, lfw_root: str | None = None,
            pairs_path: str | None = None, per_fold: int | None = None, checkpoint: str | None = None,
            baselines: bool = True, weights: str | None = None, far: float = 1e-3, seed: int = 0,
            name: str = "table5_lfw", progress: bool = True, lam: float | None = None):
    """Table 5 (``deid eval lfw``)."""
    nets = load_evaluators(evaluators, weights)  # fail fast on missing weights
    root = Path(lfw_root) if lfw_root else shared_dataset("lfw-a")
    pairs_path = Path(pairs_path) if pairs_path else find_pairs(root)
    pairs = read_pairs(pairs_path, root)
    if per_fold:
        pairs = pairs.subsample(per_fold, seed)
    transforms, notes = condition_transforms(checkpoint, find_lfw_root(root) if baselines else None,
                                              seed, progress, lam)
    return table5(nets, pairs, root, transforms, far=far, name=name, notes=notes, progress=progress)

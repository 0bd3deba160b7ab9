"""Folder-per-person datasets and a cached 68-landmark pass over them (evaluation input side).

Every evaluator chips faces with its own alignment from the 68 landmarks (``identity`` API:
``embed_faces(image, [landmarks68])``), so the expensive detection is done once per dataset and
cached under ``paths.cache_dir() / "eval"``; the tables and the recognisers' own LFW check share
it. Detection is :class:`~deid_core.face.FaceAligner`'s (the kit's default detector + dlib's
68-point predictor), retried on the image enlarged 2× when nothing is found. Where no face is
found at all (LFW-a is grayscale and pre-aligned, so the face is always near the same place),
the predictor runs inside the dataset's median detected box and the image is flagged
``detected=False``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import IMAGE_SUFFIXES, Face, FaceAligner, read_image

#: cache format tag (bumped when the fallback rule changed)
CACHE_TAG = "lm68b"


@dataclass
class Dataset:
    """A folder-per-person face dataset: ``root/<identity>/<image>``."""
    root: Path
    files: list[str]          # relative paths, sorted
    identities: list[str]     # identity name per file

    @property
    def names(self) -> list[str]:
        return sorted(set(self.identities))

    def path(self, i: int) -> Path:
        return self.root / self.files[i]


def scan_folder_dataset(root: str | os.PathLike, max_identities: int | None = None) -> Dataset:
    """List ``root/<identity>/*.jpg|png`` (any LFW/CelebA-style layout, one folder per person)."""
    root = Path(root)
    if not root.is_dir():
        raise DeidError(f"dataset folder not found: {root}")
    files: list[str] = []
    ids: list[str] = []
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if max_identities is not None:
        dirs = dirs[:max_identities]
    for d in dirs:
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                files.append(f"{d.name}/{f.name}")
                ids.append(d.name)
    if not files:
        raise DeidError(f"no images found in a folder-per-person layout under {root} "
                        f"(expected {root}/<person>/<image>.jpg)")
    return Dataset(root=root, files=files, identities=ids)


class LandmarkDetector:
    """Largest face's 68 landmarks in an RGB image, or ``None``.

    Uses :class:`~deid_core.face.FaceAligner`; images whose short side is below
    ``upsample_below`` px (e.g. CelebA aligned at 89×109) are searched with one level of
    upsampling from the start, larger ones only when the plain pass finds nothing.
    """

    def __init__(self, upsample_below: int = 160) -> None:
        self.upsample_below = upsample_below
        self._aligners = {0: FaceAligner(upsample=0), 1: FaceAligner(upsample=1)}

    def locate(self, image: np.ndarray) -> Face | None:
        """The largest face (box and 68 landmarks), or ``None``."""
        up = 1 if min(image.shape[:2]) < self.upsample_below else 0
        faces = self._aligners[up].detect(image)
        if not faces and up == 0:
            faces = self._aligners[1].detect(image)
        return faces[0] if faces else None  # detect() sorts largest first

    def fit(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """68 landmarks inside a given box (x0, y0, x1, y1) without detection."""
        return self._aligners[0].landmarks(image, box)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        face = self.locate(image)
        return None if face is None else np.asarray(face.landmarks, np.float32)


def _root_key(root: Path, tag: str) -> str:
    return f"{tag}-{root.name}-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]}"


def _cache_key(root: Path, files: Sequence[str], tag: str) -> str:
    h = hashlib.sha1()
    for f in files:
        h.update(f.encode() + b"\n")
    return f"{_root_key(root, tag)}-{h.hexdigest()[:12]}"


def _from_superset(folder: Path, root: Path, files: Sequence[str]):
    """Landmarks for ``files`` from any cached pass over the same root that contains them all."""
    for cand in sorted(folder.glob(f"{_root_key(root, CACHE_TAG)}-*.npz")):
        z = np.load(cand)
        pos = {str(f): i for i, f in enumerate(z["files"])}
        if all(f in pos for f in files):
            sel = np.array([pos[f] for f in files], np.int64)
            return z["landmarks"][sel], z["detected"][sel]
    return None


def dataset_landmarks(ds: Dataset, indices: Sequence[int] | None = None,
                      detector: LandmarkDetector | None = None,
                      cache: bool = True, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N,68,2) landmarks and (N,) detected flags for ``ds`` files (``indices`` subset), cached
    (a cached pass over a superset of the files, e.g. the whole folder, is reused). Images
    without a detection get the predictor's landmarks inside the median detected box."""
    idx = list(range(len(ds.files))) if indices is None else list(indices)
    files = [ds.files[i] for i in idx]
    path = paths.cache_dir() / "eval" / f"{_cache_key(ds.root, files, CACHE_TAG)}.npz"
    if cache:
        hit = _from_superset(path.parent, ds.root, files)
        if hit is not None:
            return hit
    detector = detector or LandmarkDetector()
    lms = np.zeros((len(idx), 68, 2), np.float32)
    det = np.zeros(len(idx), bool)
    boxes = []
    for k, i in enumerate(tqdm(idx, desc=f"landmarks {ds.root.name}", disable=not progress)):
        face = detector.locate(read_image(ds.path(i)))
        if face is not None:
            lms[k], det[k] = face.landmarks, True
            boxes.append(face.box)
    if boxes and not det.all():
        box = np.median(np.stack(boxes), axis=0)
        for k in np.flatnonzero(~det):
            lms[k] = detector.fit(read_image(ds.path(idx[k])), box)
    if cache:
        with paths.atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, landmarks=lms, detected=det, files=np.array(files))
    return lms, det

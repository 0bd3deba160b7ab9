"""The image conditions every table compares (paper §4): independent evaluators by name, the de-ID
transform of a checkpoint, the blur / pixelation baselines, and faces loaded from a folder.

Evaluators are independent recognizers; ``dlib`` is the loss network and only ever an extra,
labelled row.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.evaluate.baselines import (blur_transform, pixelate_transform,
                                          sigma_for_pixel_distance)
from deid_core.evaluate.faces import LandmarkDetector, dataset_landmarks, scan_folder_dataset
from deid_core.face import Face, IMAGE_SUFFIXES, read_image
from deid_core.identity import load_identity_network
from deid_core.pipeline import Deidentifier


DEFAULT_EVALUATORS = ("facenet-casia", "sface")


MEMO_BYTES = 512 * 2**20   # de-ID outputs kept in memory so several evaluators reuse them


TARGET_PIXEL_DISTANCE = 3.0  # mean of the paper's Table 3 "Our high" RGB distances (2.72, 2.35, 3.92)


def load_evaluators(names: Sequence[str], weights: str | None = None, device: str = "cpu") -> list:
    """Independent recognizers by name (``dlib`` is the loss network: allowed only as a labelled extra)."""
    nets = []
    for n in names:
        kw = {"weights": weights} if (weights and n in ("arcface", "facenet-vggface2")) else {}
        nets.append(load_identity_network(n, device=device, **kw))
    return nets


def deid_transform(checkpoint: str | os.PathLike, target: str | os.PathLike | None = None,
                   lam: float | None = None, device: str = "cpu"):
    """``fn(image, landmarks) -> image`` running our model (``pipeline.Deidentifier``) on the face.

    The target is the image itself (the paper's default at inference when no other target is
    given), unless ``target`` names an image file.
    """
    deid = Deidentifier.from_checkpoint(checkpoint, device)
    st = Path(checkpoint).stat()
    fixed = deid.embed_target(read_image(target)) if target else None

    memo: OrderedDict[bytes, np.ndarray] = OrderedDict()   # evaluators share one de-ID per image
    memo_bytes = 0
    # without a target image each face is its own target, embedded from the aligned crop that
    # step e receives (crop_fn(None)): the given landmarks, no re-detection
    net = deid.crop_fn(fixed, lam)

    def fn(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        nonlocal memo_bytes
        lm = np.asarray(landmarks, np.float32)
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes() + lm.tobytes()).digest()
        if key in memo:
            memo.move_to_end(key)
            return memo[key].copy()
        face = Face(box=np.r_[lm.min(0), lm.max(0)].astype(np.float32), landmarks=lm)
        out, _ = deid.aligner.process(image, net, faces=[face])
        memo[key] = out
        memo_bytes += out.nbytes
        while len(memo) > 1 and memo_bytes > MEMO_BYTES:
            memo_bytes -= memo.popitem(last=False)[1].nbytes
        return out.copy()
    fn.cache_tag = (f"deid-{Path(checkpoint).stem}-{int(st.st_mtime)}-{st.st_size}-lam{lam}"  # type: ignore[attr-defined]
                    f"-t{Path(target).stem if target else 'self'}")
    return fn


def baseline_transforms(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                        target_pixel_distance: float = TARGET_PIXEL_DISTANCE,
                        blocks: int = 8) -> tuple[dict, dict]:
    """Blur (σ fitted so pixel distance ≈ target on ``images``) and pixelation transforms + settings."""
    s = sigma_for_pixel_distance(images, landmarks, target_pixel_distance)
    return ({"blur": blur_transform(s), "pixelate": pixelate_transform(blocks)},
            {"blur_sigma_rel_interocular": round(s, 4), "target_pixel_distance": target_pixel_distance,
             "pixelate_blocks": blocks})


def fit_images(ds, lm, n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds.files), min(n, len(ds.files)), replace=False)
    return [read_image(ds.path(i)) for i in idx], [lm[i] for i in idx]


def condition_transforms(checkpoint, baseline_root: Path | None, seed: int, progress: bool,
                          lam: float | None = None) -> tuple[dict, list[str]]:
    """The image conditions beside "original": de-ID (when a checkpoint is given; ``lam`` for a
    λ-conditioned one) and the blur / pixelation baselines fitted on ``baseline_root`` (when
    given), with notes for the table."""
    transforms: dict = {}
    notes = []
    if checkpoint:
        transforms["deid"] = deid_transform(checkpoint, lam=lam)
        notes.append(f"de-ID: checkpoint {checkpoint}" + (f", λ = {lam:g}" if lam is not None else ""))
    else:
        notes.append("No de-ID rows: no checkpoint given (pass --checkpoint).")
    if baseline_root is not None:
        ds = scan_folder_dataset(baseline_root)
        lm, _ = dataset_landmarks(ds, progress=progress)
        bt, info = baseline_transforms(*fit_images(ds, lm, seed=seed))
        transforms.update(bt)
        notes.append(f"Baselines: blur σ = {info['blur_sigma_rel_interocular']} × inter-ocular distance "
                     f"(fitted so mean RGB distance ≈ {info['target_pixel_distance']}, the paper's Table 3 level), "
                     f"pixelation {info['pixelate_blocks']} blocks across the face.")
    return transforms, notes


def shared_dataset(sub: str) -> Path:
    root = paths.shared_data_dir()
    if root is None or not (root / sub).is_dir():
        raise DeidError(f"no dataset folder given and the shared data's {sub}/ is absent: pass the "
                        f"folder explicitly (e.g. --lfw PATH)")
    return root / sub


def find_pairs(root: Path) -> Path:
    for cand in (root / "pairs.txt", root.parent / "pairs.txt"):
        if cand.is_file():
            return cand
    raise DeidError(f"pairs.txt not found in {root} or its parent: pass --pairs PATH")


def load_faces(folder: str | os.PathLike, max_images: int | None = None) -> tuple[list, list, list[str]]:
    """Images (RGB) of a flat folder (or folder-per-person) with one detected face each: (images, landmarks, names)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DeidError(f"no images found in {folder}")
    det = LandmarkDetector()
    ims, lms, names = [], [], []
    for f in files:
        im = read_image(f)
        lm = det(im)
        if lm is None:
            continue
        ims.append(im), lms.append(lm), names.append(f.stem)
        if max_images and len(ims) >= max_images:
            break
    if not ims:
        raise DeidError(f"no face found in the images of {folder}")
    return ims, lms, names

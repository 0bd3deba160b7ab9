"""Drivers behind ``deid eval ...``: evaluators, baseline/de-ID transforms, and one function per table.

The CLI, notebooks and the report all call these, so a number in ``results/`` can be recomputed
with one command.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from deid_core import paths
from deid_core.errors import DeidError

DEFAULT_EVALUATORS = ("facenet-casia", "sface")
TARGET_PIXEL_DISTANCE = 3.0  # mean of the paper's Table 3 "Our high" RGB distances (2.72, 2.35, 3.92)


def load_evaluators(names: Sequence[str], weights: str | None = None, device: str = "cpu") -> list:
    """Independent recognizers by name (``dlib`` is the loss network: allowed only as a labelled extra)."""
    from deid_core.identity import load_identity_network
    nets = []
    for n in names:
        kw = {"weights": weights} if (weights and n in ("arcface", "facenet-vggface2")) else {}
        nets.append(load_identity_network(n, device=device, **kw))
    return nets


def deid_transform(checkpoint: str | os.PathLike, target: str | os.PathLike | None = None,
                   lam: float | None = None, device: str = "cpu"):
    """``fn(image, landmarks) -> image`` running our model (``inference.Deidentifier``) on the face.

    The target is the image itself (the paper's default at inference when no other target is
    given), unless ``target`` names an image file.
    """
    try:
        from deid_core.inference import Deidentifier
    except ImportError as exc:
        raise DeidError("de-identification needs deid_core.inference (not available yet)") from exc
    from deid_core.align import Face
    from deid_core.evaluate.faces import load_rgb
    deid = Deidentifier.from_checkpoint(checkpoint, device)
    st = Path(checkpoint).stat()
    fixed = deid.embed_target(load_rgb(target)) if target else None

    def fn(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        emb = fixed if fixed is not None else deid.embed_target(image)
        lm = np.asarray(landmarks, np.float32)
        face = Face(box=np.r_[lm.min(0), lm.max(0)].astype(np.float32), landmarks=lm)
        net = deid.net_fn(emb, lam)
        out, _ = deid.aligner.process(image, net, faces=[face]) if hasattr(deid, "aligner") else deid(image, emb, lam)
        return out
    fn.cache_tag = (f"deid-{Path(checkpoint).stem}-{int(st.st_mtime)}-{st.st_size}-lam{lam}"  # type: ignore[attr-defined]
                    f"-t{Path(target).stem if target else 'self'}")
    return fn


def baseline_transforms(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                        target_pixel_distance: float = TARGET_PIXEL_DISTANCE,
                        blocks: int = 8) -> tuple[dict, dict]:
    """Blur (σ fitted so pixel distance ≈ target on ``images``) and pixelation transforms + settings."""
    from deid_core.evaluate.baselines import blur_transform, pixelate_transform, sigma_for_pixel_distance
    s = sigma_for_pixel_distance(images, landmarks, target_pixel_distance)
    return ({"blur": blur_transform(s), "pixelate": pixelate_transform(blocks)},
            {"blur_sigma_rel_interocular": round(s, 4), "target_pixel_distance": target_pixel_distance,
             "pixelate_blocks": blocks})


def _fit_images(ds, lm, n: int = 24, seed: int = 0):
    from deid_core.evaluate.faces import load_rgb
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds.files), min(n, len(ds.files)), replace=False)
    return [load_rgb(ds.path(i)) for i in idx], [lm[i] for i in idx]


def run_lfw(evaluators: Sequence[str] = DEFAULT_EVALUATORS, lfw_root: str | None = None,
            pairs_path: str | None = None, per_fold: int | None = None, checkpoint: str | None = None,
            baselines: bool = True, weights: str | None = None, far: float = 1e-3, seed: int = 0,
            name: str = "table5_lfw", progress: bool = True):
    """Table 5 (``deid eval lfw``)."""
    from deid_core.evaluate.faces import dataset_landmarks, scan_folder_dataset
    from deid_core.evaluate.lfw import find_lfw_root, read_pairs
    from deid_core.evaluate.tables import table5
    root = Path(lfw_root) if lfw_root else _shared("lfw-a")
    pairs_path = Path(pairs_path) if pairs_path else _find_pairs(root)
    pairs = read_pairs(pairs_path, root)
    if per_fold:
        pairs = pairs.subsample(per_fold, seed)
    transforms: dict = {}
    notes = []
    if checkpoint:
        transforms["deid"] = deid_transform(checkpoint)
        notes.append(f"de-ID: checkpoint {checkpoint}")
    else:
        notes.append("No de-ID rows: no checkpoint given (pass --checkpoint).")
    if baselines:
        ds = scan_folder_dataset(find_lfw_root(root))
        lm, _ = dataset_landmarks(ds, progress=progress)
        bt, info = baseline_transforms(*_fit_images(ds, lm, seed=seed))
        transforms.update(bt)
        notes.append(f"Baselines: blur σ = {info['blur_sigma_rel_interocular']} × inter-ocular distance "
                     f"(fitted so mean RGB distance ≈ {info['target_pixel_distance']}, the paper's Table 3 level), "
                     f"pixelation {info['pixelate_blocks']} blocks across the face.")
    nets = load_evaluators(evaluators, weights)
    return table5(nets, pairs, root, transforms, far=far, name=name, notes=notes, progress=progress)


def run_rank(evaluator: str = "sface", lfw_root: str | None = None, extra: Sequence[str] | None = None,
             checkpoint: str | None = None, baselines: bool = True, weights: str | None = None,
             n_probe_identities: int | None = None, max_probes_per_identity: int = 10,
             max_gallery_images: int | None = None, max_extra_identities: int | None = None,
             seed: int = 0, name: str = "table4_rank", progress: bool = True):
    """Table 4 (``deid eval rank``)."""
    from deid_core.evaluate.faces import dataset_landmarks, scan_folder_dataset
    from deid_core.evaluate.tables import table4
    root = Path(lfw_root) if lfw_root else _shared("lfw-a")
    if extra is None:
        extra = [str(_shared("celeba-aligned-10k"))] if paths.shared_data_dir() and lfw_root is None else []
    transforms: dict = {}
    notes = []
    if checkpoint:
        transforms["deid"] = deid_transform(checkpoint)
        notes.append(f"de-ID: checkpoint {checkpoint}")
    else:
        notes.append("No de-ID rows: no checkpoint given (pass --checkpoint).")
    if baselines:
        ds = scan_folder_dataset(root)
        lm, _ = dataset_landmarks(ds, progress=progress)
        bt, info = baseline_transforms(*_fit_images(ds, lm, seed=seed))
        transforms.update(bt)
        notes.append(f"Baselines: blur σ = {info['blur_sigma_rel_interocular']} × inter-ocular distance, "
                     f"pixelation {info['pixelate_blocks']} blocks.")
    net = load_evaluators([evaluator], weights)[0]
    return table4(net, root, extra, transforms, max_probes_per_identity=max_probes_per_identity,
                  n_probe_identities=n_probe_identities, max_gallery_images=max_gallery_images,
                  max_extra_identities=max_extra_identities, seed=seed, name=name, notes=notes,
                  progress=progress)


def _shared(sub: str) -> Path:
    root = paths.shared_data_dir()
    if root is None or not (root / sub).is_dir():
        raise DeidError(f"no dataset folder given and the shared data's {sub}/ is absent: pass the "
                        f"folder explicitly (e.g. --lfw PATH)")
    return root / sub


def _find_pairs(root: Path) -> Path:
    for cand in (root / "pairs.txt", root.parent / "pairs.txt"):
        if cand.is_file():
            return cand
    raise DeidError(f"pairs.txt not found in {root} or its parent: pass --pairs PATH")

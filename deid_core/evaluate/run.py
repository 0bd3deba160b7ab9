"""Drivers behind ``deid eval ...``: evaluators, baseline/de-ID transforms, and one function per table.

The CLI, notebooks and the report all call these, so a number in ``results/`` can be recomputed
with one command.
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

DEFAULT_EVALUATORS = ("facenet-casia", "sface")
MEMO_BYTES = 512 * 2**20   # de-ID outputs kept in memory so several evaluators reuse them
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
    from deid_core.inference import Deidentifier
    from deid_core.align import Face
    from deid_core.align import read_image
    deid = Deidentifier.from_checkpoint(checkpoint, device)
    st = Path(checkpoint).stat()
    fixed = deid.embed_target(read_image(target)) if target else None

    memo: OrderedDict[bytes, np.ndarray] = OrderedDict()   # evaluators share one de-ID per image
    memo_bytes = 0
    # without a target image each face is its own target, embedded from the aligned crop that
    # step e receives (net_fn(None)): the given landmarks, no re-detection
    net = deid.net_fn(fixed, lam)

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
    from deid_core.evaluate.baselines import blur_transform, pixelate_transform, sigma_for_pixel_distance
    s = sigma_for_pixel_distance(images, landmarks, target_pixel_distance)
    return ({"blur": blur_transform(s), "pixelate": pixelate_transform(blocks)},
            {"blur_sigma_rel_interocular": round(s, 4), "target_pixel_distance": target_pixel_distance,
             "pixelate_blocks": blocks})


def _fit_images(ds, lm, n: int = 24, seed: int = 0):
    from deid_core.align import read_image
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds.files), min(n, len(ds.files)), replace=False)
    return [read_image(ds.path(i)) for i in idx], [lm[i] for i in idx]


def run_lfw(evaluators: Sequence[str] = DEFAULT_EVALUATORS, lfw_root: str | None = None,
            pairs_path: str | None = None, per_fold: int | None = None, checkpoint: str | None = None,
            baselines: bool = True, weights: str | None = None, far: float = 1e-3, seed: int = 0,
            name: str = "table5_lfw", progress: bool = True, lam: float | None = None):
    """Table 5 (``deid eval lfw``)."""
    from deid_core.evaluate.lfw import find_lfw_root, read_pairs
    from deid_core.evaluate.tables import table5
    nets = load_evaluators(evaluators, weights)  # fail fast on missing weights
    root = Path(lfw_root) if lfw_root else _shared("lfw-a")
    pairs_path = Path(pairs_path) if pairs_path else _find_pairs(root)
    pairs = read_pairs(pairs_path, root)
    if per_fold:
        pairs = pairs.subsample(per_fold, seed)
    transforms, notes = _condition_transforms(checkpoint, find_lfw_root(root) if baselines else None,
                                              seed, progress, lam)
    return table5(nets, pairs, root, transforms, far=far, name=name, notes=notes, progress=progress)


def run_rank(evaluator: str = "sface", lfw_root: str | None = None, extra: Sequence[str] | None = None,
             checkpoint: str | None = None, baselines: bool = True, weights: str | None = None,
             n_probe_identities: int | None = None, max_probes_per_identity: int = 10,
             max_gallery_images: int | None = None, max_extra_identities: int | None = None,
             seed: int = 0, name: str = "table4_rank", progress: bool = True,
             lam: float | None = None):
    """Table 4 (``deid eval rank``)."""
    net = load_evaluators([evaluator], weights)[0]  # fail fast on missing weights
    from deid_core.evaluate.tables import table4
    root = Path(lfw_root) if lfw_root else _shared("lfw-a")
    if extra is None:
        extra = [str(_shared("celeba-aligned-10k"))] if paths.shared_data_dir() and lfw_root is None else []
    transforms, notes = _condition_transforms(checkpoint, root if baselines else None, seed, progress,
                                              lam)
    return table4(net, root, extra, transforms, max_probes_per_identity=max_probes_per_identity,
                  n_probe_identities=n_probe_identities, max_gallery_images=max_gallery_images,
                  max_extra_identities=max_extra_identities, seed=seed, name=name, notes=notes,
                  progress=progress)


def _condition_transforms(checkpoint, baseline_root: Path | None, seed: int, progress: bool,
                          lam: float | None = None) -> tuple[dict, list[str]]:
    """The image conditions beside "original": de-ID (when a checkpoint is given; ``lam`` for a
    λ-conditioned one) and the blur / pixelation baselines fitted on ``baseline_root`` (when
    given), with notes for the table."""
    from deid_core.evaluate.faces import dataset_landmarks, scan_folder_dataset
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
        bt, info = baseline_transforms(*_fit_images(ds, lm, seed=seed))
        transforms.update(bt)
        notes.append(f"Baselines: blur σ = {info['blur_sigma_rel_interocular']} × inter-ocular distance "
                     f"(fitted so mean RGB distance ≈ {info['target_pixel_distance']}, the paper's Table 3 level), "
                     f"pixelation {info['pixelate_blocks']} blocks across the face.")
    return transforms, notes


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


def load_faces(folder: str | os.PathLike, max_images: int | None = None) -> tuple[list, list, list[str]]:
    """Images (RGB) of a flat folder (or folder-per-person) with one detected face each: (images, landmarks, names)."""
    from deid_core.evaluate.faces import IMAGE_SUFFIXES, LandmarkDetector, read_image
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


def run_table3(images_dir: str | None = None, checkpoint: str | None = None,
               evaluators: Sequence[str] = DEFAULT_EVALUATORS, donors_dir: str | None = None,
               max_images: int | None = 8, weights: str | None = None, name: str = "table3_distances",
               lam: float | None = None):
    """Table 3 (``deid eval table3``): RGB and descriptor distance for de-ID and the baselines
    (blur with σ matched to de-ID's pixel distance, pixelation, the [41]-style swap)."""
    from deid_core.evaluate import metrics
    from deid_core.evaluate.baselines import swap_transform
    from deid_core.evaluate.tables import table3
    images_dir = images_dir or str(paths.sample_dir() / "portraits")
    ims, lms, names = load_faces(images_dir, max_images)
    nets = load_evaluators(evaluators, weights)
    outputs: dict = {}
    notes = [f"Images: {len(ims)} from {images_dir}."]
    target = TARGET_PIXEL_DISTANCE
    if checkpoint:
        fn = deid_transform(checkpoint, lam=lam)
        outputs["deid"] = [fn(im, lm) for im, lm in zip(ims, lms)]
        target = float(np.mean([metrics.pixel_distance(a, b) for a, b in zip(ims, outputs["deid"])]))
        lam_note = f", λ = {lam:g}" if lam is not None else ""
        notes.append(f"de-ID: checkpoint {checkpoint}{lam_note}; blur σ fitted to its mean RGB distance {target:.2f}.")
    else:
        notes.append(f"No de-ID rows (no checkpoint); blur σ fitted to the paper's level {target}.")
    bt, info = baseline_transforms(ims, lms, target)
    for k, fn in bt.items():
        outputs[k] = [fn(im, lm) for im, lm in zip(ims, lms)]
    d_ims, d_lms, _ = (load_faces(donors_dir) if donors_dir else (ims, lms, names))
    d_emb = np.concatenate([nets[0].embed_faces(im, [lm]) for im, lm in zip(d_ims, d_lms)])
    sw = swap_transform(d_ims, d_lms, d_emb, nets[0])
    outputs["swap [41]"] = [sw(im, lm) for im, lm in zip(ims, lms)]
    notes.append(f"swap [41]: pixel-nearest donor among {len(d_ims)} faces that {nets[0].name} calls a "
                 f"different person, pasted through our alignment + hull merge.")
    notes.append(f"blur σ = {info['blur_sigma_rel_interocular']} × inter-ocular; pixelation "
                 f"{info['pixelate_blocks']} blocks.")
    return table3(ims, lms, outputs, nets, labels=names, name=name, notes=notes), outputs


def run_lambda(images_dir: str | None, checkpoints: dict[float, str], evaluators: Sequence[str] = DEFAULT_EVALUATORS,
               max_images: int | None = 4, weights: str | None = None, name: str = "fig9_lambda"):
    """Fig. 9 (``deid eval lambda``): ``checkpoints`` maps λ to a checkpoint (the same path for
    every λ = one λ-conditioned model)."""
    from deid_core.evaluate.lambda_sweep import lambda_sweep
    ims, lms, names = load_faces(images_dir or str(paths.sample_dir() / "portraits"), max_images)
    transforms = {lam: deid_transform(ck, lam=lam) for lam, ck in checkpoints.items()}
    return lambda_sweep(ims, lms, transforms, load_evaluators(evaluators, weights), name=name, labels=names)


def run_attributes(images_dir: str | None = None, checkpoint: str | None = None, max_images: int | None = 16,
                   name: str = "attributes"):
    """Attribute preservation (``deid eval attributes``) for de-ID (if a checkpoint) and the baselines."""
    from deid_core.evaluate.attributes import attributes_table
    ims, lms, _ = load_faces(images_dir or str(paths.sample_dir() / "portraits"), max_images)
    outs = {}
    if checkpoint:
        fn = deid_transform(checkpoint)
        outs["deid"] = [fn(im, lm) for im, lm in zip(ims, lms)]
    bt, _ = baseline_transforms(ims, lms)
    for k, fn in bt.items():
        outs[k] = [fn(im, lm) for im, lm in zip(ims, lms)]
    return attributes_table(ims, outs, name=name,
                            notes=[] if checkpoint else ["No de-ID rows: no checkpoint given."])


def run_gallery(dataset: str, out: str, evaluator: str = "sface", weights: str | None = None,
                chunk: int = 512):
    """Build a gallery index (``deid eval gallery``) from any folder-per-person dataset."""
    from deid_core.evaluate.embed import embed_files
    from deid_core.evaluate.faces import dataset_landmarks, scan_folder_dataset
    from deid_core.evaluate.gallery import build_gallery
    ds = scan_folder_dataset(dataset)
    lm, _ = dataset_landmarks(ds)
    net = load_evaluators([evaluator], weights)[0]
    return build_gallery(ds, lambda f: embed_files(net, ds, lm, f, progress=False), out, chunk=chunk)

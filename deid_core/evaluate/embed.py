"""Evaluator embeddings of dataset images (optionally after a transform), cached and resumable.

An image transform ``fn(image_rgb, landmarks68) -> image_rgb`` stands for de-identification or a
baseline (blur, pixelation). Chips of the transformed image are cut at the *original* face's
landmarks, so a detector failing on a modified face never counts as de-identification (an upper
bound on recognisability; detection retention is reported separately by ``attributes``).
Embeddings are cached per (evaluator, transform, dataset) under ``paths.cache_dir()/eval`` and
saved every ``save_every`` images, so long runs resume.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import read_image
from deid_core.evaluate.faces import Dataset

ImageTransform = Callable[[np.ndarray, np.ndarray], np.ndarray]


def net_fingerprint(net) -> str:
    """Short hash of an evaluator's class and simple settings (chip padding, standardisation,
    weights path...), so embeddings cached by a differently configured network are not reused."""
    simple = {k: str(v) for k, v in sorted(vars(net).items())
              if isinstance(v, (int, float, str, bool, Path)) and not k.startswith("_")}
    info = getattr(net, "info", None)
    key = f"{type(net).__module__}.{type(net).__qualname__}|{info}|{simple}"
    return hashlib.sha1(key.encode()).hexdigest()[:8]


def _cache_path(net, ds: Dataset, tag: str) -> Path:
    h = hashlib.sha1(str(ds.root.resolve()).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in tag)
    return paths.cache_dir() / "eval" / f"emb-{net.name}-{net_fingerprint(net)}-{safe}-{ds.root.name}-{h}.npz"


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    z = np.load(path)
    return {str(k): v for k, v in zip(z["keys"], z["emb"])}


def _save_cache(path: Path, store: dict[str, np.ndarray]) -> None:
    keys = sorted(store)
    with paths.atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, keys=np.array(keys), emb=np.stack([store[k] for k in keys]))


def embed_files(net, ds: Dataset, landmarks: np.ndarray, indices: Sequence[int],
                transform: ImageTransform | None = None, tag: str = "original",
                cache: bool = True, batch: int = 64, save_every: int = 512,
                progress: bool = True) -> np.ndarray:
    """Embeddings (N×D float32) of ``ds`` files ``indices`` by evaluator ``net``.

    ``landmarks``: (len(ds.files), 68, 2), e.g. from :func:`faces.dataset_landmarks`.
    ``tag`` names the transform in the cache (different transforms must use different tags); a
    transform's own ``cache_tag`` attribute (set by the baselines, with their parameters) wins.
    """
    tag = getattr(transform, "cache_tag", tag)
    if transform is not None and tag == "original":
        raise DeidError("a transform needs its own cache tag (tag='original' is the unmodified images)")
    indices = [int(i) for i in indices]
    if len(landmarks) != len(ds.files):
        raise DeidError(f"landmarks for {len(landmarks)} files but the dataset has {len(ds.files)}")
    path = _cache_path(net, ds, tag)
    store = _load_cache(path) if cache else {}
    todo = [i for i in dict.fromkeys(indices) if ds.files[i] not in store]
    done_since_save = 0
    bar = tqdm(total=len(todo), desc=f"{net.name}/{tag}", disable=not progress or not todo)
    for s in range(0, len(todo), batch):
        chunk = todo[s:s + batch]
        chips = []
        for i in chunk:
            img = read_image(ds.path(i))
            if transform is not None:
                img = transform(img, landmarks[i])
            chips.append(net.chip(img, landmarks[i]))
        emb = net.embed(np.stack(chips))
        for i, e in zip(chunk, emb):
            store[ds.files[i]] = e.astype(np.float32)
        bar.update(len(chunk))
        done_since_save += len(chunk)
        if cache and done_since_save >= save_every:
            _save_cache(path, store)
            done_since_save = 0
    bar.close()
    if cache and done_since_save:
        _save_cache(path, store)
    return np.stack([store[ds.files[i]] for i in indices]) if indices else np.zeros((0, 0), np.float32)

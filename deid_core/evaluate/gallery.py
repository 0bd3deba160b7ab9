"""Large-gallery identification (Table 4, §4): an index of mean embeddings per identity.

The paper ranks the true identity among 54,000 persons with ArcFace. Here a gallery index is
built from any folder-per-person dataset(s): embeddings are streamed identity chunk by chunk
(tqdm), each chunk saved as it completes (so an interrupted build resumes), then merged into
``means.npy`` (G×D float32, L2-normalised), ``counts.npy`` and ``names.txt``. Probes are ranked
by cosine similarity in batches (one BLAS matmul per batch), so a 54,000 × 512 gallery
(105 MB) is ranked exactly with 2·G·D = 55 MFLOP per probe: ~1,000 probes/s needs ~55 GFLOPS
of sgemm (one idle AVX-512 core, or 2-3 AVX2 cores). Batches of 256 probes keep the 256×G score
block (55 MB) small; 1,024 was 1.6× slower here (memory-bound). See ``benchmarks/bench_gallery.py``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Callable

import numpy as np
from tqdm import tqdm

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.evaluate.conditions import load_evaluators
from deid_core.evaluate.embed import embed_files
from deid_core.evaluate.faces import dataset_landmarks, scan_folder_dataset


@dataclass
class GalleryIndex:
    """Mean (L2-normalised) embedding per identity."""
    names: list[str]
    means: np.ndarray    # G×D float32, unit rows
    counts: np.ndarray   # G int, images per identity

    def __post_init__(self) -> None:
        self.means = _normalise(self.means)
        self.counts = np.asarray(self.counts, np.int64)
        if len(self.names) != len(self.means) or len(self.counts) != len(self.means):
            raise DeidError(f"gallery sizes differ: {len(self.names)} names, {len(self.means)} "
                            f"means, {len(self.counts)} counts")
        self._lookup = {n: i for i, n in enumerate(self.names)}
        if len(self._lookup) != len(self.names):
            raise DeidError("gallery identity names are not unique")

    def __len__(self) -> int:
        return len(self.names)

    def index_of(self, names: Sequence[str]) -> np.ndarray:
        missing = [n for n in names if n not in self._lookup]
        if missing:
            raise DeidError(f"{len(missing)} probe identities are not in the gallery, "
                            f"e.g. {missing[:5]}")
        return np.array([self._lookup[n] for n in names], np.int64)

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, identities: Sequence[str]) -> "GalleryIndex":
        """Group per-image embeddings by identity name and average (normalised first)."""
        emb = _normalise(embeddings)
        names, inv = np.unique(np.asarray(identities), return_inverse=True)
        sums = np.zeros((len(names), emb.shape[1]), np.float64)
        np.add.at(sums, inv, emb)
        counts = np.bincount(inv, minlength=len(names))
        return cls([str(n) for n in names], sums.astype(np.float32), counts)

    @classmethod
    def concat(cls, *galleries: "GalleryIndex", prefixes: Sequence[str] | None = None) -> "GalleryIndex":
        """Union of galleries (e.g. LFW-a + CelebA); ``prefixes`` keep names unique across sets."""
        prefixes = prefixes or [""] * len(galleries)
        names = [p + n for g, p in zip(galleries, prefixes) for n in g.names]
        return cls(names, np.concatenate([g.means for g in galleries]),
                   np.concatenate([g.counts for g in galleries]))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``means.npy``, ``counts.npy``, ``names.txt`` (atomically) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in (("means.npy", self.means), ("counts.npy", self.counts)):
            with paths.atomic_write(folder / name) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
        paths.write_text_atomic(folder / "names.txt", "\n".join(self.names) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, mmap: bool = False) -> "GalleryIndex":
        folder = Path(folder)
        for f in ("means.npy", "counts.npy", "names.txt"):
            if not (folder / f).is_file():
                raise DeidError(f"gallery index incomplete: {folder / f} missing")
        names = (folder / "names.txt").read_text(encoding="utf-8").splitlines()
        return cls(names, np.load(folder / "means.npy", mmap_mode="r" if mmap else None),
                   np.load(folder / "counts.npy"))

    def rank(self, probes: np.ndarray, true_names: Sequence[str] | None = None,
             true_index: np.ndarray | None = None, batch: int = 256,
             exclude_self: np.ndarray | None = None) -> np.ndarray:
        """1-based rank of each probe's true identity (see :func:`rank_probes`)."""
        if true_index is None:
            if true_names is None:
                raise DeidError("give true_names or true_index")
            true_index = self.index_of(true_names)
        return rank_probes(self.means, probes, true_index, batch=batch)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rank_probes(gallery: np.ndarray, probes: np.ndarray, true_index: np.ndarray,
                batch: int = 256, progress: bool = False) -> np.ndarray:
    """1-based rank of ``true_index`` among all gallery rows by cosine similarity, in batches.

    Rank = 1 + number of identities strictly more similar than the true one (ties favour it).
    """
    gallery = np.asarray(gallery, np.float32)
    probes = _normalise(probes)
    true_index = np.asarray(true_index, np.int64)
    if probes.ndim != 2 or gallery.ndim != 2 or probes.shape[1] != gallery.shape[1]:
        raise DeidError(f"probe embeddings {probes.shape} do not match gallery {gallery.shape}")
    if len(true_index) != len(probes):
        raise DeidError(f"{len(probes)} probes but {len(true_index)} true indices")
    if len(true_index) and (true_index.min() < 0 or true_index.max() >= len(gallery)):
        raise DeidError("true identity index outside the gallery")
    out = np.empty(len(probes), np.int64)
    gt = gallery.T  # a view: BLAS multiplies by the transpose without copying 54,000×512 floats
    for s in tqdm(range(0, len(probes), batch), disable=not progress, desc="ranking"):
        p = probes[s:s + batch]
        sim = p @ gt                                      # B×G
        true = sim[np.arange(len(p)), true_index[s:s + batch]]  # same arithmetic as sim
        out[s:s + batch] = 1 + np.count_nonzero(sim > true[:, None], axis=1)
    return out


def build_gallery(ds, embed: Callable[[list[int]], np.ndarray], folder: str | os.PathLike,
                  indices: Sequence[int] | None = None, chunk: int = 512,
                  progress: bool = True) -> GalleryIndex:
    """Stream a folder-per-person dataset into a :class:`GalleryIndex` saved in ``folder``.

    ``ds``: :class:`deid_core.evaluate.faces.Dataset`; ``embed(file_indices) -> N×D`` embeds those
    files (e.g. via an evaluator and cached landmarks); ``indices`` restricts the gallery images
    (e.g. to exclude held-out probes). Identities are processed ``chunk`` at a time and each
    finished chunk is saved under ``folder/parts`` so a rerun resumes where it stopped.
    """
    folder = Path(folder)
    parts = folder / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    idx = np.arange(len(ds.files)) if indices is None else np.asarray(indices, np.int64)
    ids = np.asarray(ds.identities)[idx]
    names = sorted(set(ids.tolist()))
    by_name: dict[str, list[int]] = {}
    for i, n in zip(idx.tolist(), ids.tolist()):
        by_name.setdefault(n, []).append(i)
    meta = {"root": str(ds.root), "n_images": int(len(idx)), "n_identities": len(names), "chunk": chunk}
    meta_path = folder / "build.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
        for p in parts.glob("*.npz"):  # different build: start over
            p.unlink()
    meta_path.write_text(json.dumps(meta))
    n_chunks = (len(names) + chunk - 1) // chunk
    means, counts = [], []
    for c in tqdm(range(n_chunks), desc=f"gallery {ds.root.name}", disable=not progress):
        part = parts / f"part_{c:05d}.npz"
        cn = names[c * chunk:(c + 1) * chunk]
        if part.is_file():
            z = np.load(part)
            means.append(z["means"]), counts.append(z["counts"])
            continue
        files = [i for n in cn for i in by_name[n]]
        emb = _normalise(embed(files))
        g = GalleryIndex.from_embeddings(emb, [ds.identities[i] for i in files])
        with paths.atomic_write(part) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, means=g.means, counts=g.counts)
        means.append(g.means), counts.append(g.counts)
    d = means[0].shape[1] if means else 0
    gal = GalleryIndex(names, np.concatenate(means) if means else np.zeros((0, d), np.float32),
                       np.concatenate(counts) if counts else np.zeros(0, np.int64))
    gal.save(folder)
    return gal


def split_probes(identities: Sequence[str], max_probes_per_identity: int = 10,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out probes: for each identity with ≥ 2 images, up to half its images (at most
    ``max_probes_per_identity``) become probes; the rest stay in the gallery.

    Returns (probe_indices, gallery_indices) into ``identities``. Identities with one image are
    gallery-only distractors.
    """
    rng = np.random.default_rng(seed)
    ids = np.asarray(identities)
    probe, gallery = [], []
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    bounds = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = order[a:b]
        if len(members) < 2:
            gallery.extend(members.tolist())
            continue
        members = rng.permutation(members)
        k = min(len(members) // 2, max_probes_per_identity)
        probe.extend(members[:k].tolist())
        gallery.extend(members[k:].tolist())
    return np.sort(np.array(probe, np.int64)), np.sort(np.array(gallery, np.int64))


def run_gallery(dataset: str, out: str, evaluator: str = "sface", weights: str | None = None,
                chunk: int = 512):
    """Build a gallery index (``deid eval gallery``) from any folder-per-person dataset."""
    ds = scan_folder_dataset(dataset)
    lm, _ = dataset_landmarks(ds)
    net = load_evaluators([evaluator], weights)[0]
    return build_gallery(ds, lambda f: embed_files(net, ds, lm, f, progress=False), out, chunk=chunk)

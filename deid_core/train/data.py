"""Training datasets: aligned-face caches written by :func:`deid_core.train.prepare.prepare_faces`
(one or several sources mixed), and a tiny in-memory dataset for tests and demos.

Items are float32 tensors 3×S×S in [−1, 1] (RGB). Batches are drawn by
:class:`StepBatchSampler`: the batch of step ``s`` depends only on ``(seed, s)``, so a
resumed run sees exactly the batches an uninterrupted run would, and DDP ranks take
disjoint slices of the same global batch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from deid_core.errors import DeidError
from deid_core.model import to_tensor
from deid_core.face import read_image
from deid_core.train.prepare import read_face_index


class FaceCacheDataset(Dataset):
    """Aligned faces from one or more ``prepare_faces`` caches (mixed sources, §4).

    ``exclude_persons`` holds identities out (e.g. for held-back evaluation faces);
    ``limit`` keeps the first N records of each cache. Every cache must have the same size.
    """

    def __init__(self, roots: str | Path | Sequence[str | Path], size: int | None = None,
                 exclude_persons: Sequence[str] = (), limit: int | None = None,
                 preload: bool = False):
        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        if not roots:
            raise DeidError("no face cache given")
        self.records: list[tuple[Path, str, str]] = []   # (file, person, source cache)
        excluded = set(exclude_persons)
        for root in roots:
            root = Path(root)
            meta_path = root / "meta.json"
            if not meta_path.is_file():
                raise DeidError(f"{root} is not a face cache (no meta.json): run "
                                f"`deid prepare` / train.prepare_faces first")
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if size is None:
                size = int(meta["size"])
            if int(meta["size"]) != size:
                raise DeidError(f"face cache {root} has size {meta['size']}, expected {size}")
            recs = [r for r in read_face_index(root) if r["person"] not in excluded]
            if limit:
                recs = recs[:limit]
            self.records += [(root / r["path"], r["person"], root.name) for r in recs]
        if not self.records:
            raise DeidError(f"no faces in the caches {[str(r) for r in roots]}")
        self.size = int(size)
        self.images: torch.Tensor | None = None
        if preload:   # decode once: uint8 N×3×S×S in memory (no PNG decoding per step)
            self.images = torch.stack([self._read(i) for i in range(len(self.records))])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.images is not None:
            return self.images[i].float() / 127.5 - 1
        return self._read(i).float() / 127.5 - 1

    def _read(self, i: int) -> torch.Tensor:
        path = self.records[i][0]
        img = read_image(path)
        if img.shape[:2] != (self.size, self.size):
            raise DeidError(f"{path}: crop is {img.shape[:2]}, expected {self.size}²")
        return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)


class InMemoryFaces(Dataset):
    """A list of aligned uint8 RGB crops (all S×S×3) held in memory (tests, demos)."""

    def __init__(self, crops: Sequence[np.ndarray]):
        if not len(crops):
            raise DeidError("InMemoryFaces needs at least one crop")
        self.data = torch.stack([to_tensor(c) for c in crops])
        if self.data.shape[2] != self.data.shape[3]:
            raise DeidError(f"crops must be square, got {tuple(self.data.shape[2:])}")
        self.size = int(self.data.shape[-1])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data[i]


class StepBatchSampler(Sampler[list[int]]):
    """Index batches for steps ``start, start+1, …``: epoch-wise permutations seeded by
    ``seed + epoch``; this rank's slice of each global batch (DDP)."""

    def __init__(self, n: int, batch: int, seed: int, start_step: int = 0,
                 rank: int = 0, world: int = 1, steps: int | None = None):
        if batch % world:
            raise DeidError(f"global batch {batch} is not divisible by the world size {world}")
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.rank, self.world, self.steps = start_step, rank, world, steps

    def global_batch(self, step: int) -> list[int]:
        out = []
        pos = step * self.batch
        while len(out) < self.batch:
            epoch, off = divmod(pos, self.n)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
            take = perm[off: off + self.batch - len(out)].tolist()
            out += take
            pos += len(take)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        per = self.batch // self.world
        while self.steps is None or step < self.steps:
            yield self.global_batch(step)[self.rank * per:(self.rank + 1) * per]
            step += 1

    def __len__(self) -> int:
        return max(0, (self.steps or 0) - self.start)

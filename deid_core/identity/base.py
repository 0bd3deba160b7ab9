"""Common interface of the identity networks (loss network and independent evaluators)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deid_core.errors import DeidError
from deid_core.identity.chips import check_image


@dataclass
class IdentityInfo:
    """What a network is and how its embeddings compare."""
    name: str
    chip_size: int          # S of the S×S×3 uint8 chips that ``embed`` takes
    dim: int                # embedding length D
    metric: str             # "euclidean" or "cosine" (distance = 1 - cosine similarity)
    threshold: float        # same person when distance < threshold (the model's own setting)


class IdentityNetwork:
    """Base: ``chip`` (own alignment) → ``embed`` (uint8 N×S×S×3 RGB chips → float32 N×D)."""

    info: IdentityInfo
    batch_size: int = 32

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def threshold(self) -> float:
        return self.info.threshold

    def chip(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _embed_batch(self, chips: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check_chips(self, chips: np.ndarray) -> np.ndarray:
        s = self.info.chip_size
        if isinstance(chips, np.ndarray) and chips.ndim == 3:
            chips = chips[None]
        if (not isinstance(chips, np.ndarray) or chips.dtype != np.uint8 or chips.ndim != 4
                or chips.shape[1:] != (s, s, 3)):
            raise DeidError(f"{self.name}: chips must be uint8 N×{s}×{s}×3 RGB (use .chip() to cut them), "
                            f"got {getattr(chips, 'dtype', type(chips))} {getattr(chips, 'shape', '')}")
        return chips

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of uint8 RGB chips (N×S×S×3, or one S×S×3) as float32 N×D, in batches."""
        chips = self.check_chips(chips)
        out = [self._embed_batch(chips[i:i + self.batch_size]) for i in range(0, len(chips), self.batch_size)]
        if not out:
            return np.zeros((0, self.info.dim), np.float32)
        return np.concatenate(out).astype(np.float32)

    def embed_faces(self, image: np.ndarray, landmarks68_list) -> np.ndarray:
        """Embed every face of one RGB image given its 68-point landmarks (list of (68, 2))."""
        check_image(image)
        if len(landmarks68_list) == 0:
            return np.zeros((0, self.info.dim), np.float32)
        return self.embed(np.stack([self.chip(image, lm) for lm in landmarks68_list]))

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise distance in the network's own metric (see ``info.metric``)."""
        a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
        if a.shape[-1] != self.info.dim or b.shape[-1] != self.info.dim:
            raise DeidError(f"{self.name}: embeddings must have {self.info.dim} columns, got {a.shape}, {b.shape}")
        if self.info.metric == "euclidean":
            return np.linalg.norm(a - b, axis=-1)
        an = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        bn = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
        return 1.0 - (an * bn).sum(-1)


def check_tensor(x: torch.Tensor, size: int, who: str) -> torch.Tensor:
    """Network tensors: float N×3×S×S in [−1, 1] (the kit's convention)."""
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size):
        raise DeidError(f"{who}: expected a float N×3×{size}×{size} tensor in [-1, 1], got "
                        f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    with torch.no_grad():
        lo, hi = float(x.min()), float(x.max())
    if lo < -1.01 or hi > 1.01 or not np.isfinite([lo, hi]).all():
        raise DeidError(f"{who}: tensor values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}] "
                        f"(uint8 images: x / 127.5 - 1)")
    return x

"""Landmark stabilisation: a One-Euro filter (Casiez et al., CHI 2012) on each track's
landmarks before the similarity transform and the hull (beyond the paper; ``stabilize=False``
turns it off).
"""
from __future__ import annotations

import math

import numpy as np


# ----------------------------------------------------------------------------------------
# One-Euro filter (Casiez, Roussel, Vogel: "1€ filter", CHI 2012).
class OneEuroFilter:
    """Adaptive low-pass filter for arrays: little lag when moving, little jitter at rest.

    ``scale`` normalises the speed (here: the face size in pixels), so ``beta`` is in
    face sizes per second and the filter behaves the same for small and large faces.
    The cutoff is computed per point from that point's speed (norm over the last axis).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 1.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self.x = self.dx = self.t = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self.t
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True) / max(scale, 1e-6)
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = a * x + (1 - a) * self.x
        self.t = t
        return self.x.copy()

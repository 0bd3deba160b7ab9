"""Training settings (paper §3.2, §4): one dataclass, presets' λ schedules, λ sampling.

λ schedule (paper units): a list of ``(iteration, λ)`` steps. paper-128 / compact-128:
four steps 1e-7 → 5e-7 → 1e-6 → 2e-6 at 0, ¼, ½, ¾ of the run (the paper: "from 1e-7 to
2e-6 in four steps" over 230k iterations; the intermediate values are our choice);
paper-256: a fixed 2e-6 for 80k iterations. The λ-conditioned variant samples λ per
example: 0 with probability ``lam_zero_prob``, else log-uniform in ``lam_range`` (``paper``)
or uniform on [0, λ_max] (``deid``: the dial is linear in λ).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from deid_core.augment import AugmentConfig
from deid_core.losses import LossConfig
from deid_core.model import ModelConfig
from deid_core.recipe import RecipeConfig


LOSS_KEYS = ("total", "D", "G", "R_raw", "R_masked", "x_raw", "y_raw", "x_masked", "y_masked",
             "p_raw", "p_masked", "m", "x_m", "y_m", "colour_raw", "colour_masked", "mask_floor",
             "id_dist", "id_unit", "lam", "ramp", "chroma_mid_raw", "chroma_mid_masked",
             "luma_mid_raw", "luma_mid_masked", "skipped", "chroma_peak_masked",
             "luma_peak_masked", "detail_peak_masked")


PAPER_128_SCHEDULE = ((0.0, 1e-7), (0.25, 5e-7), (0.5, 1e-6), (0.75, 2e-6))   # fractions of steps


PAPER_256_SCHEDULE = ((0.0, 2e-6),)


@dataclass
class TrainConfig:
    """Everything a run needs; saved in each checkpoint."""
    preset: str = "compact-128"
    recipe: str = "paper"                              # paper (§3.2) | deid (deid_core.recipe)
    options: dict = field(default_factory=dict)        # recipe switches (ablation)
    model: dict = field(default_factory=dict)          # ModelConfig overrides
    data: list = field(default_factory=list)           # face-cache folders (mixed sources)
    exclude_persons: list = field(default_factory=list)  # identities held out of training
    out: str = "runs/run"
    steps: int = 1000
    batch: int | None = None                           # None: 32 (128 px) / 64 (256 px), §4
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.99)
    lam_schedule: list | None = None                   # [(iteration, λ)], None: preset default
    lam_range: tuple[float, float] = (1e-7, 1e-5)      # λ-conditioned: log-uniform range
    lam_zero_prob: float = 0.25                        # λ-conditioned: P(λ = 0)
    identity: str = "dlib"                             # loss network ("none": no perceptual loss)
    gan: bool = True
    device: str = "auto"                               # auto | cpu | cuda | cuda:K
    amp: str = "auto"                                  # auto (bf16 on CUDA) | bf16 | fp16 | off
    channels_last: str = "auto"                        # auto (on CUDA) | on | off
    ckpt_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    seed: int = 0
    workers: int = 0
    preload: bool = True                               # decode the face caches once into memory
    init: str | None = None                            # warm start: G (and D) weights of a checkpoint
    threads: int | None = None                         # torch CPU threads (None: leave)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def recipe_config(self) -> RecipeConfig:
        return RecipeConfig.preset(self.recipe, **self.options)

    def model_config(self) -> ModelConfig:
        """The preset, with the recipe's model fields, then the explicit overrides."""
        return ModelConfig.preset(self.preset, **{**self.recipe_config().model_overrides(),
                                                  **self.model})

    def resolved_batch(self) -> int:
        return self.batch or (64 if self.model_config().size >= 256 else 32)

    def resolved_schedule(self) -> list[tuple[int, float]]:
        """The (iteration, λ) list; preset defaults scaled to this run's length."""
        if self.lam_schedule:
            sched = sorted((int(s), float(v)) for s, v in self.lam_schedule)
        elif self.recipe_config().repeller == "hinge":
            sched = [(0, self.recipe_config().lam_max)]     # fixed-λ model: the top of the dial
        else:
            frac = PAPER_256_SCHEDULE if self.model_config().size >= 256 else PAPER_128_SCHEDULE
            sched = [(int(round(f * self.steps)), v) for f, v in frac]
        if sched[0][0] != 0:
            sched.insert(0, (0, 0.0))
        return sched

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        lc = dict(d.get("loss", {}))
        for k in ("source_layers",):
            if lc.get(k) is not None:
                lc[k] = tuple(lc[k])
        d["loss"] = LossConfig(**lc)
        d["betas"] = tuple(d.get("betas", (0.5, 0.99)))
        d["lam_range"] = tuple(d.get("lam_range", (1e-7, 1e-5)))
        d.setdefault("recipe", "paper")     # runs saved before recipes existed
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in names})


def lam_at(schedule: Sequence[tuple[int, float]], step: int) -> float:
    """λ of the last schedule entry whose iteration ≤ step (piecewise constant, §4)."""
    lam = schedule[0][1]
    for s, v in schedule:
        if step >= s:
            lam = v
    return float(lam)


def sample_lams(n: int, lam_range: tuple[float, float], zero_prob: float,
                generator: torch.Generator, uniform: bool = False) -> torch.Tensor:
    """Per-example λ for the conditioned variant: 0 w.p. ``zero_prob``, else log-uniform in
    ``lam_range`` (paper units) or, with ``uniform``, uniform on [0, lam_range[1]]."""
    u = torch.rand(n, generator=generator)
    r = torch.rand(n, generator=generator)
    if uniform:
        lam = lam_range[1] * r
    else:
        lo, hi = math.log10(lam_range[0]), math.log10(lam_range[1])
        lam = 10 ** (lo + (hi - lo) * r)
    return torch.where(u < zero_prob, torch.zeros(n), lam)

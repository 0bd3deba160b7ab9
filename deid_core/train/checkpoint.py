"""Training checkpoints and weight exports.

``RUN_DIR/checkpoint.pt`` (atomic: :func:`deid_core.paths.atomic_write`) holds both networks,
both optimizers, the step, the λ state, the configs and every RNG state, so a resumed run
continues exactly; :func:`export_weights` writes the weights-only fp16 copy to share.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.model import ModelConfig, load_checkpoint


CHECKPOINT_NAME = "checkpoint.pt"


def rng_state(gen: torch.Generator) -> dict:
    st = {"torch": torch.get_rng_state(), "gen": gen.get_state(),
          "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    gen.set_state(st["gen"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` through :func:`deid_core.paths.atomic_write` (the old file stays on failure)."""
    with paths.atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_matching_weights(module: torch.nn.Module, state: dict) -> tuple[int, list[str]]:
    """Load the tensors of ``state`` whose name and shape match ``module``'s; returns the
    count loaded and the names skipped."""
    own = module.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(take)
    module.load_state_dict(own)
    return len(take), sorted(k for k in own if k not in take)


def export_weights(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True,
                   lam: float | None = None, overwrite: bool = False,
                   detail_sigma: float | None = None, source_chroma: bool | None = None,
                   warp_at: str | None = None) -> Path:
    """Weights-only copy of a training checkpoint (generator + config + λ state), fp16 by
    default. ``lam`` sets the default λ of a λ-conditioned model (used when none is given);
    ``detail_sigma`` sets the model's source-detail transfer (0 = off), ``source_chroma``
    whether the output takes the source's chroma, ``warp_at`` where the pipeline applies a
    warp head's flow (``"frame"``: the full-resolution frame; ``"crop"``: the 128-px crop)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and (not overwrite or dst.resolve() == src.resolve()):
        raise DeidError(f"{dst} exists: choose another output (or --overwrite; never the input)")
    ck = load_checkpoint(src)
    weights = ck.get("generator_ema") or ck["generator"]      # EMA weights when trained with them
    gen = {k: (v.half() if half and v.is_floating_point() else v) for k, v in weights.items()}
    lam_state = {k: v for k, v in ck.get("lam_state", {}).items() if k != "schedule"}
    lam_state["schedule"] = [list(map(float, s)) for s in ck.get("lam_state", {}).get("schedule", [])]
    if lam is not None:
        if not ck["config"]["model"].get("lam_cond"):
            raise DeidError("--lam sets the default λ of a λ-conditioned checkpoint; "
                            f"{src} was trained with a fixed λ")
        if not np.isfinite(lam) or lam < 0:
            raise DeidError(f"λ must be a finite number ≥ 0, got {lam}")
        lam_state["lam"] = float(lam)
    cfg = {"model": dict(ck["config"]["model"]), "recipe": ck["config"].get("recipe")}
    if detail_sigma is not None:
        if not np.isfinite(detail_sigma) or detail_sigma < 0:
            raise DeidError(f"detail σ must be a finite number ≥ 0, got {detail_sigma}")
        cfg["model"]["detail_sigma"] = float(detail_sigma)
    if source_chroma is not None:
        cfg["model"]["source_chroma"] = bool(source_chroma)
    if warp_at is not None:
        cfg["model"]["warp_at"] = warp_at
        ModelConfig.from_dict(cfg["model"])          # validates the changed config
    return atomic_save({"config": cfg, "generator": gen, "step": int(ck.get("step", 0)),
                        "lam_state": lam_state, "deid_version": ck.get("deid_version")}, Path(dst))

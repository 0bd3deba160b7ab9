"""Test-time de-identification (§3, "test time" steps a–h) with a trained generator.

:class:`Deidentifier` = checkpoint (generator + config) + frozen identity network + face
aligner + device. ``embed_target(image)`` gives the target's descriptor (the same way as in
training: aligned crop → differentiable dlib chip → descriptor); ``net_fn(emb, λ)`` is the
callable for :meth:`deid_core.align.FaceAligner.process` (step e); ``__call__`` runs the whole
pipeline on one frame.

λ: a λ-conditioned checkpoint takes any λ ≥ 0 at call time (``None``: the λ it
was saved with, default 2e-6); a fixed-λ checkpoint ignores ``lam`` (``info["lam"]`` tells
which λ it was trained with).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.model import Generator, ModelConfig, add_source_detail
from deid_core.recipe import RecipeConfig, dial

DEFAULT_LAM = 2e-6
#: largest λ accepted at inference: 50× the top of the starter's training range (2e-5); the
#: paper's λ runs from 1e-7 to 2e-6 (§4, Fig. 9). Anything above is a typo, not a setting.
MAX_LAM = 1e-3


def check_lam(lam: float | None) -> float | None:
    """Refuse a λ that is not a finite number in ``[0, MAX_LAM]`` with a clear message."""
    if lam is None:
        return None
    value = float(lam)
    if not np.isfinite(value) or value < 0 or value > MAX_LAM:
        raise DeidError(f"λ = {lam:g} is outside [0, {MAX_LAM:g}]: the paper's λ runs from "
                        f"1e-7 to 2e-6 (the starter model was trained on 1e-7 to 2e-5)")
    return value


def default_threads() -> int:
    """CPU threads for inference: the cores not already busy (1-minute load average), 1 to 4.

    Measured on a 2-core machine (compact-128 generator, one 128² face, median of 15): with
    OpenMP's default *active* wait, 2 threads took 0.6-1.4 s per call when another process
    was running (spinning threads fight for the cores) against 62-134 ms with 1 thread; with
    ``OMP_WAIT_POLICY=PASSIVE`` (set by the ``deid`` command line) 2 threads took 20-22 ms on
    a quiet moment and 157 ms next to a busy process, 1 thread 62-134 ms. So: passive wait,
    and only as many threads as there are idle cores.
    """
    cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(4, cores - busy))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's and OpenCV's CPU thread counts (``None``: :func:`default_threads`)."""
    import cv2
    n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise DeidError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    return n


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a ``.pt`` checkpoint on the CPU (full training checkpoints or fp16 weights-only)."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:   # full training checkpoints also hold numpy RNG states
            ck = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise DeidError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ck, dict) or "generator" not in ck or "config" not in ck:
        raise DeidError(f"{path} is not a deid checkpoint (needs 'config' and 'generator')")
    return ck


def export_weights(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True,
                   lam: float | None = None, overwrite: bool = False,
                   detail_sigma: float | None = None) -> Path:
    """Weights-only copy of a training checkpoint (generator + config + λ state), fp16 by
    default. ``lam`` sets the default λ of a λ-conditioned model (used when none is given);
    ``detail_sigma`` sets the model's source-detail transfer (0 = off)."""
    from deid_core.train import atomic_save
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
    return atomic_save({"config": cfg, "generator": gen, "step": int(ck.get("step", 0)),
                        "lam_state": lam_state, "deid_version": ck.get("deid_version")}, Path(dst))


class Deidentifier:
    """One trained generator ready for frames: see the module docstring."""

    def __init__(self, generator: Generator, identity: Any, aligner: Any = None,
                 device: str | torch.device = "cpu", lam_state: dict | None = None,
                 source: str = "model"):
        self.G = generator.eval()
        self.cfg: ModelConfig = generator.cfg
        self.size = self.cfg.size
        self.device = torch.device(device)
        self.identity = identity
        self.lam_state = dict(lam_state or {})
        self.source = source
        if aligner is None:
            from deid_core.align import AlignConfig, FaceAligner
            aligner = FaceAligner(AlignConfig(size=self.size))
        if aligner.size != self.size:
            raise DeidError(f"aligner crops are {aligner.size}² but the model needs {self.size}²")
        self.aligner = aligner
        from deid_core.align import template_landmarks
        self.crop_landmarks = template_landmarks(self.size, aligner.config.margin)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        identity: Any = None, aligner: Any = None) -> "Deidentifier":
        """Load config + generator (fp16-saved weights become fp32) onto ``device``."""
        ck = load_checkpoint(path)
        cfg = ModelConfig.from_dict(ck["config"]["model"])
        G = Generator(cfg)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in ck["generator"].items()}
        try:
            G.load_state_dict(state)
        except RuntimeError as exc:
            raise DeidError(f"{path}: generator weights do not match its config: {exc}") from exc
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise DeidError(f"device '{device}' requested but CUDA is not available")
        G = G.to(dev).requires_grad_(False)
        if identity is None:
            from deid_core.identity import load_identity_network
            identity = load_identity_network("dlib", device=str(dev))
        return cls(G, identity, aligner, dev, ck.get("lam_state"), source=str(path))

    # ------------------------------------------------------------------ target identity
    @torch.no_grad()
    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Descriptors (N×D float32) of aligned uint8 crops N×S×S×3, as in training."""
        from deid_core.data import to_tensor
        x = torch.stack([to_tensor(np.ascontiguousarray(c)) for c in crops]).to(self.device)
        chips = self.identity.crop_to_chip_tensor(x, self.crop_landmarks)
        return self.identity.embed_tensor(chips).float().cpu().numpy()

    def embed_target(self, image: np.ndarray | str | os.PathLike, name: str | None = None) -> np.ndarray:
        """The target's descriptor (D,) from an image holding exactly one face."""
        from deid_core.align import read_image, to_rgb_uint8
        if isinstance(image, (str, os.PathLike)):
            name = name or str(image)
            image = read_image(image)
        name = name or "target image"
        rgb = to_rgb_uint8(image, name=name)
        faces = self.aligner.detect(rgb)
        if len(faces) != 1:
            raise DeidError(f"{name}: the target must show exactly one face, found {len(faces)}")
        crop = self.aligner.warp(rgb, self.aligner.transform(faces[0].landmarks))
        return self.embed_crops(crop[None])[0]

    # ---------------------------------------------------------------------------- λ
    def resolve_lam(self, lam: float | None) -> tuple[float, bool]:
        """(λ used, whether a requested λ was ignored by a fixed-λ model)."""
        trained = float(self.lam_state.get("lam", DEFAULT_LAM))
        check_lam(lam)
        if self.cfg.lam_cond:
            return (trained if lam is None else float(lam)), False
        ignored = lam is not None and not np.isclose(float(lam), trained, rtol=1e-3, atol=0)
        if ignored:
            warnings.warn(f"{self.source} was trained with a fixed λ = {trained:g}; "
                          f"λ = {lam} needs a λ-conditioned checkpoint and is ignored")
        return trained, ignored

    def dial(self, n: int = 5) -> list[float]:
        """``n`` evenly spaced positions of this model's λ dial (0 … its λ_max): linear for a
        ``lam_scale="linear"`` model (the ``deid`` recipe), else 0 + log-spaced (paper λ)."""
        if not self.cfg.lam_cond:
            return [float(self.lam_state.get("lam", DEFAULT_LAM))]
        recipe = RecipeConfig(lam_max=self.cfg.lam_max, lam_sampling=(
            "uniform" if self.cfg.lam_scale == "linear" else "loguniform"))
        return dial(recipe, n)

    # ------------------------------------------------------------------------ network
    @torch.no_grad()
    def generate(self, x: torch.Tensor, emb: torch.Tensor, lam: float | torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """G on tensors (N×3×S×S in [−1, 1], N×D) → (image, mask); the source's fine detail
        is added to the image when the model was configured with ``detail_sigma``."""
        x = x.to(self.device)
        z, m = self.G(x, emb.to(self.device), lam if self.cfg.lam_cond else None)
        return add_source_detail(z, x, self.cfg.detail_sigma), m

    def net_fn(self, target_embedding: np.ndarray | None, lam: float | None = None
               ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Step e for :meth:`FaceAligner.process`: crops uint8 N×S×S×3 →
        (images uint8 N×S×S×3, masks float32 N×S×S). ``target_embedding=None``: each face is
        its own target (the training setting)."""
        from deid_core.data import to_tensor, to_uint8
        lam_value, _ = self.resolve_lam(lam)
        target = None
        if target_embedding is not None:
            target = torch.as_tensor(np.asarray(target_embedding, np.float32)).reshape(1, -1)
            if target.shape[1] != self.cfg.id_dim:
                raise DeidError(f"target embedding must have {self.cfg.id_dim} values, got "
                                f"{target.shape[1]}")

        def net(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            crops = np.asarray(crops)
            if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3) or crops.dtype != np.uint8:
                raise DeidError(f"crops must be uint8 N×{self.size}×{self.size}×3, got "
                                f"{crops.dtype} {crops.shape}")
            n = len(crops)
            emb = (target.expand(n, -1) if target is not None
                   else torch.from_numpy(self.embed_crops(crops)))
            x = torch.stack([to_tensor(np.ascontiguousarray(c)) for c in crops])
            z, m = self.generate(x, emb, lam_value)
            return to_uint8(z), m[:, 0].float().clamp(0, 1).cpu().numpy()

        return net

    def __call__(self, frame: np.ndarray, target_embedding: np.ndarray | None,
                 lam: float | None = None) -> tuple[np.ndarray, dict]:
        """De-identify every face of one RGB frame; ``info`` from ``FaceAligner.process``
        plus ``lam`` (used) and ``lam_ignored``."""
        lam_value, ignored = self.resolve_lam(lam)
        out, info = self.aligner.process(frame, self.net_fn(target_embedding, lam))
        info["lam"], info["lam_ignored"] = lam_value, ignored
        return out, info


def deidentify_image(src: str | os.PathLike, dst: str | os.PathLike,
                     checkpoint: str | os.PathLike | None, target: str | os.PathLike | None = None,
                     lam: float | None = None, device: str = "cpu", overwrite: bool = False,
                     detector: dict | None = None) -> dict:
    """``deid image``: read ``src``, de-identify every face, write ``dst`` atomically
    (``checkpoint`` None: the starter checkpoint, :func:`deid_core.paths.resolve_checkpoint`). ``detector``:
    :class:`~deid_core.align.AlignConfig` overrides (``detector``, ``upsample``, ...; default:
    the shared defaults). Faces with unreliable landmarks are obscured (``n_obscured``)."""
    import dataclasses
    from deid_core.align import FaceAligner, read_image, write_image
    check_lam(lam)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DeidError(f"input image not found: {src}")
    if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise DeidError(f"output {dst} is the input: inputs are never overwritten")
    if dst.exists() and not overwrite:
        raise DeidError(f"output {dst} exists: pass --overwrite to replace it")
    deid = Deidentifier.from_checkpoint(paths.resolve_checkpoint(checkpoint), device)
    if detector:
        deid.aligner = FaceAligner(dataclasses.replace(deid.aligner.config, **detector))
    emb = deid.embed_target(target) if target is not None else None
    frame = read_image(src)
    out, info = deid(frame, emb, lam)
    write_image(dst, out)
    return {"output": str(dst), "n_faces": info["n_faces"], "n_obscured": info["n_obscured"],
            "lam": info["lam"], "lam_ignored": info["lam_ignored"],
            "target": str(target) if target else "self"}

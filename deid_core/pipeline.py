"""Test-time de-identification (§3, "test time" steps a–h) with a trained generator.

:class:`Deidentifier` = checkpoint (generator + config) + frozen identity network + face
aligner + device. ``embed_target(image)`` gives the target's descriptor (the same way as in
training: aligned crop → differentiable dlib chip → descriptor); ``crop_fn(emb, λ)`` is the
callable for :meth:`deid_core.face.FaceAligner.process` (step e); ``__call__`` runs the whole
pipeline on one frame. :func:`build_pipeline` wires a model for ``deid video`` / ``deid live``
(:class:`DeidentifierCropFns`: one target per face track).

Identity check (not in the paper; on by default in ``deid image|video|live``):
:class:`IdentityCheck` compares every generated face with the input by the rule of ``deid
audit`` (:mod:`deid_core.identity.change`), stricter (:data:`CHECK_RULE`), and obscures a face
the network left recognisable, so a weak model falls back to pixelation instead of passing a
face through. The evaluation tables measure the network without it.

λ: a λ-conditioned checkpoint takes any λ ≥ 0 at call time (``None``: the λ it
was saved with, default 2e-6); a fixed-λ checkpoint ignores ``lam`` (``info["lam"]`` tells
which λ it was trained with).

A warp-head model (``flow_px`` > 0, beyond the paper) with ``warp_at="frame"`` (the default)
hands :class:`FaceAligner` its flow and luma change instead of a 128-px picture: the face is
resampled from the full-resolution frame, so it keeps the frame's sharpness at any face size.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import (DEFAULT_DETECTOR, AlignConfig, Face, FaceAligner, CropFn,
                            five_points, passthrough_crops, read_image, template_landmarks,
                            to_rgb_uint8, write_image)
from deid_core.identity import IdentityNetwork, load_identity_network
from deid_core.identity.change import FaceChange, VisibleRule
from deid_core.model import (Generator, ModelConfig, load_checkpoint, resolve_device, to_tensor,
                             to_uint8)
from deid_core.recipe import RecipeConfig, dial
from deid_core.transfer import render_warp, source_transfer


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
    n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise DeidError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    return n


def model_dial(cfg: ModelConfig, lam_state: dict | None = None, n: int = 5) -> list[float]:
    """``n`` evenly spaced positions of a model's λ dial (0 … its λ_max): linear for a
    ``lam_scale="linear"`` model (the ``deid`` recipe), else 0 + log-spaced (paper λ); a
    fixed-λ model has the one λ it was trained with."""
    if not cfg.lam_cond:
        return [float((lam_state or {}).get("lam", DEFAULT_LAM))]
    recipe = RecipeConfig(lam_max=cfg.lam_max, lam_sampling=(
        "uniform" if cfg.lam_scale == "linear" else "loguniform"))
    return dial(recipe, n)


#: the identity check's rule: ``deid audit``'s without its pixel-change allowance. The audit
#: lets a face with SFace cosine ≥ 0.7 pass when its box centre changed by ≥ 6 grey levels
#: (small faces painted over inside the hull keep 0.6-0.7 from hair and ears, and SFace is
#: unreliable there); a face the network drew still matching at ≥ 0.7 is not de-identified,
#: however much its pixels moved (held-out NASA faces: 0.99 after a 3-level darkening that
#: the 128-px round trip turns into 5-7 levels of change).
CHECK_RULE = VisibleRule(max_pixel_change=float("inf"))


class IdentityCheck:
    """:attr:`FaceAligner.check <deid_core.face.FaceAligner>`: true when a generated face is
    left visible by :data:`CHECK_RULE` (SFace cosine to the input ≥ 0.7, or a box centre
    changed by < 1 grey level), on the face's box and the 5 points of its 68 landmarks (those
    the face was pasted at). ``last`` keeps the latest measures."""

    def __init__(self, rule: VisibleRule | None = None) -> None:
        self.rule = rule or CHECK_RULE
        self.change = FaceChange()
        self.last: dict = {}

    def __call__(self, inp: np.ndarray, out: np.ndarray, face: Face) -> bool:
        self.last = self.change.compare(inp, out, face.box, five_points(face.landmarks))
        return self.rule.left_visible(self.last)


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
            aligner = FaceAligner(AlignConfig(size=self.size))
        if aligner.size != self.size:
            raise DeidError(f"aligner crops are {aligner.size}² but the model needs {self.size}²")
        self.aligner = aligner
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
        dev = resolve_device(str(device))
        G = G.to(dev).requires_grad_(False)
        if identity is None:
            identity = load_identity_network("dlib", device=str(dev))
        return cls(G, identity, aligner, dev, ck.get("lam_state"), source=str(path))

    # ------------------------------------------------------------------ target identity
    @torch.no_grad()
    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Descriptors (N×D float32) of aligned uint8 crops N×S×S×3, as in training."""
        x = torch.stack([to_tensor(np.ascontiguousarray(c)) for c in crops]).to(self.device)
        chips = self.identity.crop_to_chip_tensor(x, self.crop_landmarks)
        return self.identity.embed_tensor(chips).float().cpu().numpy()

    def embed_target(self, image: np.ndarray | str | os.PathLike, name: str | None = None) -> np.ndarray:
        """The target's descriptor (D,) from an image holding exactly one face."""
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
        """``n`` evenly spaced positions of this model's λ dial (:func:`model_dial`)."""
        return model_dial(self.cfg, self.lam_state, n)

    # ------------------------------------------------------------------------ network
    @torch.no_grad()
    def generate(self, x: torch.Tensor, emb: torch.Tensor, lam: float | torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """G on tensors (N×3×S×S in [−1, 1], N×D) → (image, mask), with what the model's
        configuration takes from the source (fine detail, chroma: :func:`source_transfer`)."""
        x = x.to(self.device)
        z, m = self.G(x, emb.to(self.device), lam if self.cfg.lam_cond else None)
        return source_transfer(z, x, self.cfg), m

    @torch.no_grad()
    def generate_warp(self, x: torch.Tensor, emb: torch.Tensor, lam: float | torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """A warp head's (crop rendering, mask, fields): ``fields`` float32 N×S×S×3 holds the
        flow (x, y, in crop pixels) and the luma change (grey levels) that
        :meth:`FaceAligner.process` applies to the full-resolution frame (``warp_at="frame"``)."""
        x = x.to(self.device)
        flow, shade, m = self.G.reshape(x, emb.to(self.device), lam if self.cfg.lam_cond else None)
        z = source_transfer(render_warp(x, flow, shade), x, self.cfg)
        luma = (torch.zeros_like(flow[:, :1]) if shade is None else shade.float() * 127.5)
        fields = torch.cat([flow.float(), luma], 1).permute(0, 2, 3, 1)
        return z, m, np.ascontiguousarray(fields.cpu().numpy(), dtype=np.float32)

    def crop_fn(self, target_embedding: np.ndarray | None, lam: float | None = None) -> CropFn:
        """Step e for :meth:`FaceAligner.process`: crops uint8 N×S×S×3 →
        (images uint8 N×S×S×3, masks float32 N×S×S), plus the warp fields
        (:meth:`generate_warp`) for a warp head with ``warp_at="frame"``.
        ``target_embedding=None``: each face is its own target (the training setting)."""
        lam_value, _ = self.resolve_lam(lam)
        target = None
        if target_embedding is not None:
            target = torch.as_tensor(np.asarray(target_embedding, np.float32)).reshape(1, -1)
            if target.shape[1] != self.cfg.id_dim:
                raise DeidError(f"target embedding must have {self.cfg.id_dim} values, got "
                                f"{target.shape[1]}")

        def net(crops: np.ndarray) -> tuple[np.ndarray, ...]:
            crops = np.asarray(crops)
            if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3) or crops.dtype != np.uint8:
                raise DeidError(f"crops must be uint8 N×{self.size}×{self.size}×3, got "
                                f"{crops.dtype} {crops.shape}")
            n = len(crops)
            emb = (target.expand(n, -1) if target is not None
                   else torch.from_numpy(self.embed_crops(crops)))
            x = torch.stack([to_tensor(np.ascontiguousarray(c)) for c in crops])
            if self.cfg.flow_px > 0 and self.cfg.warp_at == "frame":
                z, m, fields = self.generate_warp(x, emb, lam_value)
                return to_uint8(z), m[:, 0].float().clamp(0, 1).cpu().numpy(), fields
            z, m = self.generate(x, emb, lam_value)
            return to_uint8(z), m[:, 0].float().clamp(0, 1).cpu().numpy()

        return net

    def __call__(self, frame: np.ndarray, target_embedding: np.ndarray | None,
                 lam: float | None = None, faces: list | None = None) -> tuple[np.ndarray, dict]:
        """De-identify every face of one RGB frame (``faces``: already detected ones, no
        detection); ``info`` from ``FaceAligner.process`` plus ``lam`` (used) and ``lam_ignored``."""
        lam_value, ignored = self.resolve_lam(lam)
        out, info = self.aligner.process(frame, self.crop_fn(target_embedding, lam), faces=faces)
        info["lam"], info["lam_ignored"] = lam_value, ignored
        return out, info


def deidentify_image(src: str | os.PathLike, dst: str | os.PathLike,
                     checkpoint: str | os.PathLike | None, target: str | os.PathLike | None = None,
                     lam: float | None = None, device: str = "cpu", overwrite: bool = False,
                     detector: dict | None = None, check: bool = True) -> dict:
    """``deid image``: read ``src``, de-identify every face, write ``dst`` atomically
    (``checkpoint`` None: the starter checkpoint, :func:`deid_core.paths.resolve_checkpoint`). ``detector``:
    :class:`~deid_core.face.AlignConfig` overrides (``detector``, ``upsample``, ...; default:
    the shared defaults). Faces with unreliable landmarks are obscured (``n_obscured``), and so
    are faces the network left recognisable (``n_recognisable``; ``check=False``: no check)."""
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
    deid.aligner.check = IdentityCheck() if check else None
    emb = deid.embed_target(target) if target is not None else None
    frame = read_image(src)
    out, info = deid(frame, emb, lam)
    write_image(dst, out)
    return {"output": str(dst), "n_faces": info["n_faces"], "n_obscured": info["n_obscured"],
            "n_recognisable": len(info["recognisable"]),
            "lam": info["lam"], "lam_ignored": info["lam_ignored"],
            "target": str(target) if target else "self"}


def embed_image(image, network: str | IdentityNetwork = "dlib", detector: str = "hog",
                upsample: int = 1, device: str = "cpu") -> list[dict]:
    """Detect every face (:meth:`deid_core.face.FaceAligner.detect`: 68 landmarks) and embed
    each with ``network`` (its own chip alignment). Returns one dict per face, largest first:
    ``{"box": [x0, y0, x1, y1], "score": s, "embedding": [...]}``."""
    img = read_image(image) if not isinstance(image, np.ndarray) else to_rgb_uint8(image)
    net = load_identity_network(network, device=device) if isinstance(network, str) else network
    faces = FaceAligner(detector=detector, upsample=upsample).detect(img)
    emb = net.embed_faces(img, [f.landmarks for f in faces])
    return [{"box": [round(float(v), 2) for v in f.box], "score": round(float(f.score), 4),
             "embedding": [round(float(v), 7) for v in e]} for f, e in zip(faces, emb)]


# ----------------------------------------------------------------------------------------
# Model wiring for `deid video` / `deid live` (one target embedding per face track).

class DeidentifierCropFns:
    """Wraps ``pipeline.Deidentifier``: one target embedding for all tracks (``--target``),
    or, without one, each track's first appearance as its target, embedded once and kept for
    the whole track (§3: "a target image, which is any image of the person in the video").
    """

    def __init__(self, deid: Any, lam: float | None = None, target_embedding: Any = None):
        self.deid, self.lam, self.target = deid, lam, target_embedding
        self._nets: dict[int, tuple[Any, CropFn]] = {}

    def target_for(self, frame: np.ndarray, face: Any) -> Any:
        if self.target is not None:
            return self.target
        al = self.deid.aligner          # the model's own crop (size, margin, template)
        crop = al.warp(frame, al.transform(face.landmarks))
        return self.deid.embed_crops(crop[None])[0]

    def crop_fn_for(self, target: Any) -> CropFn:
        key = id(target)
        if key not in self._nets:
            self._nets[key] = (target, self.deid.crop_fn(target, self.lam))
        return self._nets[key][1]


# ----------------------------------------------------------------------------------------
# Model wiring for the CLI (one place: `deid video`, `deid live`, notebooks).
def check_target_image(path: str | os.PathLike, aligner: FaceAligner) -> np.ndarray:
    """Read a target photo and require exactly one detectable face in it (§3: "a target
    image, which is any image of the person"). Returns the RGB image."""
    return target_face(path, aligner)[0]


def target_face(path: str | os.PathLike, aligner: FaceAligner) -> tuple[np.ndarray, Face]:
    """The target photo (RGB) and its one face, detected once (:func:`check_target_image`)."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"target image not found: {path}")
    img = read_image(path)
    faces = aligner.detect(img)
    n = len(faces)
    if n == 0:
        raise DeidError(f"no face found in the target image {path}: give a photo of the person "
                        f"with one clearly visible face")
    if n > 1:
        raise DeidError(f"the target image {path} shows {n} faces: give a photo with exactly one "
                        f"face (crop it to the person)")
    return img, faces[0]


def build_pipeline(checkpoint: str | os.PathLike | None, target: str | os.PathLike | None = None,
                   lam: float | None = None, device: str = "cpu", passthrough: bool = False,
                   detector: str | None = None, upsample: int = 0, detect_scale: float = 1.0,
                   upscale_every: int = 1, check: bool = True) -> tuple[FaceAligner, CropFn]:
    """The ``(aligner, net)`` pair for :func:`deidentify_video` / :func:`run_live`.

    With a checkpoint (None: the committed starter checkpoint when present):
    ``pipeline.Deidentifier`` and the target's embedding (or, without
    ``target``, each face track's own first appearance). ``passthrough=True`` runs the
    pipeline with the identity network (debugging; nothing is de-identified). ``upscale_every``
    runs YuNet's 2× pass on every n-th detection only (live: speed). ``check``: the aligner
    obscures faces the network left recognisable (:class:`IdentityCheck`; a track found so
    stays obscured, :class:`deid_core.video.FrameProcessor`).
    """
    detector = detector or DEFAULT_DETECTOR
    if passthrough:
        aligner = FaceAligner(AlignConfig(detector=detector, upsample=upsample,
                                          detect_scale=detect_scale, upscale_every=upscale_every))
        return aligner, passthrough_crops
    try:
        ckpt = paths.resolve_checkpoint(checkpoint)
    except DeidError as exc:
        raise DeidError(f"{exc}, or --passthrough to test the pipeline without "
                        "de-identification") from None
    if not ckpt.is_file():
        raise DeidError(f"checkpoint not found: {ckpt}")
    deid = Deidentifier.from_checkpoint(ckpt, device)
    # one aligner: the model's crop (size, margin, template) with the chosen detector
    deid.aligner = FaceAligner(dataclasses.replace(deid.aligner.config, detector=detector,
                                                   upsample=upsample, detect_scale=detect_scale,
                                                   upscale_every=upscale_every))
    deid.aligner.check = IdentityCheck() if check else None
    emb = None
    if target:                # the one target face, detected once, cropped as in training
        img, face = target_face(target, deid.aligner)
        emb = deid.embed_crops(deid.aligner.warp(img, deid.aligner.transform(face.landmarks))[None])[0]
    return deid.aligner, DeidentifierCropFns(deid, lam=lam, target_embedding=emb)

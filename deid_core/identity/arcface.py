"""ArcFace evaluator (the paper's Table 4 network, §4) from a user-provided ONNX file.

The paper ranks identities with ArcFace LResNet50E-IR. No ArcFace weights ship with the kit (their
licences do not allow it and nothing is downloaded at run time by default), so this backend loads
any ArcFace-family ONNX model from a local path:

    deid eval rank --evaluator arcface --weights /path/to/w600k_r50.onnx
    DEID_ARCFACE_WEIGHTS=/path/to/model.onnx deid eval lfw --evaluator arcface

or the first ``*.onnx`` in ``<cache>/arcface/`` (``DEID_CACHE``, default ``~/.cache/deid``).
Input: 1×3×112×112 float (any batch; a file with a fixed batch of 1 is made batch-free when its
graph allows, else run image by image), 5-point ArcFace alignment of
:func:`~deid_core.identity.chips.align_five_point` on :func:`~deid_core.identity.chips.arcface_five_points`.
Pixel normalisation follows insightface's rule: graphs that begin with Sub/Mul nodes normalise
inside (feed RGB 0..255), others get ``(x - 127.5) / 127.5``; override with ``input_mean``/``input_std``.
Output: the D-dim embedding (512 for the files below), compared by cosine distance ``1 - cos``.

Known-good files (all 112×112, 512-d; check the licence before use):

- insightface model zoo ``buffalo_l.zip`` → ``w600k_r50.onnx`` (ResNet-50, WebFace600K) and
  ``antelopev2.zip`` → ``glintr100.onnx`` (ResNet-100, Glint360K): from
  https://github.com/deepinsight/insightface/releases (v0.7). insightface code is MIT; its
  pretrained models are for **non-commercial research use only**.
- ONNX Model Zoo ``arcfaceresnet100-8.onnx`` (LResNet100E-IR, MS1M-ArcFace, converted from
  insightface; fixed batch 1, normalises inside): https://github.com/onnx/models
  (validated/vision/body_analysis/arcface); the zoo lists Apache-2.0, the training data (MS1M)
  is research-only.
- insightface ``ms1mv3_arcface_r50_fp16`` / ``r100`` exported with insightface's
  ``recognition/arcface_torch/torch2onnx.py`` (closest to the paper's LResNet50E-IR); same terms.

Opt-in download (only where a network exists): ``load(download=True)`` or
``DEID_ARCFACE_DOWNLOAD=1`` fetches ``buffalo_l.zip`` (or ``DEID_ARCFACE_URL``) into the cache.
"""
from __future__ import annotations

import os
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.identity import chips as C
from deid_core.identity.base import IdentityInfo, IdentityNetwork
from deid_core.identity.sface import _batched_model

ENV_WEIGHTS = "DEID_ARCFACE_WEIGHTS"
ENV_DOWNLOAD = "DEID_ARCFACE_DOWNLOAD"
DEFAULT_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
ZIP_MEMBER = "w600k_r50.onnx"
COS_THRESHOLD = 0.30  # same person when cos > 0.30 (typical ArcFace verification setting; approximate)


def cache_folder() -> Path:
    return paths.cache_dir() / "arcface"


def _missing_message(tried: str | None) -> str:
    where = cache_folder()
    head = f"ArcFace weights not found at {tried}. " if tried else "No ArcFace weights given. "
    return (head + f"Put an ArcFace ONNX file (e.g. insightface buffalo_l's w600k_r50.onnx, or the ONNX "
            f"Model Zoo's arcfaceresnet100-8.onnx) at a local path and pass --weights PATH or set "
            f"{ENV_WEIGHTS}=PATH, or copy it into {where}/. Nothing is downloaded unless you opt in "
            f"with {ENV_DOWNLOAD}=1 (needs a network; see deid_core/identity/arcface.py for licences).")


def download_weights(url: str = DEFAULT_URL, folder: Path | None = None) -> Path:
    """Opt-in download of an ArcFace ONNX (or insightface zip) into the user cache."""
    folder = folder or cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    name = url.rsplit("/", 1)[-1]
    dest = folder / name
    if not dest.is_file():
        try:
            with paths.atomic_write(dest) as tmp:
                urllib.request.urlretrieve(url, tmp)  # noqa: S310 (user opted in)
        except Exception as exc:
            raise DeidError(f"could not download ArcFace weights from {url}: {exc}. "
                            + _missing_message(None)) from exc
    if dest.suffix == ".zip":
        with zipfile.ZipFile(dest) as z:
            members = [m for m in z.namelist() if m.endswith(ZIP_MEMBER)] or \
                      [m for m in z.namelist() if m.endswith(".onnx")]
            if not members:
                raise DeidError(f"{dest} contains no .onnx file")
            out = folder / Path(members[0]).name
            if not out.is_file():
                with paths.atomic_write(out) as tmp:
                    tmp.write_bytes(z.read(members[0]))
            return out
    return dest


def resolve_weights(weights: str | os.PathLike | None = None, download: bool | None = None) -> Path:
    """The ONNX path: ``weights`` → ``$DEID_ARCFACE_WEIGHTS`` → ``<cache>/arcface/*.onnx`` →
    opt-in download; otherwise a DeidError saying where to put the file."""
    given = weights or os.environ.get(ENV_WEIGHTS)
    if given:
        p = Path(given).expanduser()
        if not p.is_file():
            raise DeidError(_missing_message(str(p)))
        return p
    found = sorted(cache_folder().glob("*.onnx")) if cache_folder().is_dir() else []
    if found:
        return found[0]
    if download is None:
        download = os.environ.get(ENV_DOWNLOAD, "") not in ("", "0")
    if download:
        return download_weights(os.environ.get("DEID_ARCFACE_URL", DEFAULT_URL))
    raise DeidError(_missing_message(None))


def _normalises_inside(model) -> bool:
    """insightface's rule: a graph starting with Sub/Mul nodes takes raw 0..255 pixels."""
    ops = [n.op_type for n in model.graph.node[:8]]
    return "Sub" in ops and "Mul" in ops


class ArcFace(IdentityNetwork):
    """ArcFace-family ONNX model via onnxruntime (batched)."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu",
                 input_mean: float | None = None, input_std: float | None = None,
                 threads: int | None = None, download: bool | None = None, batch_size: int = 32):
        import onnx  # optional ONNX backend (not on the GPU image)
        import onnxruntime as ort  # optional ONNX backend (not on the GPU image)
        self.path = resolve_weights(weights, download)
        try:
            model = onnx.load(str(self.path))
        except Exception as exc:
            raise DeidError(f"{self.path} is not a readable ONNX model: {exc}") from exc
        inits = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise DeidError(f"{self.path}: expected one image input, found {[i.name for i in inputs]}")
        dims = inputs[0].type.tensor_type.shape.dim
        shape = [d.dim_value if d.dim_value else None for d in dims]
        if len(shape) != 4 or shape[1] != 3 or shape[2] != 112 or shape[3] != 112:
            raise DeidError(f"{self.path}: expected an N×3×112×112 input (ArcFace), got {shape}")
        inside = _normalises_inside(model)
        self.input_mean = input_mean if input_mean is not None else (0.0 if inside else 127.5)
        self.input_std = input_std if input_std is not None else (1.0 if inside else 127.5)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.batch_size = batch_size
        self.batched = shape[0] is None
        session = None
        if not self.batched:  # fixed batch 1: try freeing the batch dimension
            try:
                session = ort.InferenceSession(_batched_model(self.path), opts, providers=providers)
                name = session.get_inputs()[0].name
                out = session.run(None, {name: np.zeros((2, 3, 112, 112), np.float32)})[0]
                self.batched = out.shape[0] == 2
            except Exception:
                session = None
            if not self.batched:
                session = None
        self.session = session or ort.InferenceSession(str(self.path), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        probe = self.session.run(None, {self.input_name: np.zeros((1, 3, 112, 112), np.float32)})[0]
        dim = int(np.prod(probe.shape[1:]))
        self.info = IdentityInfo("arcface", 112, dim, "cosine", 1.0 - COS_THRESHOLD)

    def chip(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        return C.align_five_point(image, C.arcface_five_points(landmarks68), 112)

    def _embed_batch(self, chips: np.ndarray) -> np.ndarray:
        x = (chips.transpose(0, 3, 1, 2).astype(np.float32) - self.input_mean) / self.input_std
        x = np.ascontiguousarray(x)
        if self.batched:
            return self.session.run(None, {self.input_name: x})[0].reshape(len(x), -1)
        return np.concatenate([self.session.run(None, {self.input_name: x[i:i + 1]})[0].reshape(1, -1)
                               for i in range(len(x))])


def load(device: str = "cpu", weights: str | os.PathLike | None = None, **kwargs) -> ArcFace:
    """Registry entry (``load_identity_network("arcface", weights=PATH)``)."""
    return ArcFace(weights=weights, device=device, **kwargs)

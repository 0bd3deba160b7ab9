"""dlib's face-recognition ResNet-29 (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

Stand-in for the paper's face classifier (ResNet-50 on VGGFace2, §3.2, §3.2.1), which is not
available offline. The architecture is dlib's ``anet_type`` (tools/python/src/face_recognition.cpp):
input 150×150 RGB, ``(pixel - mean) / 256``; con 7×7/2 (32) + affine + relu + max-pool 3×3/2;
residual levels 32 (×3), 64 (down + ×3), 128 (down + ×2), 256 (down + ×2), 256 (down);
global average pool; fc 256→128 without bias. The output of dlib's ``loss_metric`` is that fc
output, unnormalised; two faces match when the euclidean distance is < 0.6.

Convolutions and pools pad ``k // 2`` at stride 1 and 0 otherwise; ``add_prev`` with mismatched
shapes zero-extends both operands to the larger channel count and height/width (bottom/right).

Named activations (:meth:`DlibResNet.features`), with the paper's §3.2.1 layers they stand for
(matched by downsampling factor: 224/112 ≈ 150/72, 224/56 ≈ 150/35, 224/28 ≈ 150/17,
224/7 = 32 ≈ 150/4):

===============  ==========  ==========  ===========================================
key              shape       paper       where
===============  ==========  ==========  ===========================================
``"a72"``        32×72×72    112×112     stem conv 7×7/2 + affine + relu (before max-pool)
``"a35"``        32×35×35    56×56       end of level 32 (after max-pool + 3 blocks)
``"a17"``        64×17×17    28×28       end of level 64
``"a8"``         128×8×8     (14×14)     end of level 128
``"a4"``         256×4×4     7×7         end of first level 256
``"a2"``         256×2×2     —           end of last level 256 (before global pool)
``"descriptor"`` 128         1×1         fc output = the embedding
===============  ==========  ==========  ===========================================

:data:`PAPER_LAYERS` holds that mapping for the perceptual loss.

Weights come from dlib's ``.dat`` (:mod:`deid_core.identity.dlib_reader`), or from a ``.pt`` of
torch tensors written by :func:`export_dlib_weights` (fp16 by default), which needs neither dlib
nor the ``.dat`` (e.g. on a GPU machine without our environment).
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.identity.dlib_reader import read_dlib_network

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_FORMAT = "deid-dlib-resnet29-v1"   # .pt written by export_dlib_weights
CHIP_SIZE = 150
MEAN_RGB = (122.782, 117.001, 104.298)
THRESHOLD = 0.6
FEATURE_KEYS = ("a72", "a35", "a17", "a8", "a4", "a2", "descriptor")
PAPER_LAYERS = {112: "a72", 56: "a35", 28: "a17", 7: "a4", 1: "descriptor"}
# (channels, number of blocks, first block downsamples) from input to output.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class Affine(nn.Module):
    """dlib ``affine_`` in conv mode: ``x * gamma[c] + beta[c]`` (frozen batch-norm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev``: zero-extend both operands to the larger C/H/W, then add."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def ext(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))
    return ext(a) + ext(b)


class ResBlock(nn.Module):
    """``relu(add_prev(affine(con(relu(affine(con(x))))), x or avg_pool(x)))``."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.aff2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(y, skip))


class DlibResNet(nn.Module):
    """The network; input: normalised chips ``(pixel - mean) / 256``, N×3×150×150 (RGB)."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.aff0 = Affine(32)
        blocks, cin = [], 32
        for cout, n, down in LEVELS:
            level = [ResBlock(cin, cout, down)] + [ResBlock(cout, cout, False) for _ in range(n - 1)]
            blocks.append(nn.Sequential(*level))
            cin = cout
        self.levels = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        h = F.relu(self.aff0(self.conv0(x)))
        out["a72"] = h
        h = F.max_pool2d(h, 3, 2)
        for key, level in zip(FEATURE_KEYS[1:6], self.levels):
            h = level(h)
            out[key] = h
        out["descriptor"] = self.fc(h.mean(dim=(2, 3)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["descriptor"]


def _state_from_nodes(nodes) -> dict[str, torch.Tensor]:
    """Map the parsed layers (outermost first) onto :class:`DlibResNet`'s parameter names."""
    inner = list(reversed(nodes))  # input first
    if inner[0].kind != "input" or tuple(round(m, 3) for m in inner[0].fields["mean"]) != MEAN_RGB:
        raise DeidError(f"unexpected dlib input layer {inner[0]}")
    cons = [n for n in inner if n.kind.startswith("con_")]
    affs = [n for n in inner if n.kind.startswith("affine")]
    fcs = [n for n in inner if n.kind.startswith("fc_")]
    if len(cons) != 29 or len(affs) != 29 or len(fcs) != 1:
        raise DeidError(f"unexpected dlib network: {len(cons)} con, {len(affs)} affine, {len(fcs)} fc "
                        f"(expected 29, 29, 1 for the ResNet-29 face model)")
    net = DlibResNet()
    names = ["conv0"]
    for li, level in enumerate(net.levels):
        for bi in range(len(level)):
            names += [f"levels.{li}.{bi}.conv1", f"levels.{li}.{bi}.conv2"]
    state = {}
    modules = dict(net.named_modules())
    for name, con, aff in zip(names, cons, affs):
        conv = modules[name]
        f = con.fields
        if tuple(f["weight"].shape) != tuple(conv.weight.shape):
            raise DeidError(f"dlib layer {name}: weight {f['weight'].shape} != {tuple(conv.weight.shape)}")
        if (f["stride_y"], f["padding_y"]) != (conv.stride[0], conv.padding[0]):
            raise DeidError(f"dlib layer {name}: stride/padding {f['stride_y']}/{f['padding_y']} unexpected")
        state[f"{name}.weight"] = torch.from_numpy(f["weight"].copy())
        state[f"{name}.bias"] = torch.from_numpy(f["bias"])
        aname = name.replace("conv0", "aff0").replace("conv1", "aff1").replace("conv2", "aff2")
        state[f"{aname}.weight"] = torch.from_numpy(aff.fields["gamma"])
        state[f"{aname}.bias"] = torch.from_numpy(aff.fields["beta"])
    state["fc.weight"] = torch.from_numpy(fcs[0].fields["weight"].T.copy())
    state["mean"] = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
    return state


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _state_from_dat(dat: Path) -> dict[str, torch.Tensor]:
    """fp32 state dict of the port from dlib's ``.dat``, parsed once and cached as
    ``<cache_dir>/dlib_resnet_<sha256[:16]>.pt``."""
    cache = paths.cache_dir() / f"dlib_resnet_{_sha256(dat)[:16]}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:  # corrupt cache: rebuild it
            pass
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        state = _state_from_nodes(read_dlib_network(dat))
    finally:
        sys.setrecursionlimit(limit)
    with paths.atomic_write(cache) as tmp:
        torch.save(state, tmp)
    return state


def _state_from_weights(path: Path) -> dict[str, torch.Tensor]:
    """fp32 state dict from a file written by :func:`export_dlib_weights`."""
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DeidError(f"cannot read dlib weights {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != WEIGHTS_FORMAT:
        raise DeidError(f"{path} is not a dlib weights file of this kit (format "
                        f"{WEIGHTS_FORMAT!r}; write one with export_dlib_weights)")
    state = {k: v.float() for k, v in doc["state"].items()}
    state["mean"] = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)   # exact, whatever the dtype
    return state


def load_dlib_resnet(dat_path: Path | None = None, device: str | torch.device = "cpu") -> DlibResNet:
    """The PyTorch port with dlib's weights, frozen, in eval mode (float32).

    ``dat_path``: dlib's ``.dat`` (default: the one of ``face-recognition-models``), or a
    ``.pt`` written by :func:`export_dlib_weights` (e.g. fp16 tensors carried to a machine
    without dlib); either way the network computes in float32.
    """
    path = Path(dat_path) if dat_path else paths.dlib_model(DAT_NAME)
    if not path.is_file():
        raise DeidError(f"dlib network file not found: {path}")
    state = _state_from_weights(path) if path.suffix == ".pt" else _state_from_dat(path)
    net = DlibResNet()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise DeidError(f"{path}: weights do not fit the dlib ResNet-29 port: {exc}") from exc
    net.eval().requires_grad_(False)
    return net.to(device)


def export_dlib_weights(dst: str | os.PathLike, dat_path: Path | None = None,
                        dtype: torch.dtype = torch.float16) -> Path:
    """Write the network's weights as torch tensors (fp16 by default: 11 MB instead of the
    22 MB ``.dat``) for :func:`load_dlib_resnet`; atomic, never over an existing file."""
    dst = Path(dst)
    if dst.exists():
        raise DeidError(f"{dst} exists: choose another output (nothing is overwritten)")
    if dst.suffix != ".pt":
        raise DeidError(f"dlib weights file must end in .pt, got {dst.name}")
    dat = Path(dat_path) if dat_path else paths.dlib_model(DAT_NAME)
    state = _state_from_dat(dat)
    doc = {"format": WEIGHTS_FORMAT, "source": dat.name, "sha256": _sha256(dat),
           "dtype": str(dtype).replace("torch.", ""),
           "state": {k: v.to(dtype) for k, v in state.items() if k != "mean"}}
    with paths.atomic_write(dst) as tmp:
        torch.save(doc, tmp)
    return dst

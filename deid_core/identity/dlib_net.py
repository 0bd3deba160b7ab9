"""The loss / conditioning network object: dlib ResNet-29 port behind the identity interface."""
from __future__ import annotations

import numpy as np
import torch

from deid_core.identity import chips as C
from deid_core.identity.base import IdentityInfo, IdentityNetwork, check_tensor
from deid_core.identity.dlib_resnet import CHIP_SIZE, FEATURE_KEYS, PAPER_LAYERS, THRESHOLD, load_dlib_resnet


class DlibIdentity(IdentityNetwork):
    """dlib face recognition (ResNet-29, 128-d, euclidean, threshold 0.6) in PyTorch.

    ``embed`` takes dlib chips (``chip`` = ``dlib.get_face_chip(img, shape68, 150, 0.25)``);
    ``embed_tensor`` / ``features`` take the same chips as float N×3×150×150 in [−1, 1] and are
    differentiable w.r.t. the input; ``crop_to_chip_tensor`` cuts those chips from any aligned crop.
    """

    info = IdentityInfo("dlib", CHIP_SIZE, 128, "euclidean", THRESHOLD)
    feature_keys = FEATURE_KEYS   # keys of features(): a72, a35, a17, a8, a4, a2, descriptor
    paper_layers = PAPER_LAYERS   # §3.2.1 map size -> key: {112: a72, 56: a35, 28: a17, 7: a4, 1: descriptor}

    def __init__(self, device: str | torch.device = "cpu", dat_path=None, padding: float = 0.25,
                 weights=None):
        """``dat_path``: dlib's ``.dat`` (default: face-recognition-models'); ``weights``: a ``.pt``
        from :func:`~deid_core.identity.dlib_resnet.export_dlib_weights` instead (no dlib needed)."""
        self.device = torch.device(device)
        self.net = load_dlib_resnet(weights or dat_path, self.device)
        self.padding = padding

    def chip(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        return C.dlib_face_chip(image, landmarks68, CHIP_SIZE, self.padding)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) * 127.5 - self.net.mean) / 256.0

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named activations (see :mod:`deid_core.identity.dlib_resnet`) of chips in [−1, 1]."""
        return self.net.features(self._normalise(check_tensor(x, CHIP_SIZE, "dlib.features")))

    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """128-d descriptors (unnormalised, like dlib) of chips N×3×150×150 in [−1, 1]."""
        return self.net(self._normalise(check_tensor(x, CHIP_SIZE, "dlib.embed_tensor")))

    def crop_to_chip_tensor(self, x_aligned: torch.Tensor, crop_landmarks68) -> torch.Tensor:
        """Differentiable dlib chip (N×3×150×150, [−1, 1]) from aligned crops and their landmarks."""
        return C.crop_to_chip_tensor(x_aligned, crop_landmarks68, CHIP_SIZE, self.padding)

    @torch.no_grad()
    def _embed_batch(self, chips: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(chips)).to(self.device).permute(0, 3, 1, 2).float()
        return self.net((x - self.net.mean) / 256.0).cpu().numpy()

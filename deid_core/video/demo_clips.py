"""Short test and demo clips made from a still photo: a camera window panning across it.

A face *enters from the side* when the window starts beside it and pans onto it; the clip can
be rotated by 90° without any rotation metadata (a phone held sideways). The frames are
written as H.264 mp4 (no audio) through the kit's own writer, atomically. The notebooks, the
tests and the benchmarks all make their clips here, from the committed public-domain NASA
photos, so nothing depends on data that cannot be shipped.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import read_image
from deid_core.video.codec import Mp4Writer


@dataclass
class PanClip:
    """A window of ``size`` (w, h) moving linearly from ``start`` to ``end`` (window centre,
    in pixels of the photo scaled by ``scale``) over ``frames`` frames; ``hold`` more frames
    stay at ``end``. ``rotate``: 0, 90 or 270 (degrees counter-clockwise, like ``np.rot90``)."""
    size: tuple[int, int] = (640, 480)
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    frames: int = 40
    hold: int = 10
    scale: float = 1.0
    fps: int = 25
    rotate: int = 0
    crf: int = 16

    def __post_init__(self) -> None:
        if self.rotate not in (0, 90, 270):
            raise DeidError(f"rotate must be 0, 90 or 270, got {self.rotate}")
        if self.frames < 1 or self.hold < 0:
            raise DeidError("a pan clip needs frames >= 1 and hold >= 0")


def pan_frames(photo: np.ndarray, clip: PanClip) -> list[np.ndarray]:
    """The clip's RGB frames (the photo is padded with its edge colour where the window
    leaves it)."""
    img = cv2.resize(photo, None, fx=clip.scale, fy=clip.scale, interpolation=cv2.INTER_AREA) \
        if clip.scale != 1.0 else photo
    w, h = clip.size
    out = []
    n = clip.frames + clip.hold
    for i in range(n):
        a = min(i / max(clip.frames - 1, 1), 1.0)
        cx = clip.start[0] + a * (clip.end[0] - clip.start[0])
        cy = clip.start[1] + a * (clip.end[1] - clip.start[1])
        M = np.float32([[1, 0, w / 2 - cx], [0, 1, h / 2 - cy]])
        f = cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append(np.ascontiguousarray(np.rot90(f, clip.rotate // 90)))
    return out


def write_frames(path: str | os.PathLike, frames: list[np.ndarray], fps: int = 25, crf: int = 16) -> Path:
    """Write RGB frames as an H.264 mp4 (no audio), atomically."""
    path = Path(path)
    if not frames:
        raise DeidError("no frames to write")
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.atomic_write_path(path)
    writer = Mp4Writer(tmp, w, h, Fraction(fps), Fraction(1, fps), crf=crf)
    try:
        for i, f in enumerate(frames):
            writer.write(f, i)
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.abort()
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def pan_clip(photo: str | os.PathLike | np.ndarray, out: str | os.PathLike, clip: PanClip) -> Path:
    """Make a pan clip of a photo (path or RGB array) at ``out`` (.mp4)."""
    img = read_image(photo) if not isinstance(photo, np.ndarray) else photo
    return write_frames(out, pan_frames(img, clip), clip.fps, clip.crf)


#: the clips the tests, notebook 05 and the benchmarks make: (photo in data/sample/inflight, pan)
DEMO_CLIPS: dict[str, tuple[str, PanClip]] = {
    # Andrew Morgan's face enters the window from its left edge, then the pan stops
    "entering": ("Andrew_Morgan_inflight.jpg",
                 PanClip(size=(480, 360), start=(760, 230), end=(470, 230), frames=22, hold=3,
                         scale=0.75)),
    # Andrew Morgan and Nick Hague side by side, a slow pan
    "pair": ("Andrew_Morgan__Nick_Hague_inflight.jpg",
             PanClip(size=(480, 320), start=(880, 300), end=(840, 300), frames=16, hold=4)),
    # Andrew Morgan, nearly still (8 frames)
    "still": ("Andrew_Morgan_inflight.jpg",
              PanClip(size=(480, 360), start=(470, 230), end=(460, 230), frames=8, hold=0,
                      scale=0.75)),
}


def demo_clip(name: str, out_dir: str | os.PathLike, rotate: int = 0) -> Path:
    """Make the demo clip ``name`` (:data:`DEMO_CLIPS`), optionally turned by ``rotate``°
    without metadata, as ``out_dir/<name>[_rot<deg>].mp4``."""
    if name not in DEMO_CLIPS:
        raise DeidError(f"unknown demo clip '{name}' (choose from {', '.join(DEMO_CLIPS)})")
    photo, clip = DEMO_CLIPS[name]
    if rotate:
        clip = dataclasses.replace(clip, rotate=rotate)
    out = Path(out_dir) / (f"{name}_rot{rotate}.mp4" if rotate else f"{name}.mp4")
    return pan_clip(paths.sample_dir() / "inflight" / photo, out, clip)

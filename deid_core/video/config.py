"""Settings of the video and live runs (paper §3 test time, applied per frame as in §4).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deid_core.errors import DeidError


#: largest frame accepted (4K DCI and UHD fit); bigger frames → DeidError.
MAX_FRAME_SIDE = 4096


MAX_FRAME_PIXELS = 4096 * 2304


# ----------------------------------------------------------------------------------------
# Configuration.
@dataclass
class VideoConfig:
    """Settings of the video/live pipeline (tracking, smoothing, fail-closed, I/O)."""
    detect_every: int = 1          # run the detector every k frames; landmarks re-fitted between
    stabilize: bool = True         # One-Euro smoothing of each track's landmarks
    min_cutoff: float = 1.0        # One-Euro: minimum cutoff frequency (Hz)
    beta: float = 1.5              # One-Euro: speed coefficient (speed in face sizes / s)
    d_cutoff: float = 1.0          # One-Euro: cutoff for the speed estimate (Hz)
    iou_threshold: float = 0.3     # box IoU to match a detection to a track
    track_ttl: int = 12            # fail-open only: frames a missed track is kept for matching
    fail_closed: bool = True       # keep lost faces obscured until re-detected or off-frame
    pixel_block: int = 12          # fail-closed pixelation: blocks across the face box
    fail_closed_expand: float = 1.6  # fail-closed region: box side × this, around the centre
    lost_growth: float = 0.05      # lost face: region grows by this × side per missed frame
    lost_max_expand: float = 3.0   # ... up to this × the face box side
    lost_motion_frames: int = 15   # lost face: follow its last velocity for at most this many frames
    scene_cut: float = 20.0        # mean |Δ| of 32×18 gray thumbnails that ends lost tracks (0: never)
    scene_cut_hist: float = 0.15   # ... together with this L1 change of the 16-bin gray histogram
    min_face: int = 24             # faces with a box side below this are not aligned (obscured)
    queue_size: int = 8            # decode/encode queue length (frames), bounded
    crf: int = 18                  # libx264 quality
    preset: str = "veryfast"       # libx264 speed preset
    max_frames: int | None = None  # stop after this many frames (tests, benchmarks)
    two_pass: bool = True          # files: scan pass, then render pass (live: always one pass)
    replay: bool = True            # two-pass: follow tracks backwards/forwards over missed frames
    replay_seconds: float = 2.0    # ... for at most this long
    rotated_views: bool = True     # files: also detect faces turned by ±90° (face.RotationPolicy)
    rotate_every: int = 10         # ... on every n-th frame while no turned face is followed
    progress: bool = True          # tqdm progress bar with fps
    check_every: int = 1           # identity check (aligner.check) on every n-th frame (live: 3)

    def __post_init__(self) -> None:
        if not (isinstance(self.detect_every, (int, np.integer)) and self.detect_every >= 1):
            raise DeidError(f"detect_every must be an integer >= 1, got {self.detect_every!r}")
        if not 0.0 < self.iou_threshold < 1.0:
            raise DeidError(f"iou_threshold must be in (0, 1), got {self.iou_threshold!r}")
        if self.track_ttl < 0 or self.queue_size < 1 or self.pixel_block < 2:
            raise DeidError("track_ttl must be >= 0, queue_size >= 1, pixel_block >= 2")
        if self.rotate_every < 1:
            raise DeidError(f"rotate_every must be >= 1, got {self.rotate_every!r}")
        if not (isinstance(self.check_every, (int, np.integer)) and self.check_every >= 1):
            raise DeidError(f"check_every must be an integer >= 1, got {self.check_every!r}")
        if not 0 < self.replay_seconds <= 60:
            raise DeidError(f"replay_seconds must be in (0, 60], got {self.replay_seconds!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise DeidError(f"max_frames must be >= 1, got {self.max_frames!r}")

"""Video files and live streams around the per-frame pipeline (paper §3, §4 "strictly per frame").

Modules: :mod:`~deid_core.video.config`, :mod:`~deid_core.video.smoothing` (One-Euro),
:mod:`~deid_core.video.tracking` (tracks, fail-closed :class:`FrameProcessor`),
:mod:`~deid_core.video.codec` (PyAV decode/encode, audio), :mod:`~deid_core.video.files`
(``deid video``), :mod:`~deid_core.video.live` (``deid live``). Frames are uint8 RGB H×W×3
everywhere (BGR only at the OpenCV edge).
"""
from deid_core.video.config import (  # noqa: F401
    MAX_FRAME_PIXELS, MAX_FRAME_SIDE, VideoConfig)
from deid_core.video.smoothing import (  # noqa: F401
    OneEuroFilter)
from deid_core.video.tracking import (  # noqa: F401
    box_iou, FixedCropFn, FrameProcessor, CropFnProvider, pattern_crops, pixelate, Track)
from deid_core.video.codec import (  # noqa: F401
    FrameReader, MP4_AUDIO_COPY, Mp4Writer, probe_video, read_frames, remux_copy, upright,
    VideoInfo)
from deid_core.video.files import (  # noqa: F401
    check_paths, deidentify_video, summarize, summary_path)
from deid_core.video.live import (  # noqa: F401
    draw_fps, gui_available, LiveSource, run_live)

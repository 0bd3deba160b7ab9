"""One still per video, for the model card's "a frame of each shared video" grids.

Writes the frame at ``--at`` (fraction of the clip, default the middle) of every video in
``--videos`` (default the shared data's ``videos/``) as ``OUT/<video stem>.png`` (the λ sweep
then measures the face its landmark detector finds first). The shared clips may not be committed, so OUT defaults
to the ignored ``results/video_frames``. Then, e.g.::

    python scripts/video_frames.py
    deid eval lambda --images results/video_frames --checkpoint M.pt \
        --lams 0 5e-6 1e-5 1.5e-5 2e-5 --max-images 12 --evaluator sface \
        --evaluator facenet-casia --name dial_videos
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import write_image
from deid_core.video import FrameReader, probe_video

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def frame_at(path: Path, at: float) -> tuple[int, np.ndarray]:
    """(frame number, upright RGB frame) at fraction ``at`` of the clip (decoded with the
    kit's own reader, so a rotation tag is applied as in ``deid video``)."""
    n = probe_video(path).frames
    k = max(0, min(n - 1, int(round(at * (n - 1))))) if n else 0
    reader = FrameReader(path, queue_size=2, max_frames=k + 1)
    reader.start()
    frame = None
    for idx, _, _, img in reader:
        frame = (idx, img)
    if frame is None:
        raise DeidError(f"{path}: no frame decoded ({reader.error or 'empty video'})")
    return frame


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, default=None, help="folder of clips (default: shared videos/)")
    ap.add_argument("--out", type=Path, default=paths.REPO_ROOT / "results" / "video_frames")
    ap.add_argument("--at", type=float, default=0.5, help="where in the clip (0 … 1)")
    args = ap.parse_args(argv)
    src = args.videos
    if src is None:
        root = paths.shared_data_dir()
        if root is None or not (root / "videos").is_dir():
            raise DeidError("the shared data's videos/ is absent: pass --videos FOLDER")
        src = root / "videos"
    clips = sorted(p for p in Path(src).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise DeidError(f"no videos in {src}")
    args.out.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        k, rgb = frame_at(clip, args.at)
        dst = args.out / f"{clip.stem}.png"
        write_image(dst, rgb)
        print(f"{clip.name}: frame {k} → {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

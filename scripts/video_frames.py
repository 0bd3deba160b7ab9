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

import cv2

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import write_image

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def frame_at(path: Path, at: float) -> "tuple[int, object]":
    """(frame number, RGB frame) at fraction ``at`` of the clip."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DeidError(f"{path}: cannot open the video")
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        k = max(0, min(n - 1, int(round(at * (n - 1)))))
        cap.set(cv2.CAP_PROP_POS_FRAMES, k)
        ok, bgr = cap.read()
        if not ok:
            raise DeidError(f"{path}: cannot read frame {k} of {n}")
        return k, bgr[:, :, ::-1].copy()
    finally:
        cap.release()


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

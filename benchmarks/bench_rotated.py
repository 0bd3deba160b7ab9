#!/usr/bin/env python
"""Cost of the rotated views (:mod:`deid_core.face.rotated`) per 640×480 frame.

Frames: ``bench_align``'s test frame (a NASA portrait on a blurred in-flight background, one
upright face) and the same frame with the portrait pasted turned 90° (a person lying down).
Timed, interleaved, median of ``--repeats`` runs, as ratios against the upright detection
(:meth:`FaceAligner.detect`, YuNet default) measured in the same process:

- ``views 90+270``: :func:`detect_views` (two more detections on the turned frame);
- ``policy every=N``: :class:`RotationPolicy` over ``--frames`` frames, its own measured cost
  per frame (``stats()["ms_per_frame"]``), with no turned face (views on every N-th frame) and
  with the turned face present (views every frame while it is followed);
- ``audit``: :meth:`deid_core.audit.FaceAuditor.faces` (YuNet + HOG up-1) upright only and with
  the views 0, 90, 270 (the default).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rotated.py [--repeats 10] [--every 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_align import test_frame  # noqa: E402
from deid_core import paths  # noqa: E402
from deid_core.audit import AuditConfig, FaceAuditor  # noqa: E402
from deid_core.face import FaceAligner, RotationPolicy, read_image  # noqa: E402
from deid_core.face import detect_views, merge_faces  # noqa: E402


def turned_frame() -> np.ndarray:
    """640×480: the portrait of :func:`test_frame`, turned 90° clockwise, face ≈ 170 px."""
    frame = test_frame()
    frame[:] = cv2.GaussianBlur(frame, (0, 0), 9)
    face = read_image(paths.sample_dir() / "portraits" / "Nick_Hague.jpg")
    s = 400 / face.shape[0]
    face = np.rot90(cv2.resize(face, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), -1)
    h, w = face.shape[:2]
    frame[240 - h // 2:240 - h // 2 + h, 640 - w:] = face
    return frame


def median_ms(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--frames", type=int, default=40, help="frames per policy run")
    ap.add_argument("--no-audit", action="store_true")
    args = ap.parse_args(argv)
    frames = {"upright face": test_frame(), "turned face": turned_frame()}
    al = FaceAligner()
    for f in frames.values():                                # load the models, all net sizes
        detect_views(al, f)
        al.detect(f)
    print(f"640x480 frames, YuNet + dlib 68 points, median of {args.repeats} runs, ms "
          f"(CPU, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    for name, frame in frames.items():
        up_faces = al.detect(frame)
        merged = merge_faces(up_faces, detect_views(al, frame))
        t = {"upright": [], "views": []}
        for _ in range(args.repeats):                        # interleaved: fair under load
            t["upright"].append(median_ms(lambda: al.detect(frame), 1))
            t["views"].append(median_ms(lambda: detect_views(al, frame), 1))
        up, views = statistics.median(t["upright"]), statistics.median(t["views"])
        print(f"[{name}] faces upright {len(up_faces)}, merged {len(merged)} "
              f"(views {[f.view for f in merged]})")
        print(f"  upright detect         {up:8.1f} ms  1.00x")
        print(f"  views 90+270           {views:8.1f} ms  {views / up:.2f}x")
        pol = RotationPolicy(every=args.every)
        for _ in range(args.frames):
            pol.faces(al, frame, up_faces)
        s = pol.stats()
        print(f"  policy every={args.every:<3d}      {s['ms_per_frame']:8.1f} ms  "
              f"{s['ms_per_frame'] / up:.2f}x  (views ran on {s['runs']}/{s['frames']} frames, "
              f"{s['ms_per_run']:.1f} ms per run)")
    if not args.no_audit:
        frame = frames["turned face"]
        for views in ((0,), (0, 90, 270)):
            aud = FaceAuditor(AuditConfig(views=views))
            found = aud.faces(frame)
            ms = median_ms(lambda: aud.faces(frame), max(3, args.repeats // 3))
            print(f"  audit views {str(views):13s} {ms:8.1f} ms  faces {[d for _, _, d in found]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

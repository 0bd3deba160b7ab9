#!/usr/bin/env python
"""Per-stage CPU time of the test-time pipeline (paper §3 a–d, f–h) on a 640×480 frame.

Stages: detect (a, face boxes), landmarks (b, 68 points), warp (c+d, Umeyama + warpAffine),
paste (f+g+h, unwarp image and mask, blend, feathered hull merge). The network (e) is a
pass-through and not timed. Baseline: HOG detection at full scale; the fast path detects
on the frame downscaled by ``detect_scale`` (landmarks still at full scale). Ratios are
against the baseline measured in the same process (median of ``--repeats`` runs).

``--paste-paths``: the paste step (f+g+h) of a warp head at the frame's resolution
(:func:`~deid_core.face.aligner.warp_frame`: the crop's flow mapped into the frame, one
``cv2.remap``) against pasting the 128-px crop (baseline), on the 640×480 frame and on the
same frame scaled to 1080p.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_align.py [--repeats 20] [--all-detectors]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_align.py --paste-paths
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deid_core import paths  # noqa: E402
from deid_core.face import AlignConfig, Face, FaceAligner, passthrough_crops, read_image  # noqa: E402
from deid_core.face import square_box  # noqa: E402


def test_frame() -> np.ndarray:
    """640×480 RGB: a NASA portrait (scaled to 400 px high, face ≈ 170 px) on a blurred
    in-flight photo background."""
    sample = paths.sample_dir()
    bg = read_image(sample / "inflight" / "Alexander_Gerst_inflight.jpg")
    frame = cv2.GaussianBlur(cv2.resize(bg, (640, 480), interpolation=cv2.INTER_AREA), (0, 0), 3)
    face = read_image(sample / "portraits" / "Nick_Hague.jpg")
    s = 400 / face.shape[0]
    face = cv2.resize(face, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    h, w = face.shape[:2]
    frame[480 - h:, 320 - w // 2:320 - w // 2 + w] = face
    return frame


STAGES = ("detect", "landmarks", "warp", "paste")


def time_once(aligner: FaceAligner, frame: np.ndarray) -> tuple[dict[str, float], int]:
    """One pass through the stages; seconds per stage and the number of faces."""
    t0 = time.perf_counter()
    boxes = aligner.detect_boxes(frame)
    t1 = time.perf_counter()
    faces = [Face(square_box(*b), aligner.landmarks(frame, b), sc) for b, sc in boxes]
    t2 = time.perf_counter()
    Ms = [aligner.transform(f.landmarks) for f in faces]
    crops = [aligner.warp(frame, M) for M in Ms]
    t3 = time.perf_counter()
    out = frame.copy()
    if crops:
        images, masks = passthrough_crops(np.stack(crops))      # step e, not timed
        t4 = time.perf_counter()
        for f, M, img, m in zip(faces, Ms, images, masks):
            aligner.paste(out, f, M, img, m, inplace=True)
    else:
        t4 = time.perf_counter()
    t5 = time.perf_counter()
    return dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t5 - t4))), len(faces)


def paste_paths(repeats: int) -> None:
    """Median ms of the paste step per path and frame size (see the module doc)."""
    aligner = FaceAligner(AlignConfig(size=128))
    rng = np.random.default_rng(0)
    coarse = rng.normal(0, 2.0, (8, 8, 3)).astype(np.float32)
    fields = cv2.resize(coarse, (128, 128), interpolation=cv2.INTER_CUBIC)   # a smooth flow
    mask = np.ones((128, 128), np.float32)
    print(f"paste step, 1 face, crop 128, median of {repeats} runs, ms")
    for label, scale in (("640x480", 1.0), ("1920x1440 (1080p-scale face)", 3.0)):
        frame = test_frame()
        if scale != 1.0:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        face = aligner.detect(frame)[0]
        M = aligner.transform(face.landmarks)
        crop = aligner.warp(frame, M)
        t: dict[str, list[float]] = {"crop": [], "frame": []}
        for _ in range(repeats):                                   # interleaved: fair under load
            for path, f in (("crop", None), ("frame", fields)):
                t0 = time.perf_counter()
                aligner.paste(frame, face, M, crop, mask, fields=f)
                t[path].append(time.perf_counter() - t0)
        crop_ms, frame_ms = (statistics.median(t[k]) * 1000 for k in ("crop", "frame"))
        print(f"{label:30s} crop paste {crop_ms:7.2f}  frame warp {frame_ms:7.2f}  "
              f"x crop {frame_ms / crop_ms:5.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--all-detectors", action="store_true", help="also time dlib CNN and MTCNN")
    ap.add_argument("--paste-paths", action="store_true",
                    help="time a warp head's frame-resolution paste against the crop paste")
    args = ap.parse_args(argv)
    if args.paste_paths:
        paste_paths(args.repeats)
        return 0
    frame = test_frame()
    runs = [("hog scale 1.0 (baseline)", AlignConfig(size=args.size)),
            ("hog scale 0.5 (fast path)", AlignConfig(size=args.size, detect_scale=0.5)),
            ("hog scale 0.35 (fast path)", AlignConfig(size=args.size, detect_scale=0.35)),
            ("hog scale 1.0, crop 128", AlignConfig(size=128))]
    if args.all_detectors:
        runs += [("mtcnn scale 1.0", AlignConfig(size=args.size, detector="mtcnn")),
                 ("cnn scale 0.5", AlignConfig(size=args.size, detector="cnn", detect_scale=0.5))]
    print(f"640x480 frame, crop {args.size}, median of {args.repeats} runs, ms "
          f"(CPU, OMP_NUM_THREADS={__import__('os').environ.get('OMP_NUM_THREADS', 'unset')})")
    print(f"{'config':28s} {'faces':>5s} {'detect':>8s} {'landmk':>8s} {'warp':>8s} "
          f"{'paste':>8s} {'total':>8s} {'x base':>7s}")
    aligners = [FaceAligner(cfg) for _, cfg in runs]
    for al in aligners:
        al.detect(frame)                                        # load the models once
    times: list[dict[str, list[float]]] = [{k: [] for k in STAGES} for _ in runs]
    n_faces = [0] * len(runs)
    for rep in range(args.repeats):                             # interleaved: fair under load
        for i, al in enumerate(aligners):
            if al.config.detector != "hog" and rep >= max(2, args.repeats // 10):
                continue
            t, n_faces[i] = time_once(al, frame)
            for k in STAGES:
                times[i][k].append(t[k])
    base = None
    for (name, _), t, n in zip(runs, times, n_faces):
        r = {k: statistics.median(v) * 1000 for k, v in t.items()}
        r["total"] = sum(r.values())
        base = base or r
        print(f"{name:28s} {n:5d} {r['detect']:8.2f} {r['landmarks']:8.2f} "
              f"{r['warp']:8.2f} {r['paste']:8.2f} {r['total']:8.2f} "
              f"{base['total'] / r['total']:6.2f}x  (detect {base['detect'] / r['detect']:.2f}x)")
    print(f"detect share of baseline total: {base['detect'] / base['total']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

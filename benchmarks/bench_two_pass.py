#!/usr/bin/env python
"""Speed of the two-pass file mode against the one-pass (live-like) mode, same process.

Clips: the 640×480 pan over the in-flight photo where Andrew Morgan enters from the side
(:mod:`deid_core.video.demo_clips`, committed photo) and, when the shared data is present, the
first ``--street-frames`` frames of the 1080p street clip (several small faces). Each clip runs
through :func:`deid_core.video.deidentify_video` with the committed starter model on CPU:

- ``one-pass``: the baseline (scan and render interleaved per frame, no replay, no rotated views);
- ``two-pass``: scan (with replay) + render, rotated views off (the cost of reading twice + replay);
- ``two-pass+rot``: the ``deid video`` default (rotated views every 10th frame while none is followed).

Printed as fps and as ratios to the one-pass fps measured in the same process, plus the summary's
per-stage ms per frame (``scan_*``, ``replay``, ``decode``...).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_two_pass.py [--street-frames 60] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deid_core import paths  # noqa: E402
from deid_core.pipeline import build_pipeline  # noqa: E402
from deid_core.video import VideoConfig, deidentify_video  # noqa: E402
from deid_core.video.demo_clips import PanClip, pan_clip  # noqa: E402

MODES = {"one-pass": dict(two_pass=False, rotated_views=False),
         "two-pass": dict(two_pass=True, rotated_views=False),
         "two-pass+rot": dict(two_pass=True, rotated_views=True)}


def run(clip: Path, out_dir: Path, aligner, net, max_frames: int | None,
        repeats: int = 1) -> dict:
    """Each mode's best of ``repeats`` runs, after a short untimed warm-up run."""
    deidentify_video(clip, out_dir / f"{clip.stem}_warmup.mp4", aligner, net,
                     VideoConfig(progress=False, max_frames=5), overwrite=True)
    res = {}
    for name, kw in MODES.items():
        cfg = VideoConfig(progress=False, max_frames=max_frames, **kw)
        for _ in range(repeats):
            t0 = time.perf_counter()
            s = deidentify_video(clip, out_dir / f"{clip.stem}_{name}.mp4", aligner, net, cfg,
                                 overwrite=True)
            wall = time.perf_counter() - t0
            if name not in res or wall < res[name]["wall_s"]:
                res[name] = {"frames": s["frames"], "wall_s": round(wall, 2),
                             "fps": round(s["frames"] / wall, 2),
                             "ms_per_frame": {k: v for k, v in s["ms_per_frame"].items()
                                              if v >= 1.0}}
    base = res["one-pass"]["fps"]
    for r in res.values():
        r["vs_one_pass"] = round(r["fps"] / base, 3)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--street-frames", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=1, help="best of N runs per mode")
    args = ap.parse_args()
    aligner, net = build_pipeline(None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = {"pan 640x480": (pan_clip(paths.sample_dir() / "inflight" / "Andrew_Morgan_inflight.jpg",
                                          tmp / "pan.mp4", PanClip(start=(1000, 300), end=(620, 300),
                                                                   frames=40, hold=10)), None)}
        shared = paths.shared_data_dir()
        street = shared / "videos" / "street_multi_face_1080p.mp4" if shared else None
        if street is not None and street.is_file():
            clips["street 1080p"] = (street, args.street_frames)
        else:
            print("(no shared data: the 1080p street clip is skipped)")
        report = {}
        for name, (clip, n) in clips.items():
            report[name] = run(clip, tmp, aligner, net, n, args.repeats)
            for mode, r in report[name].items():
                print(f"{name:13s} {mode:13s} {r['frames']:4d} frames  {r['fps']:6.2f} fps  "
                      f"x{r['vs_one_pass']:.2f} of one-pass  {json.dumps(r['ms_per_frame'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Figure ``results/figures/align_pipeline.png``: the test-time steps of paper §3 on the
embedded two-astronaut in-flight photo (public domain) with a stand-in network.

Panels: (a+b) boxes, 68 landmarks and hulls; (c+d) the aligned crops with the averaged-face
template; (h) the feathered hull merge weight; (f–h) the result of a stand-in network that
returns the colour-inverted crop with mask 1 (so every changed pixel is visible).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/figure_align.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deid_core import paths  # noqa: E402
from deid_core.face import AlignConfig, FaceAligner, read_image  # noqa: E402


def main() -> int:
    frame = read_image(paths.sample_dir() / "inflight" / "Andrew_Morgan__Nick_Hague_inflight.jpg")
    aligner = FaceAligner(AlignConfig(size=256))
    faces = aligner.detect(frame)
    out, info = aligner.process(frame, lambda c: (255 - c, np.ones(c.shape[:3], np.float32)),
                                faces=faces)
    weight = np.zeros(frame.shape[:2], np.float32)
    for f in faces:
        (x, y, w, h), wt = aligner.hull_weight(f.landmarks, frame.shape)
        weight[y:y + h, x:x + w] = np.maximum(weight[y:y + h, x:x + w], wt)
    # zoom on the faces
    lo = np.min([f.box[:2] for f in faces], 0) - 60
    hi = np.max([f.box[2:] for f in faces], 0) + 60
    x0, y0 = np.maximum(lo, 0).astype(int)
    x1, y1 = np.minimum(hi, frame.shape[1::-1]).astype(int)
    fig, ax = plt.subplots(1, 3 + len(faces), figsize=(4 * (3 + len(faces)), 4.2))
    ax[0].imshow(frame[y0:y1, x0:x1])
    for f in faces:
        lm = f.landmarks - [x0, y0]
        hull = cv2.convexHull(lm.astype(np.float32)).reshape(-1, 2)
        ax[0].plot(*np.vstack([hull, hull[:1]]).T, "c-", lw=1)
        ax[0].plot(lm[:, 0], lm[:, 1], "y.", ms=2)
        b = f.box - [x0, y0, x0, y0]
        ax[0].plot([b[0], b[2], b[2], b[0], b[0]], [b[1], b[1], b[3], b[3], b[1]], "m-", lw=1)
    ax[0].set_title(f"(a, b) {len(faces)} faces: box, 68 points, hull")
    for i, (f, M) in enumerate(zip(faces, info["transforms"])):
        a = ax[1 + i]
        a.imshow(aligner.warp(frame, M))
        t = aligner.template
        a.plot(t[:, 0], t[:, 1], "c.", ms=3)
        a.set_title(f"(c, d) aligned crop {i}, template (cyan)")
    ax[-2].imshow(weight[y0:y1, x0:x1], cmap="gray", vmin=0, vmax=1)
    ax[-2].set_title("(h) feathered hull weight")
    ax[-1].imshow(out[y0:y1, x0:x1])
    ax[-1].set_title("(f-h) stand-in net: inverted, mask 1")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    dst = paths.RESULTS_DIR / "figures" / "align_pipeline.png"
    tmp = paths.atomic_write_path(dst)
    fig.savefig(tmp, dpi=90)
    tmp.replace(dst)
    print(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())

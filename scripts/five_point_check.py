"""How well the ArcFace/SFace 5-point alignment does on a folder of portraits.

    python scripts/five_point_check.py [FOLDER] [--max-side 800] [--csv FILE]

For every image: our 5 points from dlib's 68 (:func:`arcface_five_points`) and MTCNN's own 5
points (facenet-pytorch, the detector insightface aligns with); prints, in pixels of the
112×112 reference frame, (1) how far ours lie from MTCNN's (:func:`five_point_agreement`) and
(2) the residual of each set to the ArcFace reference after the similarity fit
(:func:`five_point_errors`), per point and overall. Default folder: the NASA portraits of the
shared data, else the embedded sample.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deid_core import paths  # noqa: E402
from deid_core.face import FaceAligner  # noqa: E402
from deid_core.identity.chips import (arcface_five_points, five_point_agreement,  # noqa: E402
                                      five_point_errors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=None)
    ap.add_argument("--max-side", type=int, default=800)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    from facenet_pytorch import MTCNN  # optional dependency
    folder = Path(args.folder) if args.folder else None
    if folder is None:
        shared = paths.shared_data_dir()
        nasa = shared / "nasa-portraits" if shared else None
        folder = nasa if nasa and nasa.is_dir() else paths.sample_dir() / "portraits"
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        sys.exit(f"no images under {folder}")
    mtcnn, al = MTCNN(keep_all=False, device="cpu"), FaceAligner(upsample=1)
    rows = []
    for f in files:
        im = Image.open(f).convert("RGB")
        if max(im.size) > args.max_side:
            s = args.max_side / max(im.size)
            im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC)
        faces = al.detect(np.asarray(im))
        _, _, pts = mtcnn.detect(im, landmarks=True)
        if not faces or pts is None:
            continue
        ours = arcface_five_points(faces[0].landmarks).astype(np.float64)
        theirs = np.asarray(pts[0], np.float64)
        row = {"image": f.name, "agreement": five_point_agreement(ours, theirs).mean()}
        for name, p5 in (("ours", ours), ("mtcnn", theirs)):
            e = five_point_errors(p5)
            row[f"{name}_fit"] = e.mean()
            for k, part in enumerate(("eye_l", "eye_r", "nose", "mouth_l", "mouth_r")):
                row[f"{name}_{part}"] = e[k]
        rows.append(row)
    df = pd.DataFrame(rows)
    print(f"{len(df)} faces of {len(files)} images in {folder}")
    print(f"ours vs MTCNN (112 px frame): median {df.agreement.median():.2f} px, "
          f"mean {df.agreement.mean():.2f} px, ≤ 2 px on {100 * (df.agreement <= 2).mean():.0f}%")
    for name in ("ours", "mtcnn"):
        parts = ", ".join(f"{p} {df[f'{name}_{p}'].mean():.2f}"
                          for p in ("eye_l", "eye_r", "nose", "mouth_l", "mouth_r"))
        print(f"{name:5s} residual to the ArcFace reference: mean {df[f'{name}_fit'].mean():.2f} px "
              f"(≤ 2 px on {100 * (df[f'{name}_fit'] <= 2).mean():.0f}% of faces; {parts})")
    if args.csv:
        tmp = paths.atomic_write_path(Path(args.csv))
        df.to_csv(tmp, index=False)
        os.replace(tmp, args.csv)


if __name__ == "__main__":
    main()

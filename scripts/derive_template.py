#!/usr/bin/env python
"""Derive the averaged-face template ``deid_core/assets/template68.json`` (paper §3 c).

Method (generalised Procrustes analysis): detect each portrait's face with dlib HOG and
its 68 landmarks (:class:`deid_core.face.FaceAligner`, largest face per image), then
iterate: align every shape to the current mean with a least-squares similarity
(:func:`deid_core.face.umeyama`), re-average, re-normalise the mean (centroid 0, RMS
radius 1), until the mean moves < 1e-6. The final mean is stored in "unit" coordinates:
its landmark bounding box centred at (0.5, 0.5) with its larger side 1;
:func:`deid_core.face.template_landmarks` places it in a crop with the documented margin.

Default sources: all NASA portraits in the shared data (public domain; 134 faces), or the
embedded 24 when the shared data is absent. ``--extra DIR --extra-limit N`` adds the first N
images of another folder (e.g. CelebA crops) -- the committed template uses NASA only.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/derive_template.py
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deid_core import paths  # noqa: E402
from deid_core.face import (IMAGE_SUFFIXES,
                            TEMPLATE_FILE,
                            AlignConfig,
                            FaceAligner,
                            read_image,
                            umeyama,
                            apply_affine)  # noqa: E402
from deid_core.errors import DeidError  # noqa: E402


def collect_landmarks(files: list[Path], aligner: FaceAligner) -> tuple[list[np.ndarray], list[str]]:
    shapes, missed = [], []
    for f in tqdm(files, desc="landmarks", unit="img"):
        try:
            faces = aligner.detect(read_image(f))
        except DeidError:
            faces = []
        if faces:
            shapes.append(faces[0].landmarks.astype(np.float64))
        else:
            missed.append(f.name)
    return shapes, missed


def _normalise(shape: np.ndarray) -> np.ndarray:
    c = shape - shape.mean(0)
    return c / np.sqrt((c ** 2).sum(1).mean())


def procrustes_mean(shapes: list[np.ndarray], iters: int = 100) -> tuple[np.ndarray, float]:
    """Generalised Procrustes mean (centroid 0, RMS radius 1) and the final RMS residual."""
    mean = _normalise(shapes[0])
    for _ in range(iters):
        aligned = np.stack([apply_affine(umeyama(s, mean), s) for s in shapes]).astype(np.float64)
        new = _normalise(aligned.mean(0))
        new = apply_affine(umeyama(new, mean), new).astype(np.float64)  # fix the gauge (rotation)
        shift = np.abs(new - mean).max()
        mean = new
        if shift < 1e-6:
            break
    residual = float(np.sqrt(((aligned - mean) ** 2).sum(2).mean()))
    return mean, residual


def to_unit(mean: np.ndarray) -> np.ndarray:
    lo, hi = mean.min(0), mean.max(0)
    return (mean - (lo + hi) / 2) / (hi - lo).max() + 0.5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=TEMPLATE_FILE)
    ap.add_argument("--extra", type=Path, help="another image folder to include (recursively)")
    ap.add_argument("--extra-limit", type=int, default=0)
    args = ap.parse_args(argv)

    shared = paths.shared_data_dir()
    src = shared / "nasa-portraits" if shared and (shared / "nasa-portraits").is_dir() \
        else paths.sample_dir() / "portraits"
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    sources = [f"{src.name}: {len(files)} images"]
    if args.extra:
        extra = sorted(p for p in args.extra.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        extra = extra[:args.extra_limit] if args.extra_limit else extra
        files += extra
        sources.append(f"{args.extra.name}: {len(extra)} images")
    aligner = FaceAligner(AlignConfig(detector="hog", upsample=1))
    shapes, missed = collect_landmarks(files, aligner)
    if len(shapes) < 10:
        raise SystemExit(f"too few faces found ({len(shapes)}) to derive a template")
    mean, residual = procrustes_mean(shapes)
    unit = to_unit(mean)
    lo, hi = mean.min(0), mean.max(0)
    doc = {
        "description": "Averaged 68-point face (dlib/iBUG order) for the similarity alignment "
                       "of paper §3 step c. Unit coordinates: landmark bounding box centred at "
                       "(0.5, 0.5), larger side 1. See deid_core.face.template_landmarks.",
        "method": "generalised Procrustes analysis (Umeyama similarity, all 68 points) of dlib "
                  "HOG + shape_predictor_68 landmarks, largest face per image",
        "sources": sources,
        "n_faces": len(shapes),
        "n_missed": len(missed),
        "missed": missed,
        "rms_residual_of_normalised_shapes": round(residual, 5),
        "landmark_box_aspect_w_over_h": round(float((hi - lo)[0] / (hi - lo)[1]), 4),
        "derived": datetime.date.today().isoformat(),
        "script": "scripts/derive_template.py",
        "unit_landmarks": np.round(unit, 6).tolist(),
    }
    paths.write_text_atomic(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"{len(shapes)} faces ({len(missed)} missed), RMS residual {residual:.4f} "
          f"(of unit RMS radius) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which spatial band of a face carries its identity for each recogniser?

Each held-out portrait is aligned to the template (the aligned crop of §3, step d, at 256 px)
and split at a Gaussian scale σ into a low band (blur) and a high band (the rest). Another
person's aligned crop (the next portrait in the list, so every pair is two people) then
supplies one band:

- ``low from donor``: the source's high band on the donor's low band (shading, skin, colour);
- ``high from donor``: the donor's high band on the source's low band (edges of eyes, brows,
  nose, mouth).

A third mix asks how far a change of shape alone can go (the ceiling of a warp head):
``shape from donor`` resamples the source so that its 68 landmarks land on the donor's (a
piecewise-linear flow over the landmarks' triangulation, zero at the crop border), at full
and half strength; its embeddings use the moved landmarks. The last two ask what the paper's
setting can reach at best, where only the convex hull of the landmarks changes and pose and
expression stay (§3, steps g–h): the other person's face warped onto the source's landmarks
and merged inside the source's hull by the pipeline's own step-h weight, all of it
(``face swap in the hull``) or its high band at σ = 4 px.

Each recogniser (SFace and FaceNet-CASIA, the independent evaluators, and dlib, the loss
network) embeds the mixed crop with the source's own landmarks, and the table gives the median
distance to the source and the share still called the same person at the network's own
threshold. σ is given in pixels of the 128-px crop (interocular distance ≈ 33 px). Written:
``data/checkpoints/eval/identity_bands.md`` and a picture of the mixes at one σ
(``identity_bands.jpg``, rows: source | donor | shape from donor | face swap in the hull | low
band from donor | high band from donor).

    python scripts/identity_bands.py [--images data/sample/portraits] [--sigmas 1 2 4 8]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.interpolate import LinearNDInterpolator

from deid_core import paths
from deid_core.evaluate.conditions import load_faces
from deid_core.evaluate.table_writer import write_table
from deid_core.face import FaceAligner, write_image
from deid_core.identity import load_identity_network

SIZE = 256                      # crop side; σ is reported at 128 px (σ_here = 2 σ_128)
NETWORKS = ("sface", "facenet-casia", "dlib")


def band_mix(source: np.ndarray, donor: np.ndarray, sigma: float, take: str) -> np.ndarray:
    """``source`` with its ``take`` band (``"low"`` or ``"high"``) replaced by the donor's."""
    s, d = source.astype(np.float32), donor.astype(np.float32)
    s_lo = cv2.GaussianBlur(s, (0, 0), sigma)
    d_lo = cv2.GaussianBlur(d, (0, 0), sigma)
    out = s - s_lo + d_lo if take == "low" else s_lo + d - d_lo
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def shape_warp(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``image`` resampled so that points ``src`` move to ``dst`` (piecewise-linear backward
    flow over the triangulation of ``dst`` and the image border, zero on the border)."""
    h, w = image.shape[:2]
    border = np.array([[x, y] for x in np.linspace(0, w - 1, 9) for y in (0, h - 1)]
                      + [[x, y] for y in np.linspace(0, h - 1, 9)[1:-1] for x in (0, w - 1)])
    nodes = np.concatenate([dst, border])
    back = np.concatenate([src - dst, np.zeros_like(border)])
    flow = LinearNDInterpolator(nodes, back, fill_value=0.0)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = flow(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(h, w, 2).astype(np.float32)
    return cv2.remap(image, gx + d[..., 0], gy + d[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


def hull_paste(source: np.ndarray, points: np.ndarray, face: np.ndarray,
               aligner: FaceAligner) -> np.ndarray:
    """``face`` merged into ``source`` inside the convex hull of ``points`` with the pipeline's
    own step-h weight (:meth:`FaceAligner.hull_weight`), ``source`` everywhere else."""
    (x, y, w, h), weight = aligner.hull_weight(points, source.shape)
    out = source.astype(np.float32)
    wgt = weight[..., None]
    out[y:y + h, x:x + w] = wgt * face[y:y + h, x:x + w] + (1 - wgt) * out[y:y + h, x:x + w]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(paths.sample_dir() / "portraits"))
    ap.add_argument("--sigmas", type=float, nargs="+", default=[1, 2, 4, 8],
                    help="Gaussian σ in pixels of the 128-px crop")
    ap.add_argument("--figure-sigma", type=float, default=4)
    ap.add_argument("--out", default=str(paths.REPO_ROOT / "data" / "checkpoints" / "eval"))
    a = ap.parse_args(argv)
    images, landmarks, names = load_faces(a.images)
    al = FaceAligner(size=SIZE)
    Ms = [al.transform(lm) for lm in landmarks]
    crops = [al.warp(im, M) for im, M in zip(images, Ms)]
    lms = [lm @ M[:, :2].T + M[:, 2] for lm, M in zip(landmarks, Ms)]
    donors = crops[1:] + crops[:1]
    nets = {n: load_identity_network(n) for n in NETWORKS}
    ref = {n: net.embed(np.stack([net.chip(c, lm) for c, lm in zip(crops, lms)]))
           for n, net in nets.items()}

    def measure(condition: str, sigma: float | None, mixed: list[np.ndarray],
                points: list[np.ndarray] = lms) -> dict:
        row: dict = {"condition": condition, "sigma_128px": sigma}
        for n, net in nets.items():
            e = net.embed(np.stack([net.chip(c, lm) for c, lm in zip(mixed, points)]))
            d = net.distance(ref[n], e)
            row[f"{n} distance"] = round(float(np.median(d)), 3)
            row[f"{n} same person"] = round(float(np.mean(d < net.threshold)), 2)
        row["paper"] = ""
        return row

    donor_lms = lms[1:] + lms[:1]
    rows = [measure("donor (another person)", None, donors, donor_lms)]
    shape_rows: list[list[np.ndarray]] = []     # figure rows: full shape change, hull swap
    for k in (1.0, 0.5):
        goal = [lm + k * (dl - lm) for lm, dl in zip(lms, donor_lms)]
        warped = [shape_warp(c, lm, g) for c, lm, g in zip(crops, lms, goal)]
        rows.append(measure(f"shape from donor ×{k:g}", None, warped, goal))
        shift = np.median([np.linalg.norm(g - lm, axis=1).max() / 2 for lm, g in zip(lms, goal)])
        print(rows[-1], f"median largest landmark move {shift:.1f} px at 128", flush=True)
        if k == 1.0:
            shape_rows.append(warped[:6])
    onto = [shape_warp(d, dl, lm) for d, dl, lm in zip(donors, donor_lms, lms)]
    swapped = [hull_paste(c, lm, o, al) for c, lm, o in zip(crops, lms, onto)]
    rows.append(measure("face swap in the hull", None, swapped))
    features = [hull_paste(c, lm, band_mix(c, o, 8, "high"), al)
                for c, lm, o in zip(crops, lms, onto)]
    rows.append(measure("high band (σ 4) in the hull", 4, features))
    shape_rows.append(swapped[:6])
    figure = None
    for sigma in a.sigmas:
        for take in ("low", "high"):
            mixed = [band_mix(c, d, 2 * sigma, take) for c, d in zip(crops, donors)]
            rows.append(measure(f"{take} band from donor", sigma, mixed))
            if sigma == a.figure_sigma:
                figure = (figure or [crops[:6], donors[:6], *shape_rows]) + [mixed[:6]]
        print(pd.DataFrame(rows[-2:]).to_string(index=False), flush=True)
    df = pd.DataFrame(rows)
    out = Path(a.out)
    write_table("identity_bands", df, out_dir=out,
                title=f"Identity by spatial band: {len(crops)} held-out faces "
                      f"({Path(a.images).name}), one band swapped with another person's",
                notes=["distance: the network's own metric between the source crop and the mix "
                       "(median); same person: share under the network's own threshold "
                       "(SFace 0.637 = cosine 0.363, FaceNet-CASIA and dlib their own).",
                       "σ in pixels of the 128-px aligned crop (interocular distance ≈ 33 px); "
                       "the crops are 256 px and blurred with 2σ.",
                       "Recomputed by `python scripts/identity_bands.py`."])
    if figure is not None:
        grid = np.concatenate([np.concatenate(row, 1) for row in figure], 0)
        grid = cv2.resize(grid, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        write_image(out / "identity_bands.jpg", grid, quality=85)
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

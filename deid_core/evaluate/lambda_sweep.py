"""Fig. 9: the identity shift as λ grows — a grid (source | outputs by λ) and distance vs λ.

Works for one λ-conditioned model (``deid_transform(ckpt, lam=λ)``) or a list of checkpoints
trained with different λ: pass ``transforms = {λ: fn(image, landmarks) -> image}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.evaluate import metrics
from deid_core.evaluate.conditions import (DEFAULT_EVALUATORS, deid_transform, load_evaluators,
                                           load_faces)
from deid_core.evaluate.naturalness import NaturalnessMeter, summarize
from deid_core.evaluate.table_writer import write_table
from deid_core.face import FaceAligner
from deid_core.paths import results_dir


def lambda_sweep(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                 transforms: dict[float, Callable], evaluators: Sequence, name: str = "fig9_lambda",
                 labels: Sequence[str] | None = None, crop: int = 128,
                 grid_rows: int = 6) -> pd.DataFrame:
    """Run every λ on every image; write ``figures/NAME.png`` (source | outputs by λ, the
    first ``grid_rows`` faces), ``figures/NAME_distance.png`` and ``tables/NAME.csv|md``.

    Per λ and evaluator: RGB distance, descriptor distance source → output, same-person rate,
    and the landmark NME of the output (dlib's 68 points predicted in the same box on source and
    output, over the outer inter-ocular distance: pose and expression kept, §3), the median luma
    and chroma high-frequency ratios inside the source hull and the YuNet retention
    (:mod:`deid_core.evaluate.naturalness`; the same for every evaluator of a λ). Spearman
    ρ(λ, descriptor distance) per evaluator is in the table notes and ``df.attrs["spearman"]``.
    """
    if not transforms:
        raise DeidError("no λ settings given")
    lams = sorted(transforms)
    labels = list(labels or [str(i + 1) for i in range(len(images))])
    al = FaceAligner(size=crop)
    outs = {lam: [transforms[lam](im, lm) for im, lm in zip(images, landmarks)] for lam in lams}
    meter = NaturalnessMeter(images, landmarks)   # NME, HF ratios, YuNet (evaluate.naturalness)
    nat = {lam: summarize(meter.measure(outs[lam])) for lam in lams}
    rows = []
    for net in evaluators:
        e0 = np.concatenate([net.embed_faces(im, [lm]) for im, lm in zip(images, landmarks)])
        for lam in lams:
            e1 = np.concatenate([net.embed_faces(o, [lm]) for o, lm in zip(outs[lam], landmarks)])
            dd = metrics.descriptor_distance(e0, e1)
            px = [metrics.pixel_distance(a, b) for a, b in zip(images, outs[lam])]
            rows.append({"lambda": lam, "evaluator": net.name, "images": len(images),
                         "RGB distance": float(np.mean(px)), "descriptor distance": float(dd.mean()),
                         "same-person rate": float((net.distance(e0, e1) < net.threshold).mean()),
                         "landmark NME": nat[lam]["landmark NME (mean)"],
                         "luma HF ratio": nat[lam]["luma HF ratio (median)"],
                         "chroma HF ratio": nat[lam]["chroma HF ratio (median)"],
                         "colour shift p95": nat[lam]["colour shift p95 (median)"],
                         "YuNet retention": nat[lam]["YuNet retention"],
                         "paper": "Fig. 9: λ = -5e-7, -1e-6, -2e-6 (qualitative)"})
    df = pd.DataFrame(rows)
    rho = {}
    if len(lams) >= 3:
        for net_name, d in df.groupby("evaluator", sort=False):
            rho[net_name] = float(spearmanr(d["lambda"], d["descriptor distance"]).statistic)
    df.attrs["spearman"] = rho
    steps = {net_name: dial_steps(d["descriptor distance"].to_numpy())
             for net_name, d in df.groupby("evaluator", sort=False)} if len(lams) >= 3 else {}
    df.attrs["dial"] = steps
    write_table(name, df, "Fig. 9 — distance from the source vs λ", [
        "Descriptor distance: L2 between unit-normalised evaluator embeddings; RGB: mean |Δ| (0-255).",
        "Landmark NME: dlib 68 points of the output vs the source (same box), / outer inter-ocular distance.",
        "Luma / chroma HF ratio: median over faces of the high-frequency energy output / input inside the "
        "source's landmark hull; colour shift p95: median over faces of the 95th percentile of the "
        "low-frequency chroma change inside the hull (0-255; a colour blotch); YuNet retention: fraction of faces OpenCV's YuNet still finds "
        "(evaluate.naturalness).",
        *([("Spearman ρ(λ, descriptor distance): "
            + ", ".join(f"{k} {v:.3f}" for k, v in rho.items()))] if rho else []),
        *([("Dial (share of the total distance change in each λ step; monotone?): "
            + "; ".join(f"{k} " + " / ".join(f"{x:.0%}" for x in v["shares"])
                        + (", monotone" if v["monotone"] else ", NOT monotone")
                        for k, v in steps.items()))] if steps else [])])
    # grid: rows = images, columns = source + λ
    k = min(grid_rows, len(images))
    fig, axes = plt.subplots(k, len(lams) + 1, figsize=(1.6 * (len(lams) + 1), 1.7 * k),
                             squeeze=False)
    for r, (im, lm) in enumerate(zip(images[:k], landmarks[:k])):
        M = al.transform(lm)
        for c, (title, x) in enumerate([("source", im)] + [(f"λ={lam:g}", outs[lam][r]) for lam in lams]):
            ax = axes[r][c]
            ax.imshow(al.warp(x, M))
            ax.axis("off")
            if r == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    figs = results_dir() / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    _save(fig, figs / f"{name}.png")
    fig, ax1 = plt.subplots(figsize=(5, 3.2))
    for net_name, d in df.groupby("evaluator"):
        ax1.plot(d["lambda"], d["descriptor distance"], "o-", label=f"descriptor ({net_name})")
    positive = [lam for lam in lams if lam > 0]
    if positive and positive[-1] / positive[0] >= 100:   # λ spans decades: log axis (0 kept)
        ax1.set_xscale("symlog", linthresh=positive[0])
    ax2 = ax1.twinx()
    d0 = df[df.evaluator == df.evaluator.iloc[0]]
    ax2.plot(d0["lambda"], d0["RGB distance"], "s--", color="gray", label="RGB")
    ax1.set_xlabel("λ")
    ax1.set_ylabel("descriptor distance")
    ax2.set_ylabel("RGB distance (0-255)")
    ax1.legend(loc="upper left", fontsize=7)
    ax2.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    _save(fig, figs / f"{name}_distance.png")
    return df


def dial_steps(distances: Sequence[float]) -> dict:
    """How a dial's distances (one per position, in order) split the total change: each
    step's share of (last − first), the largest share, and whether every step grows (§4
    Fig. 9 read as a dial: even steps, none backwards)."""
    d = np.asarray(distances, np.float64)
    total = d[-1] - d[0]
    shares = np.diff(d) / total if total > 0 else np.zeros(len(d) - 1)
    return {"shares": [float(x) for x in shares], "largest": float(shares.max(initial=0.0)),
            "monotone": bool(np.all(np.diff(d) > 0))}


def _save(fig, path: Path) -> None:
    with paths.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_lambda(images_dir: str | None, checkpoints: dict[float, str], evaluators: Sequence[str] = DEFAULT_EVALUATORS,
               max_images: int | None = 4, weights: str | None = None, name: str = "fig9_lambda",
               grid_rows: int = 6):
    """Fig. 9 (``deid eval lambda``): ``checkpoints`` maps λ to a checkpoint (the same path for
    every λ = one λ-conditioned model); the grid shows the first ``grid_rows`` faces."""
    ims, lms, names = load_faces(images_dir or str(paths.sample_dir() / "portraits"), max_images)
    transforms = {lam: deid_transform(ck, lam=lam) for lam, ck in checkpoints.items()}
    return lambda_sweep(ims, lms, transforms, load_evaluators(evaluators, weights), name=name,
                        labels=names, grid_rows=grid_rows)

"""Issue 9 check: one λ-conditioned checkpoint, λ dialled at inference, on held-back faces.

    OMP_NUM_THREADS=1 python scripts/lambda_dial.py CHECKPOINT [--images DIR] [--n 24]
        [--lams 0 1e-7 1e-6 5e-6 2e-5] [--evaluators dlib sface facenet-casia] [--name lambda_dial]

For every face (default: the embedded NASA sample portraits, which the starter checkpoint
holds back from training) and every λ: the whole test-time pipeline (self as target), then
the evaluator descriptor distance source → output on the pasted frame (L2 between
unit-normalised embeddings, :func:`deid_core.evaluate.metrics.descriptor_distance`), the
landmark NME of the output (dlib 68 points re-detected in the source box, normalised by the
outer inter-ocular distance) and the RGB distance. Writes ``results/tables/NAME.csv|md`` and
``results/figures/NAME.png`` (source | outputs by λ) and prints Spearman ρ(λ, distance).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deid_core import paths  # noqa: E402
from deid_core.align import read_image  # noqa: E402
from deid_core.evaluate import metrics  # noqa: E402
from deid_core.inference import Deidentifier  # noqa: E402


def run(checkpoint: str, images: list[Path], lams: list[float], evaluators: list[str],
        name: str) -> dict:
    import pandas as pd
    from scipy.stats import spearmanr
    from deid_core.identity import load_identity_network
    deid = Deidentifier.from_checkpoint(checkpoint, "cpu")
    nets = [deid.identity if e == "dlib" else load_identity_network(e) for e in evaluators]
    frames, faces = [], []
    for p in images:
        img = read_image(p)
        f = deid.aligner.detect(img)
        if len(f) == 1:
            frames.append(img)
            faces.append(f[0])
    rows, outs = [], {}
    base = {n.name: np.concatenate([n.embed_faces(im, [f.landmarks]) for im, f in zip(frames, faces)])
            for n in nets}
    for lam in lams:
        outs[lam] = []
        for im, f in zip(frames, faces):
            net = deid.net_fn(None, lam)
            out, _ = deid.aligner.process(im, net, faces=[f])
            outs[lam].append(out)
        lm_out = np.stack([deid.aligner.landmarks(o, f.box) for o, f in zip(outs[lam], faces)])
        lm_src = np.stack([f.landmarks for f in faces])
        nme = metrics.nme(lm_out, lm_src)
        rgb = np.mean([metrics.pixel_distance(a, b) for a, b in zip(frames, outs[lam])])
        for n in nets:
            e1 = np.concatenate([n.embed_faces(o, [f.landmarks]) for o, f in zip(outs[lam], faces)])
            dd = metrics.descriptor_distance(base[n.name], e1)
            same = (n.distance(base[n.name], e1) < n.threshold).mean()
            rows.append({"lambda": lam, "evaluator": n.name, "faces": len(frames),
                         "descriptor distance": float(dd.mean()), "same-person rate": float(same),
                         "landmark NME": float(nme.mean()), "RGB distance": float(rgb)})
    df = pd.DataFrame(rows)
    summary = {}
    for n in nets:
        d = df[df.evaluator == n.name]
        summary[n.name] = float(spearmanr(d["lambda"], d["descriptor distance"]).statistic)
    from deid_core.evaluate.tables import write_table
    df["paper"] = ""
    write_table(name, df, f"λ dial — {Path(checkpoint).name}, {len(frames)} held-back NASA faces", [
        "Spearman ρ(λ, descriptor distance): "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()),
        "Descriptor distance: L2 between unit-normalised evaluator embeddings, source → output "
        "(self as target). NME: re-detected dlib landmarks / outer inter-ocular distance.",
        "paper: Fig. 9 is qualitative (one trained model per λ); no number to compare."])
    figures = paths.RESULTS_DIR / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    # figure: source | outputs by λ, aligned crops of the first 6 faces
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    k = min(6, len(frames))
    fig, axes = plt.subplots(k, len(lams) + 1, figsize=(1.5 * (len(lams) + 1), 1.6 * k), squeeze=False)
    for r in range(k):
        M = deid.aligner.transform(faces[r].landmarks)
        cols = [("source", frames[r])] + [(f"λ={lam:g}", outs[lam][r]) for lam in lams]
        for c, (title, x) in enumerate(cols):
            axes[r][c].imshow(deid.aligner.warp(x, M))
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(figures / f"{name}.png", dpi=90)
    print(df.to_string(index=False))
    print("Spearman:", summary)
    return {"table": df, "spearman": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--images", default=str(paths.sample_dir() / "portraits"))
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 1e-7, 1e-6, 5e-6, 2e-5])
    ap.add_argument("--evaluators", nargs="+", default=["dlib", "sface", "facenet-casia"])
    ap.add_argument("--name", default="lambda_dial")
    args = ap.parse_args()
    imgs = sorted(Path(args.images).glob("*.jpg"))[: args.n]
    run(args.checkpoint, imgs, args.lams, args.evaluators, args.name)


if __name__ == "__main__":
    main()

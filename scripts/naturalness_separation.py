"""Do the naturalness metrics separate real faces, blur, pixelation and a de-ID model?

Computes :func:`deid_core.evaluate.naturalness.naturalness_table` on the held-out NASA
portraits for the real faces (unchanged), each model (default: the committed starter at
its default λ), and Gaussian blur and pixelation at the first model's pixel budget, and writes

- ``results/tables/NAME.csv|md`` (default NAME ``naturalness_separation``),
- ``results/figures/NAME.png``: aligned crops, rows = faces, columns = conditions,
- ``results/figures/NAME/<face>_<condition>.png``: full output images of the first faces,
- with ``--evidence``: a copy of the Markdown table at ``data/checkpoints/eval/EVIDENCE``.

    python scripts/naturalness_separation.py                                    # committed model
    python scripts/naturalness_separation.py --model runs/v2/checkpoint.pt:1e-5 --model ...
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deid_core import paths  # noqa: E402
from deid_core.evaluate.conditions import load_faces  # noqa: E402
from deid_core.evaluate.naturalness import run_naturalness  # noqa: E402
from deid_core.face import FaceAligner, write_image  # noqa: E402
from deid_core.paths import results_dir  # noqa: E402


def parse_model(spec: str) -> tuple[str, float | None]:
    """``PATH`` or ``PATH:LAM``."""
    path, _, lam = spec.rpartition(":") if re.search(r":[-+0-9.eE]+$", spec) else (spec, "", "")
    return path, (float(lam) if lam else None)


def contact_sheet(images, landmarks, outputs: dict, path: Path, rows: int = 6, size: int = 192) -> None:
    """Aligned crops: one row per face, one column per condition (condition names above)."""
    al = FaceAligner(size=size)
    conds = list(outputs)
    k = min(rows, len(images))
    fig, axes = plt.subplots(k, len(conds), figsize=(2.0 * len(conds), 2.1 * k), squeeze=False)
    for r in range(k):
        M = al.transform(landmarks[r])
        for c, cond in enumerate(conds):
            ax = axes[r][c]
            ax.imshow(al.warp(outputs[cond][r], M))
            ax.axis("off")
            if r == 0:
                ax.set_title(cond, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(paths.sample_dir() / "portraits"))
    ap.add_argument("--model", action="append", metavar="CKPT[:LAM]",
                    help="de-ID model(s) (default: the committed model at its default λ)")
    ap.add_argument("--max-images", type=int)
    ap.add_argument("--name", default="naturalness_separation")
    ap.add_argument("--evidence", metavar="FILE", help="also copy the Markdown table to "
                                                      "data/checkpoints/eval/FILE")
    ap.add_argument("--full-images", type=int, default=3, help="faces whose full outputs are saved")
    a = ap.parse_args(argv)
    models = [parse_model(m) for m in a.model] if a.model else [(str(paths.resolve_checkpoint(None)), None)]
    ims, lms, names = load_faces(a.images, a.max_images)
    outputs: dict = {}
    df = run_naturalness(a.images, models, a.max_images, name=a.name, outputs=outputs)
    print(df.to_string(index=False))
    figs = results_dir() / "figures"
    contact_sheet(ims, lms, outputs, figs / f"{a.name}.png")
    for i in range(min(a.full_images, len(ims))):
        for cond, outs in outputs.items():
            slug = re.sub(r"[^A-Za-z0-9.-]+", "_", cond).strip("_")
            write_image(figs / a.name / f"{names[i]}_{slug}.png", np.asarray(outs[i]))
    if a.evidence:
        dst = paths.REPO_ROOT / "data" / "checkpoints" / "eval" / a.evidence
        text = (results_dir() / "tables" / f"{a.name}.md").read_text(encoding="utf-8")
        cmd = " ".join(["python scripts/naturalness_separation.py", *(argv if argv is not None else sys.argv[1:])])
        dst.write_text(text + f"- Recomputed by `{cmd}` (figures: results/figures/{a.name}*).\n",
                       encoding="utf-8")
        print(f"evidence: {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Recipe ablation: the same short run (data, steps, seed, warm start) for ``paper``, ``deid``,
``deid`` minus each of its changes and ``deid`` plus the warp head, each measured on the
held-out NASA faces with the naturalness and identity metrics (``deid eval naturalness``) at
the top of its dial.

    python scripts/recipe_ablation.py --steps 60 --batch 8 \\
        --data ~/.cache/deid/faces/celeba-wild-256_s128_hog ~/.cache/deid/faces/nasa-portraits_s128_hog \\
        --init STARTER_V1.pt --out runs/ablation --max-images 12

The committed table (``data/checkpoints/eval/deid_recipe_v2/recipe_ablation*.md``) started
every variant from the first starter's weights (``git show
3cb0ce3:data/checkpoints/compact-128-lamcond_starter.pt > STARTER_V1.pt``).

Writes ``results/tables/recipe_ablation.md|csv`` (one row per variant). Every variant is its
own run folder; a finished one is reused (rerun after an interruption to continue).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from deid_core import paths
from deid_core.evaluate.naturalness import run_naturalness
from deid_core.evaluate.table_writer import write_table
from deid_core.recipe import RecipeConfig
from deid_core.train import CHECKPOINT_NAME, TrainConfig, export_weights, list_images, train

# variant name → (recipe, options): deid minus one change at a time
VARIANTS: dict[str, tuple[str, dict]] = {
    "paper": ("paper", {}),
    "deid": ("deid", {}),
    "deid − perceptual_norm": ("deid", {"perceptual_norm": False}),
    "deid − pixel_weight": ("deid", {"pixel_weight": 1.0}),
    "deid − hinge (linear repeller)": ("deid", {"repeller": "linear"}),
    "deid − eot": ("deid", {"eot": False}),
    "deid − ns patch GAN (LSGAN)": ("deid", {"gan": "lsgan", "gan_weight": None}),
    "deid − gan_raw": ("deid", {"gan_raw": False}),
    "deid − colour": ("deid", {"colour": 0.0}),
    "deid − mask_floor": ("deid", {"mask_floor": 0.0}),
    "deid − curriculum": ("deid", {"curriculum": False}),
    "deid − ema": ("deid", {"ema": False}),
    "deid − uniform λ": ("deid", {"lam_sampling": "loguniform"}),
    "deid − source detail": ("deid", {"detail_sigma": 0.0}),
    # beyond deid: the default model's warp head (a zero-initialised flow head on the same trunk)
    "deid + warp head": ("deid", {"flow_px": 5.0, "flow_dial": True, "detail_sigma": 0.0}),
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def run_variant(name: str, args: argparse.Namespace, held: list[str]) -> tuple[Path, float]:
    """Train (or reuse) one variant and export its fp16 weights; returns the export and the
    top of its dial."""
    recipe, options = VARIANTS[name]
    rc = RecipeConfig.preset(recipe, **options)
    out = Path(args.out) / slug(name)
    export = out / "export.pt"
    if export.is_file():
        return export, rc.lam_max
    cfg = TrainConfig(preset=args.preset, recipe=recipe, options=dict(options), data=args.data,
                      exclude_persons=held, out=str(out), steps=args.steps, batch=args.batch,
                      lr=args.lr, lam_range=(1e-7, rc.lam_max), seed=args.seed,
                      device=args.device, threads=args.threads, init=args.init,
                      ckpt_every=max(1, args.steps // 4), sample_every=args.steps)
    resume = (out / CHECKPOINT_NAME).is_file()
    train(cfg, resume=resume, progress=True)
    export_weights(out / CHECKPOINT_NAME, export, lam=rc.lam_max)
    return export, rc.lam_max


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="face caches (deid prepare)")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--preset", default="compact-128w-lamcond")
    p.add_argument("--init", help="warm start shared by every variant")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="NAME",
                   help=f"subset of: {', '.join(VARIANTS)}")
    p.add_argument("--max-images", type=int, default=24, help="held-out faces measured")
    p.add_argument("--name", default="recipe_ablation")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}")
    portraits = paths.sample_dir() / "portraits"
    held = sorted({person for _, person in list_images(portraits)})
    rows = []
    for name in args.variants:
        export, lam = run_variant(name, args, held)
        df = run_naturalness(portraits, [(export, lam)], max_images=args.max_images,
                             baselines=False, name=None, device=args.device)
        row = df[df["condition"].str.startswith("deid ")].iloc[0].to_dict()   # the model's row
        row["condition"] = name
        rows.append(row)
    table = pd.DataFrame(rows)
    write_table(args.name, table, "Recipe ablation — held-out NASA faces at the top of each dial", [
        f"Same run for every variant: preset {args.preset}, {args.steps} steps × batch {args.batch}, "
        f"lr {args.lr}, seed {args.seed}, warm start {args.init or 'none'}, data {args.data}; the "
        f"{len(held)} persons of data/sample/portraits held out and measured "
        f"(≤ {args.max_images} faces), λ = top of the dial (2e-5).",
        "Columns as in the naturalness table (deid eval naturalness)."])
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``deid prepare``, ``deid train``, ``deid export``: the face cache, training (paper §3.2, §4) and
weight exports.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from deid_core.cli.common import add_detector_args
from deid_core.errors import DeidError


def add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="align every face image of a folder into a training "
                                       "face cache (crops + index.jsonl; resumable)")
    p.add_argument("src", help="image folder: one sub-folder per person, or flat (stem = person)")
    p.add_argument("dst", help="cache folder (created; an existing cache is resumed)")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels (128 or 256)")
    add_detector_args(p, default=None)   # None: an existing cache's own detector, else the default
    p.add_argument("--format", default="png", choices=["png", "jpg"], help="crop file format")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (sorted)")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from deid_core.face import AlignConfig  # keeps deid --help free of OpenCV
    from deid_core.train import prepare_faces  # keeps deid --help free of torch
    s = prepare_faces(args.src, args.dst, size=args.size, detector=args.detector,
                      config=AlignConfig(upsample=args.upsample), fmt=args.format,
                      limit=args.limit)
    d = s.to_json()
    d["skipped"] = [x["source"] for x in d["skipped"]][:20]
    print(json.dumps(d, indent=1))
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the generator/discriminator (paper §3.2, §4) on "
                                     "prepared face caches; multi-GPU: torchrun -m deid_core.cli train")
    p.add_argument("--preset", default="compact-128",
                   help="paper-128, paper-256, compact-128 (append -lamcond for the λ-conditioned variant)")
    p.add_argument("--recipe", default="paper", choices=["paper", "deid"],
                   help="paper: §3.2 as written; deid: the natural-face recipe (see README)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="switch one recipe option (repeatable), e.g. eot=0 repeller=linear")
    p.add_argument("--data", nargs="+", required=True, help="face cache folder(s) from `deid prepare`")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, losses.csv, samples/)")
    p.add_argument("--hold-out", nargs="+", default=[], metavar="FOLDER",
                   help="leave out of training every person of these image folders (folder per "
                        "person, or flat: stem = person), e.g. data/sample/portraits for evaluation")
    p.add_argument("--steps", type=int, default=None, help="iterations (default: 230k / 80k as in §4)")
    p.add_argument("--batch", type=int, default=None, help="global batch (default 32 / 64, §4)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lam", nargs="+", default=None, metavar="STEP:LAM or LAM",
                   help="λ schedule as ITER:λ pairs (e.g. 0:1e-7 1000:2e-6) or one fixed λ; for a "
                        "-lamcond preset two values LO HI = the λ range sampled per example")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", help="warm start: copy the matching weights of this checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:K")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--identity", default="dlib", help="loss network (dlib; none = no perceptual loss)")
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--sample-every", type=int, default=500)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from deid_core.model import ModelConfig  # keeps deid --help free of torch
    from deid_core.recipe import RecipeConfig, parse_options  # keeps deid --help light (+9 ms: dataclasses, inspect)
    from deid_core.train import TrainConfig, list_images, train  # keeps deid --help free of torch
    size = ModelConfig.preset(args.preset).size
    lam_cond = ModelConfig.preset(args.preset).lam_cond
    options = parse_options(args.option)
    RecipeConfig.preset(args.recipe, **options)      # unknown options fail here, early
    kw = {}
    if args.lam:
        try:
            if lam_cond:
                if len(args.lam) != 2:
                    raise ValueError("give LO HI")
                kw["lam_range"] = (float(args.lam[0]), float(args.lam[1]))
            elif len(args.lam) == 1 and ":" not in args.lam[0]:
                kw["lam_schedule"] = [(0, float(args.lam[0]))]
            else:
                kw["lam_schedule"] = [(int(a), float(b)) for a, b in
                                      (item.split(":") for item in args.lam)]
        except ValueError as exc:
            raise DeidError(f"bad --lam {args.lam}: {exc}") from exc
    steps = args.steps or (80_000 if size >= 256 else 230_000)
    held = []
    if args.hold_out:
        for folder in args.hold_out:
            if not Path(folder).is_dir():
                raise DeidError(f"--hold-out folder not found: {folder}")
            held += [person for _, person in list_images(folder)]
    cfg = TrainConfig(preset=args.preset, recipe=args.recipe, options=options,
                      data=list(args.data), out=args.out, steps=steps,
                      exclude_persons=sorted(set(held)),
                      batch=args.batch, lr=args.lr, identity=args.identity,
                      device=args.device, amp=args.amp, ckpt_every=args.ckpt_every,
                      sample_every=args.sample_every, workers=args.workers,
                      threads=args.threads, seed=args.seed, init=args.init, **kw)
    t = train(cfg, resume=args.resume, progress=not args.no_progress)
    if t.rank == 0:
        last = t.history[-1] if t.history else {}
        print(json.dumps({"out": args.out, "step": t.step, "seconds": round(t.seconds, 1),
                          "last": {k: round(v, 5) for k, v in last.items() if k != "step"}}))
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="weights-only copy of a training checkpoint (fp16), e.g. "
                                      "to share or commit a model")
    p.add_argument("checkpoint", help="training checkpoint (RUN/checkpoint.pt)")
    p.add_argument("output", help="weights file to write (.pt)")
    p.add_argument("--lam", type=float, default=None,
                   help="default λ of a λ-conditioned model (used when none is given)")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights")
    p.add_argument("--detail-sigma", type=float, default=None,
                   help="add the source crop's detail finer than this many pixels to the raw "
                        "output at inference (0 = off; default: as trained)")
    p.add_argument("--source-chroma", choices=("on", "off"), default=None,
                   help="the output keeps the source face's chroma, the network sets luma only "
                        "(default: as trained)")
    p.add_argument("--warp-at", choices=("frame", "crop"), default=None,
                   help="a warp-head model reshapes the full-resolution frame (frame) or the "
                        "128-px crop pasted back as the paper's generator output (crop); "
                        "default: as trained (frame)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from deid_core.train import export_weights  # keeps deid --help free of torch
    out = export_weights(args.checkpoint, args.output, half=not args.fp32, lam=args.lam,
                         overwrite=args.overwrite, detail_sigma=args.detail_sigma,
                         source_chroma=(None if args.source_chroma is None
                                        else args.source_chroma == "on"),
                         warp_at=args.warp_at)
    print(json.dumps({"output": str(out), "bytes": os.path.getsize(out)}))
    return 0

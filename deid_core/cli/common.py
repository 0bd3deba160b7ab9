"""Arguments shared by several ``deid`` commands (detector choice, model and tracking options).
"""
from __future__ import annotations

import argparse
import sys


#: ``face.DETECTORS`` / ``face.DEFAULT_DETECTOR``, spelled out so that building the parser
#: does not import OpenCV (0.35 s on every command); a test checks they agree.
DETECTORS = ("yunet", "hog", "cnn", "mtcnn")


DEFAULT_DETECTOR = "yunet"


def add_detector_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_DETECTOR) -> None:
    """Face detector choice (paper §3 step a): one set of defaults for every command that
    detects faces (image, video, live, embed, align, prepare)."""
    p.add_argument("--detector", default=default, choices=list(DETECTORS),
                   help=f"face detector (default {DEFAULT_DETECTOR}: OpenCV YuNet, finds profiles "
                        f"and faces from ~20 px)")
    p.add_argument("--upsample", type=int, default=0,
                   help="extra detection pass on the frame enlarged 2**N (smaller faces, slower)")


def detector_config(args: argparse.Namespace) -> dict:
    """The AlignConfig overrides given by :func:`add_detector_args`."""
    return {"detector": args.detector, "upsample": args.upsample}


def warn(command: str, warnings: list[str]) -> None:
    """One ``deid CMD: warning: ...`` line on stderr per warning."""
    for w in warnings:
        print(f"deid {command}: warning: {w}", file=sys.stderr)


def add_check_arg(p: argparse.ArgumentParser) -> None:
    """``--no-check``: the identity check of `deid image|video|live` off."""
    p.add_argument("--no-check", action="store_true",
                   help="do not check the result: by default every face the network left "
                        "recognisable (SFace cosine to the input >= 0.7) is pixelated instead")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `deid video` and `deid live` (model, target, tracking)."""
    p.add_argument("--checkpoint", default=None,
                   help="generator checkpoint (.pt); default: the starter checkpoint in data/checkpoints/")
    p.add_argument("--target", default=None,
                   help="photo of the person (one face); default: each face track's first frame")
    p.add_argument("--lam", type=float, default=None, help="λ for a λ-conditioned model")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the idle cores, 1-4; see pipeline.default_threads)")
    p.add_argument("--fail-open", action="store_true",
                   help="the paper's plain per-frame behaviour: a face the detector loses is shown "
                        "unmodified (default: kept obscured until re-detected or off-frame)")
    p.add_argument("--passthrough", action="store_true",
                   help="debug: identity network (runs the pipeline, de-identifies nothing)")
    add_check_arg(p)
    p.add_argument("--check-every", type=int, default=None,
                   help="run the identity check on every n-th frame (default: video 1, live 3; "
                        "a track it flags stays pixelated)")
    add_detector_args(p)
    p.add_argument("--detect-scale", type=float, default=1.0,
                   help="run the detector on the frame scaled by this (fast path, <= 1)")
    p.add_argument("--detect-every", type=int, default=None,
                   help="detect every k frames, track + re-fit landmarks in between")
    p.add_argument("--no-stabilize", action="store_true", help="turn landmark smoothing off")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

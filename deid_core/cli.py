"""The ``deid`` command line: argument parsing only; every command calls the package's functions.

Each subcommand is one ``_add_<name>(sub)`` function that defines its arguments and sets
``func`` to a small runner. Errors of type :class:`DeidError` are printed without a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from deid_core import __version__
from deid_core.errors import DeidError


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions, CUDA and which model files were found (JSON)")

    def run(args: argparse.Namespace) -> int:
        from deid_core.envcheck import environment_report
        print(json.dumps(environment_report(), indent=2))
        return 0

    p.set_defaults(func=run)


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="detect, align and crop a face (paper §3 a-d): writes the "
                                     "crop and a landmarks JSON")
    p.add_argument("input", help="image file (any 8-bit RGB/RGBA/grayscale format)")
    p.add_argument("output", help="aligned crop (.png or .jpg)")
    p.add_argument("--json", default=None, help="landmarks JSON (default: OUTPUT with .json)")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (128 or 256)")
    p.add_argument("--margin", type=float, default=None, help="crop margin per side (default 0.2)")
    p.add_argument("--detector", default="hog", choices=["hog", "cnn", "mtcnn"])
    p.add_argument("--upsample", type=int, default=0, help="dlib detector upsampling (small faces)")
    p.add_argument("--face", type=int, default=0, help="which face to crop, largest first")

    def run(args: argparse.Namespace) -> int:
        from deid_core.align import DEFAULT_MARGIN, AlignConfig, align_file
        cfg = AlignConfig(size=args.size, detector=args.detector, upsample=args.upsample,
                          margin=DEFAULT_MARGIN if args.margin is None else args.margin)
        doc = align_file(args.input, args.output, args.json, cfg, face_index=args.face)
        print(json.dumps({"crop": doc["crop"], "n_faces": doc["n_faces"], "face": doc["face"]}))
        return 0

    p.set_defaults(func=run)


COMMANDS = [_add_info, _add_align]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deid", description="Live face de-identification in video (Gafni et al., ICCV 2019).")
    parser.add_argument("--version", action="version", version=f"deid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DeidError as exc:
        print(f"deid {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"deid {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

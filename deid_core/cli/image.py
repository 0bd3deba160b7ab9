"""``deid align``, ``deid image``, ``deid embed``: one image through the face steps (paper §3 a–d),
the whole pipeline (a–h), or the identity networks.
"""
from __future__ import annotations

import argparse
import json

from deid_core.cli.common import add_check_arg, add_detector_args, detector_config, warn


def add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="detect, align and crop a face (paper §3 a-d): writes the "
                                     "crop and a landmarks JSON")
    p.add_argument("input", help="image file (any 8-bit RGB/RGBA/grayscale format)")
    p.add_argument("output", help="aligned crop (.png or .jpg)")
    p.add_argument("--json", default=None, help="landmarks JSON (default: OUTPUT with .json)")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (128 or 256)")
    p.add_argument("--margin", type=float, default=None, help="crop margin per side (default 0.2)")
    add_detector_args(p)
    p.add_argument("--face", type=int, default=0, help="which face to crop, largest first")
    p.set_defaults(func=run_align)


def run_align(args: argparse.Namespace) -> int:
    from deid_core.face import DEFAULT_MARGIN, AlignConfig, align_file  # keeps deid --help free of OpenCV
    cfg = AlignConfig(size=args.size, detector=args.detector, upsample=args.upsample,
                      margin=DEFAULT_MARGIN if args.margin is None else args.margin)
    doc = align_file(args.input, args.output, args.json, cfg, face_index=args.face)
    print(json.dumps({"crop": doc["crop"], "n_faces": doc["n_faces"], "face": doc["face"]}))
    return 0


def add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="detect every face in an image and print its identity "
                                     "embedding (JSON list: box, score, embedding)")
    p.add_argument("input", help="image file")
    p.add_argument("--network", default="dlib",
                   help="dlib (loss network), facenet-casia, sface, facenet-vggface2, arcface")
    p.add_argument("--weights", default=None, help="local weights file (facenet-vggface2)")
    add_detector_args(p)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    from deid_core.identity import load_identity_network  # keeps deid --help free of torch
    from deid_core.pipeline import embed_image  # keeps deid --help free of torch
    kw = {"weights": args.weights} if args.weights else {}
    net = load_identity_network(args.network, device=args.device, **kw)
    print(json.dumps(embed_image(args.input, net, detector=args.detector,
                                 upsample=args.upsample)))
    return 0


def add_image(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="de-identify every face of one image (paper §3 a-h)")
    p.add_argument("input", help="image file")
    p.add_argument("output", help="output image (never the input)")
    p.add_argument("--checkpoint", default=None,
                   help="trained generator (.pt); default: the starter checkpoint in data/checkpoints/")
    p.add_argument("--target", default=None,
                   help="photo of the person (exactly one face); default: each face is its own target")
    p.add_argument("--lam", type=float, default=None, help="λ for a λ-conditioned checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: idle cores, 1-4)")
    add_check_arg(p)
    add_detector_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.set_defaults(func=run_image)


def run_image(args: argparse.Namespace) -> int:
    from deid_core.pipeline import configure_threads, deidentify_image  # keeps deid --help free of torch
    configure_threads(args.threads)
    s = deidentify_image(args.input, args.output, args.checkpoint, args.target, args.lam,
                         args.device, args.overwrite, detector=detector_config(args),
                         check=not args.no_check)
    print(json.dumps(s))
    if s["n_obscured"]:
        warn("image", [f"{s['n_obscured']} of {s['n_faces']} face(s) had unreliable "
                        f"landmarks (profile, tiny or occluded) and were pixelated instead "
                        f"of de-identified by the network"])
    if s["n_recognisable"]:
        warn("image", [f"{s['n_recognisable']} of {s['n_faces']} face(s) were still "
                        f"recognisable after the network (SFace) and were pixelated"])
    if not s["n_faces"]:
        warn("image", [f"no face found in {args.input}: the output is a copy"])
    return 0

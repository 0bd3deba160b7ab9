"""The ``deid`` command line: argument parsing only; every command calls the package's functions.

Each subcommand is one ``_add_<name>(sub)`` function that defines its arguments and sets
``func`` to a small runner. Errors of type :class:`DeidError` are printed without a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from deid_core import __version__
from deid_core.errors import DeidError


#: ``align.DETECTORS`` / ``align.DEFAULT_DETECTOR``, spelled out so that building the parser
#: does not import OpenCV (0.35 s on every command); a test checks they agree.
DETECTORS = ("yunet", "hog", "cnn", "mtcnn")
DEFAULT_DETECTOR = "yunet"


def _add_detector_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_DETECTOR) -> None:
    """Face detector choice (paper §3 step a): one set of defaults for every command that
    detects faces (image, video, live, embed, align, prepare)."""
    p.add_argument("--detector", default=default, choices=list(DETECTORS),
                   help=f"face detector (default {DEFAULT_DETECTOR}: OpenCV YuNet, finds profiles "
                        f"and faces from ~20 px)")
    p.add_argument("--upsample", type=int, default=0,
                   help="extra detection pass on the frame enlarged 2**N (smaller faces, slower)")


def _detector_config(args: argparse.Namespace) -> dict:
    """The AlignConfig overrides given by :func:`_add_detector_args`."""
    return {"detector": args.detector, "upsample": args.upsample}


def _warn(command: str, warnings: list[str]) -> None:
    """One ``deid CMD: warning: ...`` line on stderr per warning."""
    for w in warnings:
        print(f"deid {command}: warning: {w}", file=sys.stderr)


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
    _add_detector_args(p)
    p.add_argument("--face", type=int, default=0, help="which face to crop, largest first")

    def run(args: argparse.Namespace) -> int:
        from deid_core.align import DEFAULT_MARGIN, AlignConfig, align_file
        cfg = AlignConfig(size=args.size, detector=args.detector, upsample=args.upsample,
                          margin=DEFAULT_MARGIN if args.margin is None else args.margin)
        doc = align_file(args.input, args.output, args.json, cfg, face_index=args.face)
        print(json.dumps({"crop": doc["crop"], "n_faces": doc["n_faces"], "face": doc["face"]}))
        return 0

    p.set_defaults(func=run)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `deid video` and `deid live` (model, target, tracking)."""
    p.add_argument("--checkpoint", default=None,
                   help="generator checkpoint (.pt); default: the starter checkpoint in data/checkpoints/")
    p.add_argument("--target", default=None,
                   help="photo of the person (one face); default: each face track's first frame")
    p.add_argument("--lam", type=float, default=None, help="λ for a λ-conditioned model")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the idle cores, 1-4; see inference.default_threads)")
    p.add_argument("--fail-open", action="store_true",
                   help="the paper's plain per-frame behaviour: a face the detector loses is shown "
                        "unmodified (default: kept obscured until re-detected or off-frame)")
    p.add_argument("--passthrough", action="store_true",
                   help="debug: identity network (runs the pipeline, de-identifies nothing)")
    _add_detector_args(p)
    p.add_argument("--detect-scale", type=float, default=1.0,
                   help="run the detector on the frame scaled by this (fast path, <= 1)")
    p.add_argument("--detect-every", type=int, default=None,
                   help="detect every k frames, track + re-fit landmarks in between")
    p.add_argument("--no-stabilize", action="store_true", help="turn landmark smoothing off")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _video_setup(args: argparse.Namespace, fail_closed: bool, detect_every: int):
    from deid_core.inference import check_lam, configure_threads
    from deid_core.video import VideoConfig, build_pipeline
    check_lam(args.lam)
    configure_threads(args.threads)
    aligner, net = build_pipeline(args.checkpoint, args.target, args.lam, args.device,
                                  args.passthrough, args.detector, args.upsample,
                                  args.detect_scale, upscale_every=1 if detect_every == 1 else 4)
    cfg = VideoConfig(detect_every=args.detect_every or detect_every,
                      stabilize=not args.no_stabilize, fail_closed=fail_closed,
                      max_frames=args.max_frames)
    return aligner, net, cfg


def _add_video(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="de-identify a video file: H.264 mp4 out with the same "
                                     "size, frames and audio, plus OUT.json summary")
    p.add_argument("input", help="video file (mp4/mov/avi/mkv/webm)")
    p.add_argument("output", help="output .mp4 (never the input)")
    _add_model_args(p)
    p.add_argument("--fail-closed", action="store_true",
                   help="(the default; kept for old scripts) keep lost faces obscured")

    def run(args: argparse.Namespace) -> int:
        import warnings
        from deid_core.video import deidentify_video, summary_path
        aligner, net, cfg = _video_setup(args, not args.fail_open, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # printed below, once, as warning lines
            s = deidentify_video(args.input, args.output, aligner, net, cfg,
                                 overwrite=args.overwrite)
        keys = ("frames", "frames_with_faces", "frames_no_face", "fail_closed_frames",
                "fallback_frames", "fallback_faces", "tracks", "fps", "audio", "warnings")
        print(json.dumps({k: s[k] for k in keys} | {"summary": str(summary_path(args.output))}))
        _warn("video", s["warnings"])
        return 0

    p.set_defaults(func=run)


def _add_live(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help="live de-identification from a camera, stream or a file "
                                    "played in real time (fail-closed by default)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, default=None, help="camera index (default 0)")
    src.add_argument("--source", default=None, help="video file or stream URL instead of a camera")
    p.add_argument("--realtime", action="store_true",
                   help="play --source at its own fps, dropping frames the pipeline cannot keep up with")
    p.add_argument("--show", action="store_true", help="side-by-side preview window (needs a display)")
    p.add_argument("--out", default=None, help="write the de-identified stream to this .mp4")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--no-fail-closed", action="store_true", help="same as --fail-open")
    _add_model_args(p)

    def run(args: argparse.Namespace) -> int:
        from deid_core.video import run_live
        if not args.show and args.out is None:
            raise DeidError("nothing to do: pass --show (needs a display) and/or --out FILE.mp4")
        source = args.source if args.source is not None else (args.camera or 0)
        aligner, net, cfg = _video_setup(args, not (args.no_fail_closed or args.fail_open), 3)
        s = run_live(source, aligner, net, cfg, out=args.out, show=args.show,
                     realtime=args.realtime, overwrite=args.overwrite, duration=args.duration)
        keys = ("frames", "captured", "dropped", "fail_closed_frames", "fallback_frames",
                "fallback_faces", "fps", "latency_ms_mean")
        print(json.dumps({k: s[k] for k in keys}))
        _warn("live", s.get("warnings", []))
        return 0

    p.set_defaults(func=run)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="align every face image of a folder into a training "
                                       "face cache (crops + index.jsonl; resumable)")
    p.add_argument("src", help="image folder: one sub-folder per person, or flat (stem = person)")
    p.add_argument("dst", help="cache folder (created; an existing cache is resumed)")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels (128 or 256)")
    _add_detector_args(p, default=None)   # None: an existing cache's own detector, else the default
    p.add_argument("--format", default="png", choices=["png", "jpg"], help="crop file format")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (sorted)")

    def run(args: argparse.Namespace) -> int:
        from deid_core.align import AlignConfig, prepare_faces
        s = prepare_faces(args.src, args.dst, size=args.size, detector=args.detector,
                          config=AlignConfig(upsample=args.upsample), fmt=args.format,
                          limit=args.limit)
        d = s.to_json()
        d["skipped"] = [x["source"] for x in d["skipped"]][:20]
        print(json.dumps(d, indent=1))
        return 0

    p.set_defaults(func=run)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="detect every face in an image and print its identity "
                                     "embedding (JSON list: box, score, embedding)")
    p.add_argument("input", help="image file")
    p.add_argument("--network", default="dlib",
                   help="dlib (loss network), facenet-casia, sface, facenet-vggface2, arcface")
    p.add_argument("--weights", default=None, help="local weights file (facenet-vggface2)")
    _add_detector_args(p)
    p.add_argument("--device", default="cpu")

    def run(args: argparse.Namespace) -> int:
        from deid_core.identity import embed_image, load_identity_network
        kw = {"weights": args.weights} if args.weights else {}
        net = load_identity_network(args.network, device=args.device, **kw)
        print(json.dumps(embed_image(args.input, net, detector=args.detector,
                                     upsample=args.upsample)))
        return 0

    p.set_defaults(func=run)


def _add_train(sub: argparse._SubParsersAction) -> None:
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

    def run(args: argparse.Namespace) -> int:
        from deid_core.model import ModelConfig
        from deid_core.recipe import RecipeConfig, parse_options
        from deid_core.train import TrainConfig, train
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
            from pathlib import Path
            from deid_core.align import list_images
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

    p.set_defaults(func=run)


def _add_image(sub: argparse._SubParsersAction) -> None:
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
    _add_detector_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")

    def run(args: argparse.Namespace) -> int:
        from deid_core.inference import configure_threads, deidentify_image
        configure_threads(args.threads)
        s = deidentify_image(args.input, args.output, args.checkpoint, args.target, args.lam,
                             args.device, args.overwrite, detector=_detector_config(args))
        print(json.dumps(s))
        if s["n_obscured"]:
            _warn("image", [f"{s['n_obscured']} of {s['n_faces']} face(s) had unreliable "
                            f"landmarks (profile, tiny or occluded) and were pixelated instead "
                            f"of de-identified by the network"])
        if not s["n_faces"]:
            _warn("image", [f"no face found in {args.input}: the output is a copy"])
        return 0

    p.set_defaults(func=run)


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="check a de-identified image/video: re-detect every face of "
                                     "the input with independent detectors and report (JSON, "
                                     "exit 3) each face left visible in the output")
    p.add_argument("input", help="the original image or video")
    p.add_argument("output", help="the de-identified result to check")
    p.add_argument("--json", default=None, help="also write the report to this file")
    p.add_argument("--every", type=int, default=1, help="audit every n-th video frame")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--max-sface", type=float, default=0.7,
                   help="a face whose SFace cosine to the input is at least this, and whose box "
                        "centre changed less than --max-pixel-change, is visible")
    p.add_argument("--max-pixel-change", type=float, default=6.0, help="mean |Δ| (0-255)")

    def run(args: argparse.Namespace) -> int:
        from deid_core.audit import AuditConfig, audit
        cfg = AuditConfig(every=args.every, max_frames=args.max_frames,
                          max_pixel_change=args.max_pixel_change, max_sface=args.max_sface)
        report = audit(args.input, args.output, cfg, json_path=args.json)
        print(json.dumps(report.to_json()))
        if not report.passed:
            frames = sorted({v["frame"] for v in report.visible if v["frame"] is not None})
            _warn("audit", [f"{len(report.visible)} face(s) left visible in {args.output}"
                            + (f" (frames {frames[:20]}{' ...' if len(frames) > 20 else ''})"
                               if frames else "")])
            return 3
        return 0

    p.set_defaults(func=run)


def _add_export(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")

    def run(args: argparse.Namespace) -> int:
        import os
        from deid_core.inference import export_weights
        out = export_weights(args.checkpoint, args.output, half=not args.fp32, lam=args.lam,
                             overwrite=args.overwrite, detail_sigma=args.detail_sigma)
        print(json.dumps({"output": str(out), "bytes": os.path.getsize(out)}))
        return 0

    p.set_defaults(func=run)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="reproduce the paper's evaluation: lfw (Table 5), rank (Table 4), "
                                    "table3, lambda (Fig. 9), attributes, gallery, user-study (Table 2)")
    from deid_core.evaluate.commands import add_eval_subcommands  # argparse only; runners import lazily
    add_eval_subcommands(p)


COMMANDS = [_add_info, _add_align, _add_video, _add_live, _add_prepare, _add_embed, _add_train, _add_export,
            _add_image, _add_audit, _add_eval]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deid", description="Live face de-identification in video (Gafni et al., ICCV 2019).")
    parser.add_argument("--version", action="version", version=f"deid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``finally`` removes its temp files."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # spinning OpenMP threads slow inference 10x+ next to another process (inference.default_threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:                 # not the main thread (embedded use): leave it alone
        pass
    try:
        return int(args.func(args) or 0)
    except DeidError as exc:
        print(f"deid {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"deid {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"deid {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``deid video`` and ``deid live``: the per-frame pipeline on files and streams (paper §3, §4).
"""
from __future__ import annotations

import argparse
import json
import warnings

from deid_core.cli.common import add_model_args, warn
from deid_core.errors import DeidError


def video_setup(args: argparse.Namespace, fail_closed: bool, detect_every: int):
    from deid_core.pipeline import build_pipeline, check_lam, configure_threads  # keeps deid --help free of torch
    from deid_core.video import VideoConfig  # keeps deid --help free of OpenCV
    check_lam(args.lam)
    configure_threads(args.threads)
    aligner, net = build_pipeline(args.checkpoint, args.target, args.lam, args.device,
                                  args.passthrough, args.detector, args.upsample,
                                  args.detect_scale, upscale_every=1 if detect_every == 1 else 4,
                                  check=not args.no_check)
    cfg = VideoConfig(detect_every=args.detect_every or detect_every,
                      stabilize=not args.no_stabilize, fail_closed=fail_closed,
                      max_frames=args.max_frames,
                      check_every=args.check_every or detect_every)
    return aligner, net, cfg


def add_video(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="de-identify a video file: H.264 mp4 out with the same "
                                     "size, frames and audio, plus OUT.json summary")
    p.add_argument("input", help="video file (mp4/mov/avi/mkv/webm)")
    p.add_argument("output", help="output .mp4 (never the input)")
    add_model_args(p)
    p.add_argument("--fail-closed", action="store_true",
                   help="(the default; kept for old scripts) keep lost faces obscured")
    p.add_argument("--one-pass", action="store_true",
                   help="read the file once, like a live stream (no replay, no consent list)")
    p.add_argument("--no-replay", action="store_true",
                   help="do not follow faces into the frames before their first detection / "
                        "after they were lost")
    p.add_argument("--replay-seconds", type=float, default=2.0,
                   help="replay horizon in seconds (default 2)")
    p.add_argument("--no-rotated", action="store_true",
                   help="do not look for faces turned by 90 degrees")
    consent = p.add_mutually_exclusive_group()
    consent.add_argument("--keep", nargs="+", metavar="PHOTO", default=None,
                         help="people in these photos (files or folders) stay unchanged; "
                              "everyone else is de-identified (uncertain matches too)")
    consent.add_argument("--only", nargs="+", metavar="PHOTO", default=None,
                         help="de-identify only the people in these photos (and uncertain "
                              "matches); everyone else stays unchanged")
    p.add_argument("--contact-sheet", action="store_true",
                   help="also write OUT.sheet.png: output crops of the least confidently "
                        "covered frames, to check by eye")
    p.set_defaults(func=run_video)


def consent_list(args: argparse.Namespace, aligner):
    """The ``--keep`` / ``--only`` consent list (SFace), or None."""
    photos = args.keep or args.only
    if not photos:
        return None
    from deid_core.identity import load_identity_network  # keeps deid --help free of torch
    from deid_core.video.consent import ConsentConfig, ConsentList  # keeps deid --help free of OpenCV
    return ConsentList.from_photos(photos, ConsentConfig(mode="keep" if args.keep else "only"),
                                   network=load_identity_network("sface", threads=1),
                                   aligner=aligner)


def run_video(args: argparse.Namespace) -> int:
    import dataclasses  # keeps deid --help light (dataclasses imports inspect: +7 ms)
    from deid_core.video import deidentify_video, summary_path  # keeps deid --help free of OpenCV
    aligner, net, cfg = video_setup(args, not args.fail_open, 1)
    if args.one_pass and (args.keep or args.only):
        raise DeidError("--keep/--only need the two-pass mode: drop --one-pass")
    cfg = dataclasses.replace(cfg, two_pass=not args.one_pass, replay=not args.no_replay,
                              replay_seconds=args.replay_seconds,
                              rotated_views=not args.no_rotated)
    consent = consent_list(args, aligner)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # printed below, once, as warning lines
        s = deidentify_video(args.input, args.output, aligner, net, cfg,
                             overwrite=args.overwrite, consent=consent,
                             contact_sheet=args.contact_sheet)
    keys = ("mode", "frames", "frames_with_faces", "frames_no_face", "fail_closed_frames",
            "fallback_frames", "fallback_faces", "recognisable_tracks", "tracks", "fps", "audio",
            "warnings")
    print(json.dumps({k: s[k] for k in keys} | {"summary": str(summary_path(args.output))}))
    warn("video", s["warnings"])
    return 0


def add_live(sub: argparse._SubParsersAction) -> None:
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
    add_model_args(p)
    p.set_defaults(func=run_live)


def run_live(args: argparse.Namespace) -> int:
    import dataclasses  # keeps deid --help light (dataclasses imports inspect: +7 ms)
    from deid_core.video import run_live  # keeps deid --help free of OpenCV
    if not args.show and args.out is None:
        raise DeidError("nothing to do: pass --show (needs a display) and/or --out FILE.mp4")
    source = args.source if args.source is not None else (args.camera or 0)
    aligner, net, cfg = video_setup(args, not (args.no_fail_closed or args.fail_open), 3)
    cfg = dataclasses.replace(cfg, two_pass=False, rotated_views=False)   # a stream: one pass
    s = run_live(source, aligner, net, cfg, out=args.out, show=args.show,
                 realtime=args.realtime, overwrite=args.overwrite, duration=args.duration)
    keys = ("frames", "captured", "dropped", "fail_closed_frames", "fallback_frames",
            "fallback_faces", "recognisable_tracks", "fps", "latency_ms_mean")
    print(json.dumps({k: s[k] for k in keys}))
    warn("live", s.get("warnings", []))
    return 0

"""``deid audit``: re-detect every input face and report the ones left visible in the output.
"""
from __future__ import annotations

import argparse
import json

from deid_core.cli.common import warn


def add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="check a de-identified image/video: re-detect every face of "
                                     "the input with independent detectors and report (JSON, "
                                     "exit 3) each face left visible in the output")
    p.add_argument("input", help="the original image or video")
    p.add_argument("output", help="the de-identified result to check")
    p.add_argument("--max-sface", type=float, default=0.7,
                   help="a face whose SFace cosine to the input is at least this, and whose box "
                        "centre changed less than --max-pixel-change, is visible")
    p.add_argument("--max-pixel-change", type=float, default=6.0, help="mean |Δ| (0-255)")
    p.add_argument("--every", type=int, default=1, help="audit every n-th video frame")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--json", default=None, help="also write the report to this file")
    p.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from deid_core.audit import AuditConfig, audit  # keeps deid --help free of OpenCV and torch
    cfg = AuditConfig(every=args.every, max_frames=args.max_frames,
                      max_pixel_change=args.max_pixel_change, max_sface=args.max_sface)
    report = audit(args.input, args.output, cfg, json_path=args.json)
    print(json.dumps(report.to_json()))
    if not report.passed:
        frames = sorted({v["frame"] for v in report.visible if v["frame"] is not None})
        warn("audit", [f"{len(report.visible)} face(s) left visible in {args.output}"
                        + (f" (frames {frames[:20]}{' ...' if len(frames) > 20 else ''})"
                           if frames else "")])
        return 3
    return 0

#!/usr/bin/env python
"""Privacy gates: ``deid audit`` on results of the default settings and of the old ones.

For each input -- the first 3 s of ``street_multi_face_1080p.mp4``, ``hamilton_clip.mp4``, a
phone-style rotated clip (made here from the embedded NASA clip: pixels stored sideways plus a
display-rotation matrix, audio kept), the in-flight photos of ``data/sample/inflight`` and a set
of in-the-wild CelebA photos -- it runs ``deid video`` / ``deid image`` twice, with the defaults
and with the old defaults (``--detector hog --fail-open``), audits both outputs and prints one
JSON line per run; the table goes to ``results/tables/privacy_gates.json``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/privacy_gates.py [--only street hamilton ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from deid_core import paths  # noqa: E402

DEID = [sys.executable, "-m", "deid_core.cli"]
OLD = ["--detector", "hog", "--fail-open"]   # the old defaults (images: --detector hog)


def make_rotated_clip(src: Path, dst: Path) -> Path:
    """A phone-style clip: each frame stored turned 90° clockwise, a display matrix that turns
    it back (90° counter-clockwise), the audio copied."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = inp.streams.video[0]
        ov = out.add_stream("libx264", rate=vs.average_rate)
        ov.width, ov.height = vs.codec_context.height, vs.codec_context.width
        ov.pix_fmt = "yuv420p"
        ov.set_display_rotation(90)
        astreams = inp.streams.audio[:1]
        oa = out.add_stream_from_template(astreams[0]) if astreams else None
        for f in inp.decode(vs):
            img = np.ascontiguousarray(np.rot90(f.to_ndarray(format="rgb24"), k=-1))
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = f.pts, f.time_base
            for p in ov.encode(vf):
                out.mux(p)
        for p in ov.encode(None):
            out.mux(p)
        if oa is not None:
            with av.open(str(src)) as again:
                for p in again.demux(again.streams.audio[0]):
                    if p.size:
                        p.stream = oa
                        out.mux(p)
    return dst


def run(cmd: list[str]) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    return r.returncode, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr, \
        time.perf_counter() - t0


def gate(name: str, src: Path, out_dir: Path, kind: str, frames: int | None) -> list[dict]:
    rows = []
    for setting, extra in (("default", []), ("old", OLD if kind == "video" else OLD[:2])):
        out = out_dir / f"{name}_{setting}{'.mp4' if kind == 'video' else '.png'}"
        cmd = DEID + [kind, str(src), str(out), "--overwrite"] + extra
        if kind == "video" and frames:
            cmd += ["--max-frames", str(frames)]
        rc, line, secs = run(cmd)
        run_info = json.loads(line) if rc == 0 else {"error": line}
        acmd = DEID + ["audit", str(src), str(out)] + (["--max-frames", str(frames)] if frames else [])
        arc, aline, asecs = run(acmd)
        rep = json.loads(aline) if arc in (0, 3) else {"error": aline}
        row = {"input": name, "setting": setting, "run_s": round(secs, 1),
               "fps": run_info.get("fps"), "fallback_faces": run_info.get("fallback_faces",
                                                                          run_info.get("n_obscured")),
               "frames": rep.get("frames_checked"), "faces_checked": rep.get("faces_checked"),
               "faces_visible": rep.get("faces_visible"), "audit_exit": arc,
               "visible_frames": sorted({v["frame"] for v in rep.get("visible", [])
                                         if v["frame"] is not None})[:30]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--wild", type=int, default=30, help="in-the-wild CelebA photos")
    args = ap.parse_args()
    shared = paths.shared_data_dir()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="deid_gates_") as tmp:
        tmp = Path(tmp)
        jobs = []
        if shared is not None:
            jobs += [("street", shared / "videos" / "street_multi_face_1080p.mp4", "video", 75),
                     ("hamilton", shared / "videos" / "hamilton_clip.mp4", "video", None)]
        rot = make_rotated_clip(paths.sample_dir() / "clip" / "nasa_clip.mp4", tmp / "rotated.mp4")
        jobs.append(("rotated", rot, "video", None))
        for p in sorted((paths.sample_dir() / "inflight").iterdir()):
            jobs.append((f"inflight/{p.stem}", p, "image", None))
        if shared is not None and args.wild:
            wild = sorted((shared / "celeba-wild-256").glob("*/*.jpg"))[::97][:args.wild]
            jobs += [(f"wild/{p.parent.name}_{p.stem}", p, "image", None) for p in wild]
        for name, src, kind, frames in jobs:
            if args.only and not any(name.startswith(o) for o in args.only):
                continue
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            rows += gate(name, src, tmp, kind, frames)
    out = ROOT / "results" / "tables" / "privacy_gates.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    for setting in ("default", "old"):
        r = [x for x in rows if x["setting"] == setting]
        print(setting, "visible faces:", sum(x["faces_visible"] or 0 for x in r), "of",
              sum(x["faces_checked"] or 0 for x in r), "audited;", "runs failing the audit:",
              [x["input"] for x in r if x["audit_exit"] != 0])


if __name__ == "__main__":
    main()

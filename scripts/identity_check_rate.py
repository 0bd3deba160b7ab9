#!/usr/bin/env python
"""How often the pipeline's identity check pixelates a face, per model.

For each checkpoint at λ (default: its own): the share of held-out portraits (and of the
``--wild`` stills) whose generated face the check flags (:class:`deid_core.pipeline.IdentityCheck`:
SFace cosine to the input ≥ 0.7), the median cosine (of each image's last generated face), and
on the embedded sample clip the tracks and face-frames it pixelated, with ``deid audit``'s verdict on that output. Writes
``results/tables/identity_check_rate.md|csv``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/identity_check_rate.py [--checkpoint A.pt B.pt]
        [--lam 2e-5] [--wild results/video_frames] [--no-clip]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from deid_core import paths  # noqa: E402
from deid_core.audit import audit  # noqa: E402
from deid_core.evaluate.table_writer import write_table  # noqa: E402
from deid_core.face import IMAGE_SUFFIXES, read_image  # noqa: E402
from deid_core.pipeline import Deidentifier, build_pipeline  # noqa: E402
from deid_core.video import VideoConfig, deidentify_video  # noqa: E402


def image_rate(deid: Deidentifier, folder: Path, lam: float | None) -> dict:
    """Faces of ``folder``'s images the check flags (``deid.aligner.check``, as
    :func:`build_pipeline` installs it), and their SFace cosines."""
    check = deid.aligner.check
    flagged, generated, cosines = 0, 0, []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for p in files:
        check.last = {}
        _, info = deid(read_image(p), None, lam)
        flagged += len(info["recognisable"])
        generated += info["n_faces"] - info["n_obscured"]
        if check.last:                            # the image's last generated face
            cosines.append(check.last["sface"])
    return {"faces": generated, "flagged": flagged,
            "rate": round(flagged / max(generated, 1), 3),
            "sface_median": round(float(np.median(cosines)), 3) if cosines else None}


def clip_rate(aligner, net) -> dict:
    """The sample clip through ``deid video``'s pipeline (check on), then ``deid audit``."""
    clip = paths.sample_dir() / "clip" / "nasa_clip.mp4"
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "out.mp4"
        s = deidentify_video(clip, out, aligner, net, VideoConfig(progress=False), overwrite=True)
        rep = audit(clip, out)
    return {"tracks": s["tracks"], "recognisable_tracks": len(s["recognisable_tracks"]),
            "fallback_faces": s["fallback_faces"], "audit_visible": len(rep.visible),
            "audit_faces": rep.faces_checked}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", nargs="+", default=None, help="default: the committed model")
    ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--wild", default=None, help="a folder of in-the-wild stills")
    ap.add_argument("--no-clip", action="store_true")
    ap.add_argument("--name", default="identity_check_rate")
    a = ap.parse_args()
    rows = []
    for ck in a.checkpoint or [str(paths.resolve_checkpoint(None))]:
        aligner, net = build_pipeline(ck, lam=a.lam)       # the model, loaded once
        deid = net.deid
        row = {"checkpoint": Path(ck).parent.name + "/" + Path(ck).name, "lam": a.lam,
               "paper": ""}          # the paper has no such check
        held = image_rate(deid, paths.sample_dir() / "portraits", a.lam)
        row.update({f"held-out {k}": v for k, v in held.items()})
        if a.wild:
            row.update({f"wild {k}": v for k, v in image_rate(deid, Path(a.wild), a.lam).items()})
        if not a.no_clip:
            row.update({f"clip {k}": v for k, v in clip_rate(aligner, net).items()})
        print(row, flush=True)
        rows.append(row)
    write_table(a.name, pd.DataFrame(rows), "Identity check: faces it pixelates", [
        "rate: share of faces whose generated face SFace still matches (cosine ≥ 0.7) and the "
        "check pixelates; clip: the embedded sample clip through `deid video` (check on), "
        "then `deid audit` on that output."])


if __name__ == "__main__":
    main()

"""The per-run audit report of ``deid video``: what happened to each face track, and where to look.

Per track: frames de-identified by the network, obscured (pixelated: lost, unreliable landmarks,
too small, a motion-model guess), kept unchanged by the consent list, and extended by replay
(backwards before its first detection, forwards after it was lost). The frames with the least
confident coverage are listed (and, with ``--contact-sheet``, shown as crops of the *output*
in a PNG, never of the input) so a user can check them by eye; ``deid audit`` reads the report
next to the output video.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deid_core.face import write_image
from deid_core.video.tracking import FrameObs, TrackView

#: coverage confidence of a face in one frame, by how it was found (detected: its score)
CONFIDENCE = {"refit": 0.5, "replayed": 0.4, "replayed_obscured": 0.2, "lost": 0.1}


def view_confidence(v: TrackView) -> float:
    """How sure the run is that it covered this face here (lower: check it)."""
    if v.state == "detected":
        return float(min(max(getattr(v.face, "score", 1.0), 0.0), 1.0))
    if v.state == "replayed" and not getattr(v.face, "reliable", True):
        return CONFIDENCE["replayed_obscured"]
    return CONFIDENCE.get(v.state, 0.0)


def least_confident(frames: list[FrameObs], n: int = 12) -> list[dict]:
    """The ``n`` frames whose least confident face is the least confident (one entry per frame)."""
    worst: list[tuple[float, int, TrackView]] = []
    for obs in frames:
        vs = [v for v in obs.views if v.action != "keep"]
        if vs:
            v = min(vs, key=view_confidence)
            worst.append((view_confidence(v), obs.index, v))
    worst.sort(key=lambda t: (t[0], t[1]))
    out = []
    for c, idx, v in worst[:n]:
        box = v.box if v.state == "lost" else v.face.box
        out.append({"frame": idx, "track": v.track, "state": v.state, "confidence": round(c, 3),
                    "box": [round(float(x), 1) for x in np.asarray(box).ravel()]})
    return out


def track_report(frame_infos: list[dict], first_detected: dict[int, int],
                 replayed_backward: dict[int, int], replayed_forward: dict[int, int],
                 consent: dict[int, dict] | None = None) -> dict[str, dict]:
    """Per-track frame counts from the render pass's frame infos (``consent``: each track's
    decision as JSON)."""
    rep: dict[int, dict] = {}

    def row(t: int) -> dict:
        return rep.setdefault(t, {"first_frame": None, "last_frame": None,
                                  "first_detection": first_detected.get(t),
                                  "deidentified": 0, "obscured": 0, "kept": 0,
                                  "replayed_backward": replayed_backward.get(t, 0),
                                  "replayed_forward": replayed_forward.get(t, 0)})
    for fi in frame_infos:
        idx = fi["index"]
        obscured = set(fi["obscured"]) | set(fi["fail_closed"])
        kept = set(fi.get("kept", []))
        for t in set(fi["tracks"]) | obscured | kept:
            r = row(t)
            r["first_frame"] = idx if r["first_frame"] is None else r["first_frame"]
            r["last_frame"] = idx
            if t in kept:
                r["kept"] += 1
            elif t in obscured:
                r["obscured"] += 1
            else:
                r["deidentified"] += 1
    for t, r in rep.items():
        r["consent"] = (consent or {}).get(t)
    return {str(t): rep[t] for t in sorted(rep)}


def crop_box(frame: np.ndarray, box: Any, size: int = 160, pad: float = 0.3) -> np.ndarray:
    """A square crop of ``frame`` around ``box`` (padded), resized to ``size`` (black outside)."""
    b = np.asarray(box, np.float64)
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    s = max(b[2] - b[0], b[3] - b[1]) * (1 + pad)
    M = np.float32([[size / s, 0, size / 2 - cx * size / s], [0, size / s, size / 2 - cy * size / s]])
    return cv2.warpAffine(frame, M, (size, size), flags=cv2.INTER_AREA, borderValue=(0, 0, 0))


def contact_sheet(path: str | Path, tiles: list[tuple[str, np.ndarray]], cols: int = 6) -> Path:
    """Labelled tiles (RGB, equal size) in a grid PNG, written atomically."""
    if not tiles:
        tiles = [("no faces", np.zeros((160, 160, 3), np.uint8))]
    s = tiles[0][1].shape[0]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * (s + 18), min(cols, len(tiles)) * s, 3), 255, np.uint8)
    for i, (label, img) in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * (s + 18), c * s
        sheet[y:y + s, x:x + s] = img
        cv2.putText(sheet, label, (x + 3, y + s + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (0, 0, 0), 1, cv2.LINE_AA)
    write_image(path, sheet)
    return Path(path)

"""``deid audit IN OUT``: an independent check that no face was left visible in a result.

The paper's pipeline (§3) changes only the faces its detector finds; a missed face leaves the
tool unmodified. The audit re-detects every face of the *input* with two detectors of its own
-- dlib's HOG (upsample 1, the paper-era detector) and OpenCV's YuNet (at the frame's scale and,
for frames up to 1280 px, also enlarged 2×) -- whatever the run used, and compares each face's
region in the output with the input. Faces turned by 90° (people lying down, phones held sideways
without a rotation tag) are found by running both detectors on the frame turned by each of
:attr:`AuditConfig.views` (default 0, 90 and 270 degrees, :func:`deid_core.face.rotate_frame`)
and mapping them back; a face seen in several views is audited once, in the view where YuNet
scores it highest (:func:`deid_core.face.same_face`: YuNet also fires on turned faces in a
wrong view, with a shifted box). A YuNet face found only in a turned view must score at least
:attr:`AuditConfig.turned_min_score` (0.8): cables and equipment in the in-flight pan clip scored
0.62-0.71 there, real turned faces 0.92-0.96. ``views=(0,)`` is the upright-only audit, about
half the time (``benchmarks/bench_rotated.py``: 0.41 s against 0.84 s on a 640×480 frame, busy 2-core machine).

Two measures per face, ``sface`` (input/output SFace cosine) and ``pixel_change`` (mean |Δ| in
the box centre), and one rule on them, in :mod:`deid_core.identity.change` (the pipeline's
identity check and the naturalness tables apply the same rule). A face counts as **left
visible** when

- its pixels are practically untouched (``pixel_change`` < :attr:`AuditConfig.min_pixel_change`,
  1 grey level), or
- its identity survived and its pixels changed little: ``sface`` ≥
  :attr:`AuditConfig.max_sface` (0.7) and ``pixel_change`` < :attr:`AuditConfig.max_pixel_change`
  (6 grey levels).

Measured on the Hamilton clip: faces a run missed (only H.264-re-encoded) have ``sface``
0.84-0.94 and ``pixel_change`` 2.2-3.9; faces the starter network or the pixelation changed
have ``sface`` 0.03-0.54 (SFace's own same-person threshold is 0.363, so a merely weak
de-identification is not flagged -- that is what the evaluation tables measure). SFace alone
is not enough on small faces: a 60 px face painted over inside its landmark hull still scores
0.6-0.7 (hair, ears and forehead are in the chip), but its pixels changed by 90+.

Images and videos (frames compared in order; the output must hold as many frames). The report
lists every visible face with its frame number and box; :func:`audit` returns it, the CLI
prints it as JSON and exits 3 when a face was left visible.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import (IMAGE_SUFFIXES, FaceAligner, YuNetDetector, box_iou, five_points,
                            read_image, rotate_frame, same_face, unrotate_box, unrotate_points)
from deid_core.identity.change import FaceChange, VisibleRule
from deid_core.video import FrameReader, probe_video, summary_path



@dataclass
class AuditConfig(VisibleRule):
    """Settings of :func:`audit` (see the module doc for the definitions); the rule's three
    thresholds (``min_pixel_change``, ``max_sface``, ``max_pixel_change``) come from
    :class:`~deid_core.identity.change.VisibleRule`."""
    hog_upsample: int = 1            # dlib HOG upsampling (faces from ~40 px)
    yunet_upscale_below: int = 1280  # frames up to this side also get a YuNet pass at 2×
    min_face: int = 16               # faces smaller than this (box side, px) are not audited
    every: int = 1                   # audit every n-th frame of a video
    max_frames: int | None = None    # stop after this many input frames
    views: tuple[int, ...] = (0, 90, 270)  # frame turned by these degrees (ccw) to detect faces
    turned_min_score: float = 0.8    # YuNet score a face found only in a turned view needs
    edge_mirror: float = 0.25        # upright view: also YuNet on the frame mirror-padded by this ×
                                     # its short side (faces cut by the frame edge); 0: off
    edge_min_inside: float = 0.3     # ... a face found there needs this fraction of its box inside
    edge_min_score: float = 0.8      # ... and this YuNet score (mirror symmetry makes face-like
                                     # patterns: 0.65-0.68 on the pan clip, real cut faces 0.87-0.94)

    def __post_init__(self) -> None:
        if self.every < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise DeidError("audit: every and max_frames must be >= 1")
        self.views = tuple(int(v) for v in self.views)
        if not self.views or any(v not in (0, 90, 180, 270) for v in self.views):
            raise DeidError(f"audit: views must be some of 0, 90, 180, 270, got {self.views}")


@dataclass
class AuditReport:
    """What :func:`audit` found: ``visible`` lists every face left visible."""
    input: str
    output: str
    detectors: list[str]
    frames_checked: int = 0
    faces_checked: int = 0
    visible: list[dict] = field(default_factory=list)
    kept_by_consent: list[dict] = field(default_factory=list)   # visible on purpose (--keep/--only)
    run_report: dict | None = None     # the run's per-track report (OUT.json), when present

    @property
    def passed(self) -> bool:
        return not self.visible

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        d["faces_visible"] = len(self.visible)
        return d


class FaceAuditor:
    """Detect faces in input frames (HOG up-1 + YuNet, in each view) and score their change in
    the output."""

    def __init__(self, config: AuditConfig | None = None) -> None:
        self.cfg = config or AuditConfig()
        self.hog = FaceAligner(detector="hog", upsample=self.cfg.hog_upsample,
                               check_landmarks=False)
        self.yunet = YuNetDetector(upscale_below=self.cfg.yunet_upscale_below)
        self.yunet_edge = YuNetDetector()
        self.change = FaceChange()

    def edge_faces(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """YuNet on the frame mirror-padded on every side: a face cut by the frame edge becomes
        a whole (mirrored) face there; only faces crossing the edge with a score of at least
        :attr:`AuditConfig.edge_min_score` count. ``(box, points5, score)`` in frame pixels, for faces with
        at least :attr:`AuditConfig.edge_min_inside` of their box inside the frame."""
        H, W = rgb.shape[:2]
        pad = int(round(self.cfg.edge_mirror * min(H, W)))
        big = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        out = []
        for b, sc, p in self.yunet_edge.detect(big):
            b = np.asarray(b, np.float64) - pad
            crosses = b[0] < 0 or b[1] < 0 or b[2] > W or b[3] > H
            if not crosses or sc < self.cfg.edge_min_score:
                continue
            iw = max(0.0, min(b[2], W) - max(b[0], 0.0))
            ih = max(0.0, min(b[3], H) - max(b[1], 0.0))
            if iw * ih >= self.cfg.edge_min_inside * (b[2] - b[0]) * (b[3] - b[1]):
                out.append((b, np.asarray(p, np.float32) - pad, sc))
        return out

    def upright_faces(self, rgb: np.ndarray, edges: bool = False
                      ) -> list[tuple[np.ndarray, np.ndarray, str, float]]:
        """``(box, points5, detector, score)`` of every upright face: YuNet's, plus HOG's that
        YuNet missed (score -1), plus (``edges``) faces cut by the frame edge."""
        out = [(b, p, "yunet", sc) for b, sc, p in self.yunet.detect(rgb)]
        if edges and self.cfg.edge_mirror > 0:
            for b, p, sc in self.edge_faces(rgb):
                if not out or box_iou(b, np.stack([o[0] for o in out])).max() < 0.3:
                    out.append((b, p, "yunet-edge", sc))
        for b, _ in self.hog.detect_boxes(rgb):
            if out and box_iou(b, np.stack([o[0] for o in out])).max() >= 0.3:
                continue
            lm = self.hog.landmarks(rgb, b)
            out.append((np.asarray(b, np.float64), five_points(lm).astype(np.float32), "hog", -1.0))
        return [o for o in out if min(o[0][2] - o[0][0], o[0][3] - o[0][1]) >= self.cfg.min_face]

    def faces(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """``(box, points5, detector)`` of every face in every view of :attr:`AuditConfig.views`
        (detector ``"yunet@90"`` etc. for a turned view); a face found in several views once, in
        the view of its highest YuNet score (HOG faces after YuNet's)."""
        cands = []
        for view in self.cfg.views:
            turned = rgb if view == 0 else rotate_frame(rgb, view)
            for b, p, det, sc in self.upright_faces(turned, edges=view == 0):
                if view and det == "yunet" and sc < self.cfg.turned_min_score:
                    continue          # three views, three times the chances of a false alarm
                if view:
                    b, p = unrotate_box(b, view, rgb.shape), unrotate_points(p, view, rgb.shape)
                    det = f"{det}@{view}"
                cands.append((len(cands), view, sc, (b, np.asarray(p, np.float32), det)))
        kept: list[tuple] = []
        for c in sorted(cands, key=lambda c: -c[2]):
            if not any(k[1] != c[1] and same_face(c[3][0], k[3][0]) for k in kept):
                kept.append(c)
        return [c[3] for c in sorted(kept, key=lambda c: c[0])]

    def check(self, inp: np.ndarray, out: np.ndarray, frame: int | None, report: AuditReport,
              kept: list | None = None) -> None:
        """Audit one input/output frame pair, appending visible faces to ``report``; a visible
        face on one of the ``kept`` boxes (the run's consent list kept it) is listed apart."""
        if inp.shape != out.shape:
            raise DeidError(f"frame {frame}: input is {inp.shape[1]}x{inp.shape[0]} but the "
                            f"output is {out.shape[1]}x{out.shape[0]}")
        report.frames_checked += 1
        for box, pts, det in self.faces(inp):
            report.faces_checked += 1
            m = self.change.compare(inp, out, box, pts)
            if self.cfg.left_visible(m):
                row = {"frame": frame, "box": [round(float(v), 1) for v in box], "detector": det, **m}
                if kept and any(same_face(box, np.asarray(k, np.float64)) for k in kept):
                    report.kept_by_consent.append(row)
                else:
                    report.visible.append(row)


def _video_frames(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    r = FrameReader(path, queue_size=4, max_frames=max_frames)
    r.start()
    try:
        for _, _, _, f in r:
            yield f
    finally:
        r.stop()
    if r.error:
        raise DeidError(r.error)


def _run_report(out: Path) -> dict:
    """The summary ``deid video`` wrote next to ``out`` (``OUT.json``), or {}."""
    side = summary_path(out)
    if out.suffix.lower() in IMAGE_SUFFIXES or not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise DeidError(f"audit: cannot read the run report {side}: {exc}") from exc


def audit(inp: str | os.PathLike, out: str | os.PathLike, config: AuditConfig | None = None,
          json_path: str | os.PathLike | None = None) -> AuditReport:
    """Audit ``out`` (a de-identified result) against its input ``inp`` (image or video);
    optionally write the report to ``json_path`` (atomically)."""
    cfg = config or AuditConfig()
    inp, out = Path(inp), Path(out)
    for p in (inp, out):
        if not p.is_file():
            raise DeidError(f"audit: file not found: {p}")
    auditor = FaceAuditor(cfg)
    report = AuditReport(str(inp), str(out), [
        f"hog (upsample {cfg.hog_upsample})", f"yunet (1x, 2x up to {cfg.yunet_upscale_below} px)"]
        + [f"both on the frame turned {v} degrees" for v in cfg.views if v])
    run = _run_report(out)
    kept = run.get("kept_boxes", {})
    if run:
        report.run_report = {k: run[k] for k in ("mode", "track_report", "least_confident",
                                                 "replayed_frames", "kept_frames", "consent")
                             if k in run}
    if inp.suffix.lower() in IMAGE_SUFFIXES:
        auditor.check(read_image(inp), read_image(out), None, report)
    else:
        n_in, n_out = probe_video(inp).frames, probe_video(out).frames
        if n_in and n_out and n_in != n_out and cfg.max_frames is None:
            raise DeidError(f"audit: {inp} has {n_in} frames but {out} has {n_out}")
        pairs = zip(_video_frames(inp, cfg.max_frames), _video_frames(out, cfg.max_frames))
        for i, (a, b) in enumerate(pairs):
            if i % cfg.every == 0:
                auditor.check(a, b, i, report, kept.get(str(i)))
    if json_path is not None:
        paths.write_text_atomic(json_path, json.dumps(report.to_json(), indent=1) + "\n")
    return report

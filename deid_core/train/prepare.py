"""The training face cache (paper §4: aligned crops of every training face), written once by
``deid prepare SRC DST`` (:func:`prepare_faces`, resumable) and read by :mod:`deid_core.train.data`::

    dst_dir/meta.json       {"size", "margin", "detector", "detect_scale", "upsample",
                             "template": "template68.json", "format", "src_dir", "deid_version"}
    dst_dir/index.jsonl     one JSON object per aligned face, one per source image:
        path       crop file, relative to dst_dir (posix), e.g. "07201/000123.png"
        person     identity: the first folder below src_dir, or the file stem for files
                   directly in src_dir (flat NASA layout)
        source     source image, relative to src_dir (posix)
        box        [x0, y0, x1, y1] square face box in source pixels
        score      detector score; n_faces: faces found (the largest box is kept)
        landmarks  68×[x, y] in crop pixels;  M: 2×3 source→crop similarity
    dst_dir/skipped.jsonl   {"source", "reason"} for images with no face / unreadable
    dst_dir/summary.json    counts, skipped list and throughput of the last run
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deid_core import __version__, paths
from deid_core.errors import DeidError
from deid_core.face.aligner import FaceAligner, align_face
from deid_core.face.detect import AlignConfig, DEFAULT_DETECTOR
from deid_core.face.image_io import IMAGE_SUFFIXES, read_image, write_image
from deid_core.face.template import TEMPLATE_FILE

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# Training-side face cache.
@dataclass
class PrepareSummary:
    """What :func:`prepare_faces` did (also written to ``dst_dir/summary.json``)."""
    dst_dir: str
    n_images: int = 0            # image files found under src_dir
    n_aligned: int = 0           # aligned this run
    n_skipped: int = 0           # no face / unreadable this run
    n_already: int = 0           # done (aligned or skipped) by an earlier run, not redone
    n_multi: int = 0             # images with > 1 face (the largest was kept)
    seconds: float = 0.0
    images_per_s: float = 0.0
    skipped: list[dict] = field(default_factory=list)  # {"source", "reason"} of this run

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def list_images(src_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """Image files under ``src_dir`` (sorted) with their person: the first folder below
    ``src_dir`` (LFW / CelebA folder-per-person), or the file stem for files directly in
    ``src_dir`` (flat NASA layout). Hidden files and folders are ignored."""
    src_dir = Path(src_dir)
    out = []
    for p in sorted(src_dir.rglob("*")):
        rel = p.relative_to(src_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            out.append((p, rel.parts[0] if len(rel.parts) > 1 else p.stem))
    return out


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line cannot happen with atomic writes
                raise DeidError(f"corrupt line in {path}: {line[:80]!r}") from None
    return rows


def _append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append rows atomically: rewrite old + new to a temp file, then ``os.replace``."""
    if not rows:
        return
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    new = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    paths.write_text_atomic(path, old + new)


def read_face_index(dst_dir: str | os.PathLike) -> list[dict]:
    """The records of a face cache's ``index.jsonl`` (see the module docstring)."""
    path = Path(dst_dir) / "index.jsonl"
    if not path.is_file():
        raise DeidError(f"no face index at {path}: run prepare_faces first")
    return _read_jsonl(path)


def prepare_faces(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, size: int = 128,
                  detector: str | None = None, *, config: AlignConfig | None = None,
                  fmt: str = "png", limit: int | None = None, batch: int = 64,
                  progress: bool = True) -> PrepareSummary:
    """Detect, align and crop every face image under ``src_dir`` into the cache ``dst_dir``.

    Layouts: folder per person (LFW, CelebA) and flat folders (NASA: stem = person), see
    :func:`list_images`. One face per image: the largest box when several are found.
    Resumable: sources already in ``index.jsonl`` or ``skipped.jsonl`` are not redone; the
    index is extended atomically every ``batch`` images. Images without a face (or
    unreadable) are skipped and logged. ``limit`` takes the first N images (sorted). The
    cache format is in the module docstring. ``fmt``: ``"png"`` (lossless) or ``"jpg"`` (q=95).
    ``detector`` None: the detector of an existing cache in ``dst_dir`` (so that a cache made
    with dlib HOG is resumed with it), else the shared default :data:`DEFAULT_DETECTOR`.
    """
    from tqdm import tqdm  # not on the GPU image (scripts/gpu/importguard.py)
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise DeidError(f"source folder not found: {src_dir}")
    if fmt not in ("png", "jpg"):
        raise DeidError(f"fmt must be 'png' or 'jpg', got {fmt!r}")
    if dst_dir.resolve() == src_dir.resolve() or src_dir.resolve() in dst_dir.resolve().parents:
        raise DeidError(f"the cache {dst_dir} must not be inside the source folder {src_dir}")
    if detector is None:
        old_meta = Path(dst_dir) / "meta.json"
        detector = (json.loads(old_meta.read_text(encoding="utf-8")).get("detector", DEFAULT_DETECTOR)
                    if old_meta.is_file() else DEFAULT_DETECTOR)
    cfg = dataclasses.replace(config or AlignConfig(), size=size, detector=detector, order="rgb")
    aligner = FaceAligner(cfg)
    meta = {"size": cfg.size, "margin": cfg.margin, "detector": cfg.detector,
            "detect_scale": cfg.detect_scale, "upsample": cfg.upsample,
            "template": TEMPLATE_FILE.name, "format": fmt}
    dst_dir.mkdir(parents=True, exist_ok=True)
    meta_path = dst_dir / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
        if diff:
            raise DeidError(f"{dst_dir} holds a cache made with other settings {diff} "
                            f"(old, new): use another folder")
    else:
        paths.write_text_atomic(meta_path, json.dumps(
            {**meta, "src_dir": str(src_dir.resolve()), "deid_version": __version__}, indent=1))
    index_path, skip_path = dst_dir / "index.jsonl", dst_dir / "skipped.jsonl"
    done = {r["source"] for r in _read_jsonl(index_path)} | \
           {r["source"] for r in _read_jsonl(skip_path)}
    images = list_images(src_dir)[:limit] if limit else list_images(src_dir)
    summary = PrepareSummary(dst_dir=str(dst_dir), n_images=len(images))
    todo = [(p, person) for p, person in images
            if p.relative_to(src_dir).as_posix() not in done]
    summary.n_already = len(images) - len(todo)
    rows: list[dict] = []
    skips: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(todo, desc=f"prepare_faces {src_dir.name}", unit="img", disable=not progress)
    for i, (path, person) in enumerate(bar, 1):
        source = path.relative_to(src_dir).as_posix()
        try:
            frame = read_image(path)
            faces = aligner.detect(frame)
        except DeidError as exc:
            skips.append({"source": source, "reason": f"unreadable: {exc}"})
            faces = None
        if faces == []:
            skips.append({"source": source, "reason": "no face"})
        elif faces:
            summary.n_multi += len(faces) > 1
            a = align_face(frame, aligner, faces[0])
            rel = Path(source).with_suffix(f".{fmt}")
            if len(rel.parts) == 1:
                rel = Path(person) / rel
            write_image(dst_dir / rel, a["crop"])
            rec = faces[0].to_json()
            rows.append({"path": rel.as_posix(), "person": person, "source": source,
                         "box": rec["box"], "score": rec["score"], "n_faces": len(faces),
                         "landmarks": np.round(a["landmarks_crop"].astype(np.float64), 2).tolist(),
                         "M": np.round(a["M"], 6).tolist()})
        if i % batch == 0 or i == len(todo):
            _append_jsonl(index_path, rows)
            _append_jsonl(skip_path, skips)
            summary.n_aligned += len(rows)
            summary.n_skipped += len(skips)
            summary.skipped += skips
            rows, skips = [], []
            bar.set_postfix(aligned=summary.n_aligned, skipped=summary.n_skipped)
    summary.seconds = round(time.perf_counter() - t0, 2)
    done_now = summary.n_aligned + summary.n_skipped
    summary.images_per_s = round(done_now / summary.seconds, 2) if summary.seconds > 0 else 0.0
    paths.write_text_atomic(dst_dir / "summary.json", json.dumps(summary.to_json(), indent=1) + "\n")
    log.info("prepare_faces %s -> %s: %d aligned, %d skipped (%s), %d already done, %.1f img/s",
             src_dir, dst_dir, summary.n_aligned, summary.n_skipped,
             ", ".join(d["source"] for d in summary.skipped[:10])
             + (" ..." if summary.n_skipped > 10 else ""), summary.n_already,
             summary.images_per_s)
    return summary

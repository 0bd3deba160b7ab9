"""Compact face shards for the GPU carry: JPEG bytes in a few ``.npy`` files plus an index.

Layout of a shard folder (written by :func:`write_shards`, read by :func:`read_shards`)::

    index.json   {"format", "size", "quality", "count", "shards": [names], "persons": [ids],
                  "sources": {cache name: count}}
    items.npy    int64 N×4: shard number, byte offset, byte length, person number
    part_K.npy   uint8 1-D: concatenated JPEG files

Only numpy and OpenCV are needed to read them (the GPU image has both).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

FORMAT = "deid-face-shards-1"
SHARD_BYTES = 8 << 20


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """uint8 H×W×3 RGB → JPEG bytes (4:2:0 chroma as OpenCV's default)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: np.ndarray) -> np.ndarray:
    """JPEG bytes (uint8 array) → uint8 H×W×3 RGB."""
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("JPEG decoding failed")
    return bgr[:, :, ::-1]


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def write_shards(dst: Path, jpegs: Sequence[bytes], person_ids: Sequence[str], size: int,
                 quality: int, sources: dict[str, int] | None = None,
                 shard_bytes: int = SHARD_BYTES) -> dict:
    """Write the shard folder ``dst`` (must not exist yet); returns its index."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=False)
    persons = sorted(set(person_ids))
    pnum = {p: i for i, p in enumerate(persons)}
    items = np.zeros((len(jpegs), 4), np.int64)
    names: list[str] = []
    buf: list[bytes] = []
    used = 0

    def flush() -> None:
        nonlocal buf, used
        if buf:
            name = f"part_{len(names):03d}.npy"
            _save_npy(dst / name, np.frombuffer(b"".join(buf), np.uint8))
            names.append(name)
        buf, used = [], 0

    for i, (data, person) in enumerate(zip(jpegs, person_ids)):
        if used and used + len(data) > shard_bytes:
            flush()
        items[i] = (len(names), used, len(data), pnum[person])
        buf.append(data)
        used += len(data)
    flush()
    _save_npy(dst / "items.npy", items)
    index = {"format": FORMAT, "size": int(size), "quality": int(quality), "count": len(jpegs),
             "shards": names, "persons": persons, "sources": dict(sources or {})}
    tmp = dst / f".index.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, dst / "index.json")
    return index


def read_shards(src: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(faces uint8 N×S×S×3 RGB, person numbers int64 N, index) of a shard folder."""
    src = Path(src)
    index = json.loads((src / "index.json").read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{src}: not a face shard folder (format {index.get('format')!r})")
    items = np.load(src / "items.npy")
    parts = [np.load(src / name, mmap_mode="r") for name in index["shards"]]
    s = int(index["size"])
    faces = np.empty((len(items), s, s, 3), np.uint8)
    for i, (k, off, n, _) in enumerate(items):
        img = decode_jpeg(np.asarray(parts[k][off:off + n]))
        if img.shape != (s, s, 3):
            raise ValueError(f"{src}: face {i} is {img.shape}, expected {s}×{s}×3")
        faces[i] = img
    return faces, items[:, 3].copy(), index

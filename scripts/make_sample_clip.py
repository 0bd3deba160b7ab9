#!/usr/bin/env python
"""Build the embedded public-domain sample clip ``data/sample/clip/nasa_clip.mp4``.

The clip is synthesised from NASA astronaut portraits (US-government work, public domain)
in ``data/sample/portraits/``: 3 s, 25 fps, 854x480, H.264/yuv420p, with an AAC mono audio
track (a synthetic "speech-like" signal: a gliding harmonic voice, amplitude-modulated at a
syllable rate, made with numpy). Layout over time:

- frames  0-4:  background only (no face) -> tests "no-face frames are unchanged";
- frames  5-39: one portrait, smooth pan + zoom + in-plane rotation (faces move);
- frames 40-74: two portraits side by side, drifting in opposite directions (two tracks).

Deterministic: the same inputs give the same clip (``--seed`` only moves the background).
Usage: ``python scripts/make_sample_clip.py [--out data/sample/clip/nasa_clip.mp4]``.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


@dataclass
class ClipConfig:
    width: int = 854
    height: int = 480
    fps: int = 25
    n_frames: int = 75
    no_face_frames: int = 5          # leading frames with background only
    two_face_from: int = 40          # first frame with two portraits
    single: str = "Eileen_Collins.jpg"
    pair: tuple[str, str] = ("Andrew_Morgan.jpg", "Nick_Hague.jpg")
    audio_rate: int = 44100
    crf: int = 23
    seed: int = 0


def _background(cfg: ClipConfig) -> np.ndarray:
    """A smooth, face-free colour gradient with a little low-frequency texture."""
    rng = np.random.default_rng(cfg.seed)
    y, x = np.mgrid[0:cfg.height, 0:cfg.width].astype(np.float32)
    base = np.stack([40 + 60 * x / cfg.width, 60 + 40 * y / cfg.height,
                     110 + 50 * (1 - x / cfg.width)], axis=-1)
    noise = cv2.resize(rng.normal(0, 12, (9, 16, 3)).astype(np.float32), (cfg.width, cfg.height),
                       interpolation=cv2.INTER_CUBIC)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _place(canvas: np.ndarray, img: np.ndarray, cx: float, cy: float, height: float,
           angle_deg: float) -> None:
    """Paste ``img`` scaled to ``height`` px, rotated by ``angle_deg``, centred at (cx, cy)."""
    h, w = img.shape[:2]
    s = height / h
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, s)
    M[:, 2] += np.array([cx, cy]) - np.array([w / 2, h / 2])
    H, W = canvas.shape[:2]
    warped = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(np.full((h, w), 255, np.uint8), M, (W, H), flags=cv2.INTER_LINEAR)
    a = (mask.astype(np.float32) / 255.0)[..., None]
    canvas[:] = (a * warped + (1 - a) * canvas).round().astype(np.uint8)


def render_frames(cfg: ClipConfig, portraits_dir: Path) -> list[np.ndarray]:
    """The clip's RGB frames (uint8, H x W x 3)."""
    load = lambda name: np.asarray(Image.open(portraits_dir / name).convert("RGB"))  # noqa: E731
    single, left, right = load(cfg.single), load(cfg.pair[0]), load(cfg.pair[1])
    bg = _background(cfg)
    frames = []
    for i in range(cfg.n_frames):
        f = bg.copy()
        if cfg.no_face_frames <= i < cfg.two_face_from:
            t = (i - cfg.no_face_frames) / max(1, cfg.two_face_from - cfg.no_face_frames - 1)
            cx = cfg.width * (0.38 + 0.24 * t)
            cy = cfg.height * (0.52 - 0.04 * np.sin(np.pi * t))
            _place(f, single, cx, cy, height=cfg.height * (0.78 + 0.18 * t),
                   angle_deg=6.0 * np.sin(2 * np.pi * t))
        elif i >= cfg.two_face_from:
            t = (i - cfg.two_face_from) / max(1, cfg.n_frames - cfg.two_face_from - 1)
            _place(f, left, cfg.width * (0.27 + 0.04 * t), cfg.height * 0.5,
                   height=cfg.height * 0.72, angle_deg=-5.0 * t)
            _place(f, right, cfg.width * (0.73 - 0.04 * t), cfg.height * (0.5 + 0.03 * t),
                   height=cfg.height * (0.72 - 0.06 * t), angle_deg=4.0 * t)
        frames.append(f)
    return frames


def speech_like_audio(cfg: ClipConfig) -> np.ndarray:
    """Mono float32 in [-1, 1]: gliding harmonic voice (f0 110-180 Hz), syllable-rate AM."""
    n = int(round(cfg.n_frames / cfg.fps * cfg.audio_rate))
    t = np.arange(n) / cfg.audio_rate
    f0 = 140 + 35 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / cfg.audio_rate
    voice = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 9))
    syll = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.7   # ~4 syllables per second
    env = np.minimum(1, np.minimum(t, t[-1] - t) / 0.05)          # 50 ms fade in/out
    y = 0.3 * voice * syll * env
    return (y / max(1e-6, np.abs(y).max()) * 0.5).astype(np.float32)


def write_clip(path: Path, frames: list[np.ndarray], audio: np.ndarray, cfg: ClipConfig) -> None:
    """H.264 yuv420p video + AAC mono audio into an mp4 (temp file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    with av.open(str(tmp), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=cfg.fps)
        vs.width, vs.height, vs.pix_fmt = cfg.width, cfg.height, "yuv420p"
        vs.options = {"crf": str(cfg.crf), "preset": "slow"}
        as_ = out.add_stream("aac", rate=cfg.audio_rate, layout="mono")
        for img in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        chunk = 1024
        for k, start in enumerate(range(0, len(audio), chunk)):
            block = audio[start:start + chunk][None, :]
            af = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            af.sample_rate = cfg.audio_rate
            af.pts = start
            af.time_base = Fraction(1, cfg.audio_rate)
            for pkt in as_.encode(af):
                out.mux(pkt)
        for pkt in as_.encode():
            out.mux(pkt)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "data/sample/clip/nasa_clip.mp4")
    ap.add_argument("--portraits", type=Path, default=REPO / "data/sample/portraits")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = ClipConfig(seed=args.seed)
    write_clip(args.out, render_frames(cfg, args.portraits), speech_like_audio(cfg), cfg)
    meta = asdict(cfg) | {"licence": "public domain (NASA portraits; synthetic audio)"}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

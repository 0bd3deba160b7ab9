"""Guards: the audio of `deid video` is kept, not just present.

* copy mode (mp4-compatible codecs, here the AAC track of the embedded NASA clip): every audio
  packet of the input appears in the output with the same bytes, pts, dts and duration (a
  remux that drops, duplicates, reorders or re-times packets fails);
* re-encode mode (PCM from .mov → AAC): same duration and the decoded waveform (a chirp, so a
  shifted or gapped signal does not correlate) matches the input's with correlation ≥ 0.9.

The video side runs through :func:`deid_core.video.deidentify_video` with a face on every frame
(one real dlib detection of the clip, re-used for each frame) and a network that paints the
face, so the output is a real re-encode (not the zero-face stream copy).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from deid_core.video import codec as video_codec
from deid_core import video as V
from deid_core.face import FaceAligner


def paint_net(crops):
    n, s = crops.shape[:2]
    return np.full((n, s, s, 3), (255, 0, 255), np.uint8), np.ones((n, s, s), np.float32)


def audio_packets(path: Path) -> list[tuple]:
    """(bytes, pts, dts, duration) of every audio packet, times in seconds as Fractions."""
    def sec(v, tb):
        return None if v is None else Fraction(v) * tb
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return [(bytes(p), sec(p.pts, p.time_base), sec(p.dts, p.time_base),
                 sec(p.duration, p.time_base)) for p in c.demux(a) if p.size]


def decode_mono(path: Path, rate: int) -> np.ndarray:
    res = av.AudioResampler(format="flt", layout="mono", rate=rate)
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.audio[0]):
            for g in res.resample(f):
                out.append(g.to_ndarray().reshape(-1))
    for g in res.resample(None):
        out.append(g.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.float64)


def test_copy_mode_audio_packets_identical(clip, fixed_aligner, tmp_path):
    out = tmp_path / "o.mp4"
    s = V.deidentify_video(clip, out, fixed_aligner, paint_net, V.VideoConfig(progress=False))
    assert s["audio"]["mode"] == "copy" and s["frames_with_faces"] == s["frames"] == 75
    assert not s["copied_without_faces"]                    # the video really was re-encoded
    a, b = audio_packets(clip), audio_packets(out)
    assert len(a) > 100
    assert len(b) == len(a), f"{len(a)} audio packets in, {len(b)} out"
    for i, (pa, pb) in enumerate(zip(a, b)):
        assert pa[0] == pb[0], f"packet {i}: bytes differ"
        assert pa[1:] == pb[1:], f"packet {i}: (pts, dts, duration) {pa[1:]} -> {pb[1:]}"


def _pcm_mov(path: Path, rate: int, seconds: float, fps: int) -> np.ndarray:
    """A 160×120 .mov with a PCM chirp in 800-sample packets; returns the chirp (float)."""
    t = np.arange(int(rate * seconds)) / rate
    chirp = 0.4 * np.sin(2 * np.pi * (200 * t + 900 * t ** 2))
    pcm = (chirp * 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        as_ = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        for k in range(0, len(pcm), 800):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[None, k:k + 800]), format="s16",
                                            layout="mono")
            af.sample_rate, af.pts = rate, k
            for p in as_.encode(af):
                out.mux(p)
        for i in range(int(seconds * fps)):
            f = np.full((120, 160, 3), 8 * i % 255, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in list(vs.encode()) + list(as_.encode()):
            out.mux(p)
    return pcm.astype(np.float64) / 32767


def test_reencode_mode_duration_and_waveform(tmp_path):
    rate, fps = 16000, 25
    src = tmp_path / "pcm.mov"
    chirp = _pcm_mov(src, rate, 1.0, fps)
    with av.open(str(src)) as c:
        assert sum(1 for p in c.demux(c.streams.audio[0]) if p.size) == 20   # many packets in
    out = tmp_path / "o.mp4"
    with pytest.warns(UserWarning, match="no face"):
        s = V.deidentify_video(src, out, FaceAligner(), paint_net, V.VideoConfig(progress=False))
    assert s["audio"]["mode"] == "aac"
    with av.open(str(out)) as c:
        assert video_codec._codec_id(c.streams.audio[0]) == "aac"
    got = decode_mono(out, rate)
    # duration: the input's second, within one AAC frame (1024 samples, encoder priming)
    assert abs(len(got) - len(chirp)) <= 1024 + rate // fps, (len(got), len(chirp))
    # waveform: best normalised correlation over small lags (AAC priming delay)
    best = 0.0
    for lag in range(0, 2049):
        a = got[lag:lag + len(chirp) - 2048]
        b = chirp[:len(a)]
        if len(a) < rate // 2:
            break
        best = max(best, float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    for lag in range(1, 2049):       # the output may also start early (negative lag)
        b = chirp[lag:lag + len(got) - 2048]
        a = got[:len(b)]
        best = max(best, float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    assert best >= 0.9, f"waveform correlation {best:.3f}"

"""Video / live pipeline: I/O with audio, tracking, smoothing, fail-closed, bad input.

Everything runs with stand-in networks (pass-through / constant colour / fixed pattern), so no
trained model is needed. Detections of the embedded NASA clip are computed once per session
and cached (the detector is the slow part on CPU).
"""
from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from deid_core.video import codec as video_codec
from deid_core.video import tracking as video_tracking
from deid_core import pipeline
from deid_core.evaluate import video_metrics
from deid_core import video as V
from deid_core.face import FaceAligner, passthrough_crops
from deid_core.errors import DeidError


# ----------------------------------------------------------------------------------------
# Fixtures and helpers.

class CachedAligner(FaceAligner):
    """FaceAligner whose detections are memoised by frame content (same frames, same result),
    and which can drop all detections on chosen detector calls (to test fail-closed)."""

    _cache: dict[tuple, list] = {}

    def __init__(self, drop_calls: set[int] = frozenset(), **kw):
        super().__init__(**kw)
        self.drop_calls, self.calls = set(drop_calls), 0

    def detect(self, frame):
        key = (hashlib.sha1(np.ascontiguousarray(frame)).digest(), self.config.upsample,
               self.config.detect_scale, self.config.detector)
        if key not in self._cache:
            self._cache[key] = super().detect(frame)
        call, self.calls = self.calls, self.calls + 1
        return [] if call in self.drop_calls else list(self._cache[key])


def constant_net(crops):
    n, s = crops.shape[:2]
    return np.full((n, s, s, 3), (255, 0, 255), np.uint8), np.ones((n, s, s), np.float32)


@pytest.fixture(scope="session")
def clip_path(sample_dir) -> Path:
    p = sample_dir / "clip" / "nasa_clip.mp4"
    assert p.is_file(), "run scripts/make_sample_clip.py"
    return p


@pytest.fixture(scope="session")
def clip_frames(clip_path) -> list[np.ndarray]:
    return V.read_frames(clip_path)


@pytest.fixture(scope="session")
def clip_faces(clip_frames) -> list[list]:
    al = CachedAligner()
    return [al.detect(f) for f in clip_frames]


def _hash(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _stream_facts(p: Path) -> dict:
    with av.open(str(p)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
    with av.open(str(p)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        adur = None
        if a is not None:
            last = 0.0
            for pkt in c.demux(a):
                if pkt.pts is not None:
                    last = max(last, float((pkt.pts + (pkt.duration or 0)) * pkt.time_base))
            adur = last
        return {"frames": n, "fps": Fraction(v.average_rate), "size": (v.width, v.height),
                "codec": video_codec._codec_id(v), "audio": video_codec._codec_id(a) if a else None,
                "audio_duration": adur}


def _write_clip(path: Path, frames: list[np.ndarray], fps: int = 25, audio: bool = False) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt = "yuv420p"
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return path


# ----------------------------------------------------------------------------------------
# Units.

def test_one_euro_reduces_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 25.0
    still = 100 + rng.normal(0, 1.0, (200, 68, 2))
    f = V.OneEuroFilter(min_cutoff=1.0, beta=1.5)
    out = np.stack([f(x, ti, scale=100) for x, ti in zip(still, t)])
    assert out[50:].std() < 0.5 * still[50:].std()
    # a fast ramp (2 face sizes per second) is followed with a small lag
    f = V.OneEuroFilter(min_cutoff=1.0, beta=1.5)
    ramp = (200 * t)[:, None, None] + np.zeros((200, 68, 2))
    out = np.stack([f(x, ti, scale=100) for x, ti in zip(ramp, t)])
    assert np.abs(out[100:] - ramp[100:]).max() < 0.15 * 100


def test_box_iou_and_pixelate():
    iou = V.box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou[0], [1.0, 1 / 3, 0.0], atol=1e-9)
    img = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    out = img.copy()
    V.pixelate(out, [10, 10, 40, 40], blocks=3)
    assert (out[:10] == img[:10]).all() and (out[:, 40:] == img[:, 40:]).all()
    assert len(np.unique(out[10:40, 10:40].reshape(-1, 3), axis=0)) <= 9


def test_flicker_metric():
    a = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 10)]
    m = [np.ones((8, 8), bool)] * 3
    assert video_metrics.flicker(a, m) == pytest.approx(10.0)
    b = [np.full((8, 8, 3), v, np.uint8) for v in (10, 40, 10)]
    assert video_metrics.flicker_ratio(a, b, m) == pytest.approx(3.0)
    with pytest.raises(DeidError):
        video_metrics.flicker_ratio(a, b[:2], m)


# ----------------------------------------------------------------------------------------
# Frame processor on the embedded clip (exact, before encoding).

def test_processor_hull_only_and_no_face_frames_unchanged(clip_frames, clip_faces):
    proc = V.FrameProcessor(CachedAligner(), constant_net, V.VideoConfig())
    for i, frame in enumerate(clip_frames[:12]):
        out, info = proc(frame, i / 25)
        if not clip_faces[i]:
            assert info["n_faces"] == 0 and np.array_equal(out, frame)
            continue
        assert info["n_faces"] == len(clip_faces[i]) >= 1
        changed = (out != frame).any(axis=-1)
        hull = video_metrics.hull_mask([f.landmarks for f in info["faces"]], frame.shape)
        assert changed.any() and not (changed & ~hull).any()


def test_processor_tracks_two_faces_with_stable_ids(clip_frames):
    proc = V.FrameProcessor(CachedAligner(), passthrough_crops, V.VideoConfig(detect_every=3))
    ids = []
    for i, frame in enumerate(clip_frames):
        _, info = proc(frame, i / 25)
        ids.append(tuple(sorted(info["tracks"])))
    single = {t for f in ids[8:38] for t in f}
    pair = {t for f in ids[50:] for t in f}
    assert len(single) == 1 and len(pair) == 2 and not (single & pair)
    assert all(len(f) == 2 for f in ids[50:])


def test_refit_between_detections_close_to_detection(clip_frames, clip_faces):
    """detect_every=4: re-fitted landmarks land near the detector+predictor result."""
    proc = V.FrameProcessor(CachedAligner(), passthrough_crops,
                            V.VideoConfig(detect_every=4, stabilize=False))
    errs = []
    for i in range(5, 38):
        _, info = proc(clip_frames[i], i / 25)
        if not info["detected"] and clip_faces[i] and info["faces"]:
            ref = clip_faces[i][0]
            side = ref.box[2] - ref.box[0]
            errs.append(np.linalg.norm(info["faces"][0].landmarks - ref.landmarks, axis=1).mean() / side)
    assert len(errs) >= 15 and np.median(errs) < 0.03 and max(errs) < 0.08


def test_fail_closed_covers_dropped_detections(clip_frames, clip_faces):
    drop = set(range(12, 17))
    frames = list(range(5, 25))

    def run(fail_closed):
        al = CachedAligner(drop_calls={d - frames[0] for d in drop})
        proc = V.FrameProcessor(al, passthrough_crops, V.VideoConfig(fail_closed=fail_closed))
        return {i: proc(clip_frames[i], i / 25) for i in frames}

    closed, open_ = run(True), run(False)
    plain = FaceAligner()
    for i in drop:
        hull = video_metrics.hull_mask([f.landmarks for f in clip_faces[i]], clip_frames[i].shape)
        diff = np.abs(closed[i][0].astype(int) - clip_frames[i].astype(int)).max(axis=-1)
        assert closed[i][1]["fail_closed"], i
        assert diff[hull].mean() > 5.0, i                     # face region changed (pixelated)
        assert plain.detect(closed[i][0]) == [], i            # and no face detectable there
        assert np.array_equal(open_[i][0], clip_frames[i])    # without it: the face leaks
    assert not any(closed[i][1]["fail_closed"] for i in frames if i not in drop)


def test_stabilisation_reduces_flicker(clip_frames, clip_faces):
    """A fixed-pattern net exposes alignment jitter; One-Euro smoothing must reduce it."""
    idx = list(range(5, 40))
    inp = [clip_frames[i] for i in idx]
    masks = [video_metrics.hull_mask([f.landmarks for f in clip_faces[i]], clip_frames[i].shape) for i in idx]
    res = {}
    for stab in (True, False):
        proc = V.FrameProcessor(CachedAligner(), V.pattern_crops(128), V.VideoConfig(stabilize=stab))
        outs = [proc(f, k / 25)[0] for k, f in enumerate(inp)]
        res[stab] = video_metrics.flicker_ratio(inp, outs, masks)
    assert res[True] < res[False]


# ----------------------------------------------------------------------------------------
# Files.

@pytest.fixture(scope="module")
def clip_run(clip_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("vid") / "out.mp4"
    before = (_hash(clip_path), clip_path.stat().st_mtime_ns)
    s = V.deidentify_video(clip_path, out, CachedAligner(), constant_net,
                           V.VideoConfig(detect_every=2, progress=False))
    assert (_hash(clip_path), clip_path.stat().st_mtime_ns) == before   # input untouched
    return out, s


def test_video_file_keeps_frames_fps_size_audio(clip_path, clip_run, clip_frames):
    out, s = clip_run
    a, b = _stream_facts(clip_path), _stream_facts(out)
    assert b["codec"] == "h264" and b["frames"] == a["frames"] == s["frames"] == len(clip_frames)
    assert b["fps"] == a["fps"] and b["size"] == a["size"]
    assert b["audio"] == a["audio"] == "aac" and s["audio"]["mode"] == "copy"
    assert abs(b["audio_duration"] - a["audio_duration"]) <= 1 / float(a["fps"])
    assert V.summary_path(out).is_file() and s["frames_no_face"] == 5
    assert [x for x in out.parent.iterdir() if x.name.startswith(".")] == []   # no temp left


def test_video_file_no_face_frames_and_outside_hulls_kept(clip_run, clip_frames, clip_faces):
    out, _ = clip_run
    res = V.read_frames(out)
    for i in (0, 3):   # no-face frames: equal up to the H.264 round trip
        assert np.abs(res[i].astype(int) - clip_frames[i].astype(int)).mean() < 1.5
    i = 20
    hull = video_metrics.hull_mask([f.landmarks for f in clip_faces[i]], clip_frames[i].shape)
    d = np.abs(res[i].astype(int) - clip_frames[i].astype(int)).mean(axis=-1)
    assert d[hull].mean() > 40                     # the constant colour is there
    import cv2
    far = ~cv2.dilate(hull.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    assert d[far].mean() < 3.0                     # elsewhere: the input (codec noise only)


def test_bad_paths(clip_path, tmp_path):
    al = CachedAligner()
    with pytest.raises(DeidError, match="not found"):
        V.deidentify_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", al, passthrough_crops)
    with pytest.raises(DeidError, match="is the input"):
        V.deidentify_video(clip_path, clip_path, al, passthrough_crops)
    (tmp_path / "exists.mp4").write_bytes(b"keep")
    with pytest.raises(DeidError, match="--overwrite"):
        V.deidentify_video(clip_path, tmp_path / "exists.mp4", al, passthrough_crops)
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep"
    with pytest.raises(DeidError, match=".mp4"):
        V.deidentify_video(clip_path, tmp_path / "o.avi", al, passthrough_crops)


def test_corrupt_and_streamless_inputs(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(DeidError, match="corrupt"):
        V.deidentify_video(bad, tmp_path / "o.mp4", CachedAligner(), passthrough_crops)
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("aac", rate=16000, layout="mono")
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="flt", layout="mono")
        fr.sample_rate = 16000
        for pkt in list(s.encode(fr)) + list(s.encode()):
            c.mux(pkt)
    with pytest.raises(DeidError, match="no video stream"):
        V.deidentify_video(audio_only, tmp_path / "o.mp4", CachedAligner(), passthrough_crops)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.m4a", "corrupt.mp4"]


def test_truncated_input_keeps_decodable_frames(clip_path, tmp_path):
    fast = tmp_path / "fast.mp4"                     # moov atom first, so a cut file opens
    with av.open(str(clip_path)) as inp, av.open(str(fast), "w", options={"movflags": "faststart"}) as o:
        m = {s.index: o.add_stream_from_template(s) for s in inp.streams}
        for pkt in inp.demux():
            if pkt.dts is not None:
                pkt.stream = m[pkt.stream.index]
                o.mux(pkt)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.4)])
    with pytest.warns(UserWarning):
        s = V.deidentify_video(cut, tmp_path / "o.mp4", CachedAligner(), passthrough_crops,
                               V.VideoConfig(progress=False))
    assert s["truncated"] and 0 < s["frames"] < 75
    assert _stream_facts(tmp_path / "o.mp4")["frames"] == s["frames"]


def test_zero_face_clip_is_copied_with_warning(tmp_path):
    rng = np.random.default_rng(1)
    frames = [np.full((120, 160, 3), 90 + i, np.uint8) + rng.integers(0, 5, (120, 160, 3), dtype=np.uint8)
              for i in range(8)]
    src = _write_clip(tmp_path / "noface.mp4", frames)
    with pytest.warns(UserWarning, match="no face"):
        s = V.deidentify_video(src, tmp_path / "o.mp4", CachedAligner(), constant_net,
                               V.VideoConfig(progress=False))
    assert s["copied_without_faces"] and s["frames_with_faces"] == 0
    assert _stream_facts(tmp_path / "o.mp4")["frames"] == 8


def test_failure_midway_writes_nothing(clip_path, tmp_path):
    calls = []

    def failing(crops):
        calls.append(1)
        if len(calls) > 2:
            raise DeidError("boom")
        return passthrough_crops(crops)
    with pytest.raises(DeidError, match="boom"):
        V.deidentify_video(clip_path, tmp_path / "o.mp4", CachedAligner(), failing,
                           V.VideoConfig(progress=False))
    assert list(tmp_path.iterdir()) == []


def test_oversized_frames_refused(tmp_path):
    big = _write_clip(tmp_path / "big.mp4", [np.zeros((2400, 4608, 3), np.uint8)], fps=1)
    with pytest.raises(DeidError, match="exceed"):
        V.deidentify_video(big, tmp_path / "o.mp4", CachedAligner(), passthrough_crops)


def test_target_image_checks(portrait_paths, sample_dir, tmp_path):
    al = CachedAligner()
    assert pipeline.check_target_image(portrait_paths[0], al).ndim == 3
    with pytest.raises(DeidError, match="2 faces|faces"):
        pipeline.check_target_image(sample_dir / "inflight" / "Andrew_Morgan__Nick_Hague_inflight.jpg", al)
    from PIL import Image
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    with pytest.raises(DeidError, match="no face.*blank.png"):
        pipeline.check_target_image(blank, al)
    with pytest.raises(DeidError, match="not found"):
        pipeline.check_target_image(tmp_path / "nope.jpg", al)


def test_tiny_faces_fail_closed(clip_frames, clip_faces):
    """A face too small to align is pixelated (the obscuring fallback), never passed through."""
    i = 20
    proc = V.FrameProcessor(CachedAligner(), constant_net,
                            V.VideoConfig(fail_closed=True, min_face=10_000))
    out, info = proc(clip_frames[i], 0.0)
    assert info["small_faces"] == 1 and info["obscured"] and info["fallback_faces"] == 1
    hull = video_metrics.hull_mask([f.landmarks for f in clip_faces[i]], clip_frames[i].shape)
    assert np.abs(out.astype(int) - clip_frames[i].astype(int))[hull].mean() > 5


# ----------------------------------------------------------------------------------------
# CLI and live.

def test_cli_video_and_errors(clip_path, tmp_path, capsys, monkeypatch):
    from deid_core import paths
    from deid_core.cli import main
    out = tmp_path / "o.mp4"
    assert main(["video", str(clip_path), str(out), "--passthrough", "--max-frames", "8",
                 "--detect-every", "4"]) == 0
    assert _stream_facts(out)["frames"] == 8 and V.summary_path(out).is_file()
    assert main(["video", str(clip_path), str(out), "--passthrough"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    with monkeypatch.context() as m:   # no --checkpoint and no starter checkpoint: a clear error
        m.setattr(paths, "CHECKPOINT_DIR", tmp_path / "no_checkpoints")
        assert main(["video", str(clip_path), str(tmp_path / "x.mp4")]) == 1
        assert "--checkpoint" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
    assert main(["live", "--source", str(clip_path), "--show", "--passthrough"]) == 1
    live = tmp_path / "live.mp4"
    assert main(["live", "--source", str(clip_path), "--realtime", "--out", str(live),
                 "--passthrough", "--max-frames", "10"]) == 0
    assert 1 <= _stream_facts(live)["frames"] <= 10 and V.summary_path(live).is_file()
    assert "--show" in capsys.readouterr().err


def test_live_realtime_drops_frames_when_slow(clip_path, tmp_path):
    import time

    def slow(crops):
        time.sleep(0.15)
        return passthrough_crops(crops)
    out = tmp_path / "live.mp4"
    s = V.run_live(str(clip_path), CachedAligner(), slow,
                   V.VideoConfig(fail_closed=True, detect_every=3, progress=False),
                   out=out, realtime=True)
    assert s["captured"] == 75 and s["dropped"] > 0
    assert s["frames"] + s["dropped"] == s["captured"]
    assert _stream_facts(out)["frames"] == s["frames"]
    with pytest.raises(DeidError, match="exists"):
        V.run_live(str(clip_path), CachedAligner(), slow, out=out)


# ----------------------------------------------------------------------------------------
# Shared data (skipped without ../shared/data).

@pytest.mark.shared_data
def test_hamilton_clip_frames_fps_audio_hulls(shared_data, tmp_path):
    """First 60 frames of hamilton_clip (29.97 fps, video starts 0.85 s after the audio)."""
    src = shared_data / "videos" / "hamilton_clip.mp4"
    n = 60
    al = CachedAligner(upsample=1)                     # faces are ~55 px here
    frames = V.read_frames(src, n)
    proc = V.FrameProcessor(al, constant_net, V.VideoConfig(detect_every=3, fail_closed=False))
    n_face = 0
    for i, f in enumerate(frames):
        out, info = proc(f, i / 29.97)
        changed = (out != f).any(axis=-1)
        if info["n_faces"] == 0:
            assert not changed.any()                  # no-face frames unchanged
        elif info["fallback_faces"]:
            assert changed.any()                      # obscured (unreliable landmarks)
        else:
            n_face += 1
            hull = video_metrics.hull_mask([x.landmarks for x in info["faces"]], f.shape)
            assert changed.any() and not (changed & ~hull).any()   # only inside hulls
    assert n_face >= 20
    out = tmp_path / "h.mp4"
    s = V.deidentify_video(src, out, al, passthrough_crops,
                           V.VideoConfig(max_frames=n, detect_every=3, progress=False))
    a, b = V.probe_video(src), _stream_facts(out)
    assert b["frames"] == s["frames"] == n and b["size"] == (a.width, a.height)
    assert b["fps"] == a.fps                                  # 2997/100 kept exactly
    with av.open(str(src)) as c:
        v = c.streams.video[0]
        t0 = float(v.start_time * v.time_base)
    # audio kept on the same timeline, cut at the end of the last processed frame (±1 frame)
    assert b["audio"] == "aac" and abs(b["audio_duration"] - (t0 + n / float(a.fps))) <= 1 / float(a.fps)


@pytest.mark.shared_data
@pytest.mark.slow
def test_hamilton_full_clip_audio_duration(shared_data, tmp_path):
    """Whole clip: same frame count and the audio stream's full duration (±1 frame)."""
    src = shared_data / "videos" / "hamilton_clip.mp4"
    out = tmp_path / "h.mp4"
    s = V.deidentify_video(src, out, CachedAligner(upsample=1), passthrough_crops,
                           V.VideoConfig(detect_every=10, progress=False))
    a, b = _stream_facts(src), _stream_facts(out)
    assert b["frames"] == a["frames"] == 275 and b["fps"] == a["fps"] and b["size"] == a["size"]
    assert s["audio"]["mode"] == "copy" and not s["copied_without_faces"] and s["frames_with_faces"] > 0
    assert abs(b["audio_duration"] - a["audio_duration"]) <= 1 / float(a["fps"])


@pytest.mark.shared_data
@pytest.mark.slow
def test_multi_face_clip_keeps_size_and_audio(shared_data, tmp_path):
    src = shared_data / "videos" / "street_multi_face_1080p.mp4"
    out = tmp_path / "m.mp4"
    frames = V.read_frames(src, 5)
    proc = V.FrameProcessor(CachedAligner(upsample=0), constant_net,
                            V.VideoConfig(detect_every=4, fail_closed=False))
    for i, f in enumerate(frames):                    # several faces: changes only in hulls
        res, info = proc(f, i / 25)                   # (or in the box of an obscured face)
        changed = (res != f).any(axis=-1)
        hull = video_metrics.hull_mask([x.landmarks for x in info["faces"] if x.reliable], f.shape)
        for x in info["faces"]:
            if not x.reliable:
                b = np.r_[np.minimum(video_tracking._expand(x.box, 1.6)[:2], x.landmarks.min(0)),
                          np.maximum(video_tracking._expand(x.box, 1.6)[2:], x.landmarks.max(0))]
                x0, y0 = np.floor(np.maximum(b[:2], 0)).astype(int)
                hull[y0:int(np.ceil(b[3])), x0:int(np.ceil(b[2]))] = True
        assert not (changed & ~hull).any() and (info["n_faces"] == 0 or changed.any())
    s = V.deidentify_video(src, out, CachedAligner(upsample=0), constant_net,
                           V.VideoConfig(max_frames=12, detect_every=4, progress=False))
    a, b = V.probe_video(src), _stream_facts(out)
    assert b["frames"] == 12 and b["size"] == (1920, 1080) and b["fps"] == a.fps
    assert b["audio"] == "aac"
    assert s["tracks"] >= 1


def test_odd_size_and_4k_frames(portraits, tmp_path):
    """Odd sides keep their size (4:4:4); a 4K (3840x2160) clip goes through unchanged in size."""
    import cv2
    odd = [np.ascontiguousarray(cv2.resize(portraits[0], (161, 121))) for _ in range(3)]
    src = tmp_path / "odd.mp4"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 161, 121, "yuv444p"
        for f in odd:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    with pytest.warns(UserWarning):
        V.deidentify_video(src, tmp_path / "odd_out.mp4", CachedAligner(), passthrough_crops,
                           V.VideoConfig(progress=False, fail_closed=True))
    assert _stream_facts(tmp_path / "odd_out.mp4")["size"] == (161, 121)
    big = np.zeros((2160, 3840, 3), np.uint8)
    face = cv2.resize(portraits[1], (900, 1300))
    big[400:1700, 1500:2400] = face
    src4k = _write_clip(tmp_path / "uhd.mp4", [big, big])
    s = V.deidentify_video(src4k, tmp_path / "uhd_out.mp4", CachedAligner(detect_scale=0.25),
                           constant_net, V.VideoConfig(progress=False))
    f = _stream_facts(tmp_path / "uhd_out.mp4")
    assert f["size"] == (3840, 2160) and f["frames"] == 2 and s["frames_with_faces"] == 2


def _write_av(path: Path, vcodec: str, n: int, fps: int, acodec: str, rate: int, layout: str,
              audio_frames: list) -> Path:
    """A synthetic 160×120 A/V file: n gray frames and the given audio frames."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        as_ = out.add_stream(acodec, rate=rate, layout=layout)
        for af in audio_frames:
            for pkt in as_.encode(af):
                out.mux(pkt)
        for i in range(n):
            f = np.full((120, 160, 3), 8 * i % 255, np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in list(vs.encode()) + list(as_.encode()):
            out.mux(pkt)
    return path


def test_pcm_audio_is_reencoded_to_aac(tmp_path):
    """Audio mp4 cannot hold (PCM from .mov/.avi) is re-encoded to AAC, same duration."""
    n, fps, rate = 25, 25, 16000
    src = tmp_path / "pcm.mov"
    t = np.arange(rate) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None]
    af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    af.sample_rate, af.pts = rate, 0
    _write_av(src, "libx264", n, fps, "pcm_s16le", rate, "mono", [af])
    with pytest.warns(UserWarning, match="no face"):
        s = V.deidentify_video(src, tmp_path / "o.mp4", CachedAligner(), passthrough_crops,
                               V.VideoConfig(progress=False))
    f = _stream_facts(tmp_path / "o.mp4")
    assert s["audio"]["mode"] == "aac" and f["audio"] == "aac" and f["frames"] == n
    assert abs(f["audio_duration"] - 1.0) <= 1 / fps + 1024 / rate


# ----------------------------------------------------------------------------------------
# With a (untrained) generator checkpoint through pipeline.Deidentifier.

@pytest.fixture(scope="module")
def untrained_ckpt(tmp_path_factory) -> Path:
    import torch
    from deid_core.model import Generator, ModelConfig
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128")
    path = tmp_path_factory.mktemp("ck") / "g.pt"
    torch.save({"config": {"model": cfg.to_dict()}, "generator": Generator(cfg).state_dict(),
                "step": 0, "lam_state": {"lam": 2e-6, "conditioned": False}}, path)
    return path


def test_checkpoint_pipeline_targets_per_track(untrained_ckpt, clip_frames, portrait_paths,
                                               sample_dir, tmp_path, capsys):
    from deid_core.cli import main
    aligner, net = pipeline.build_pipeline(untrained_ckpt)
    assert isinstance(net, pipeline.DeidentifierCropFns) and net.target is None
    proc = V.FrameProcessor(CachedAligner(), net, V.VideoConfig())
    for i in range(48, 52):                          # two faces: two tracks, two targets
        out, info = proc(clip_frames[i], i / 25)
    trs = [t for t in proc.tracks if not t.missed]
    assert len(trs) == 2 and not np.allclose(trs[0].target, trs[1].target)
    hull = video_metrics.hull_mask([f.landmarks for f in info["faces"]], out.shape)
    changed = (out != clip_frames[51]).any(-1)
    assert changed.any() and not (changed & ~hull).any()
    # CLI with a target photo; a target with two faces is refused, naming the file
    clip = sample_dir / "clip" / "nasa_clip.mp4"
    o = tmp_path / "o.mp4"
    assert main(["video", str(clip), str(o), "--checkpoint", str(untrained_ckpt),
                 "--target", str(portrait_paths[0]), "--max-frames", "8"]) == 0
    assert _stream_facts(o)["frames"] == 8
    two = sample_dir / "inflight" / "Andrew_Morgan__Nick_Hague_inflight.jpg"
    assert main(["video", str(clip), str(tmp_path / "p.mp4"), "--checkpoint", str(untrained_ckpt),
                 "--target", str(two)]) == 1
    assert two.name in capsys.readouterr().err and not (tmp_path / "p.mp4").exists()


@pytest.mark.parametrize("suffix,vcodec,acodec,mode", [
    (".webm", "libvpx-vp9", "libopus", "copy"),
    (".mkv", "libx264", "libmp3lame", "copy"),
    (".avi", "mpeg4", "pcm_s16le", "aac"),
])
def test_common_containers(tmp_path, suffix, vcodec, acodec, mode):
    """webm/mkv/avi in → H.264 mp4 out, same frame count and fps, audio copied or AAC."""
    n, fps, rate = 12, 25, 48000
    src = tmp_path / f"in{suffix}"
    t = np.arange(int(rate * n / fps)) / rate
    wave = (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    frames = []
    for k in range(0, len(t), 960):   # float planar in; PyAV converts to the codec's format
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.stack([wave[k:k + 960]] * 2)),
                                        format="fltp", layout="stereo")
        af.sample_rate, af.pts = rate, k
        frames.append(af)
    _write_av(src, vcodec, n, fps, acodec, rate, "stereo", frames)
    with pytest.warns(UserWarning, match="no face"):
        s = V.deidentify_video(src, tmp_path / "o.mp4", CachedAligner(), passthrough_crops,
                               V.VideoConfig(progress=False))
    f = _stream_facts(tmp_path / "o.mp4")
    assert f["codec"] == "h264" and f["frames"] == n and f["fps"] == fps
    assert s["audio"]["mode"] == mode and f["audio"] in ("aac", "opus", "mp3")


def test_frame_reader_stop_ends_its_thread(sample_dir):
    # a stopped reader's thread has left FFmpeg before the caller goes on (or exits)
    reader = video_codec.FrameReader(sample_dir / "clip" / "nasa_clip.mp4", queue_size=2)
    reader.start()
    index, _, _, frame = next(iter(reader))
    assert index == 0 and frame.ndim == 3
    reader.stop()
    assert not reader.is_alive()

"""Video decode/encode with PyAV (the I/O around the per-frame pipeline, beyond the paper).

PyAV decode in a reader thread and H.264 encode in a writer thread, both behind bounded
queues; same resolution, same frame count, and the input's own frame timestamps (so the same
frame rate, also for 29.97 fps or VFR input); the audio stream is **remuxed packet by packet**
(no re-encode) when mp4 accepts its codec (:data:`MP4_AUDIO_COPY`), otherwise re-encoded to
AAC. Phone videos (pixels stored sideways plus a display-rotation matrix) are decoded upright
(:func:`upright`) and written upright without a rotation matrix, so the output displays as the
input does (its stored width and height are the input's display ones).
"""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from deid_core.errors import DeidError


#: audio codecs the mp4 muxer takes as they are (remuxed, bit-exact); others → AAC.
MP4_AUDIO_COPY = ("aac", "mp3", "ac3", "eac3", "alac", "opus", "flac")


# ----------------------------------------------------------------------------------------
# Decoding, encoding, audio.
@dataclass
class VideoInfo:
    """What :func:`probe_video` finds in a file."""
    path: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int               # from the container (0 when unknown)
    duration: float           # seconds (video stream or container)
    codec: str
    audio_codec: str | None
    audio_duration: float | None
    rotation: int = 0         # display rotation (degrees counter-clockwise); width/height upright

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["fps"], d["time_base"] = float(self.fps), str(self.time_base)
        return d


def _open_input(path: Path):
    import av  # PyAV: not on the GPU image, where tests/test_gpu.py imports deid_core.video
    if not path.exists():
        raise DeidError(f"input video not found: {path}")
    if not path.is_file():
        raise DeidError(f"input video is not a file: {path}")
    if not os.access(path, os.R_OK):
        raise DeidError(f"input video is not readable: {path}")
    try:
        return av.open(str(path), "r")
    except Exception as exc:  # av.error.InvalidDataError, OSError...
        raise DeidError(f"cannot open video {path}: {exc} (corrupt, truncated or not a video?)") from exc


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Stream facts of a video file; DeidError when missing, unreadable or without video."""
    path = Path(path)
    with _open_input(path) as c:
        if not c.streams.video:
            raise DeidError(f"no video stream in {path}")
        vs = c.streams.video[0]
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
        tb = vs.time_base or Fraction(1, 90000)
        dur = float(vs.duration * tb) if vs.duration else (c.duration or 0) / 1e6
        a = c.streams.audio[0] if c.streams.audio else None
        adur = (float(a.duration * a.time_base) if a is not None and a.duration else
                ((c.duration or 0) / 1e6 if a is not None else None))
        w, h = vs.codec_context.width, vs.codec_context.height
        if w <= 0 or h <= 0:
            raise DeidError(f"video stream of {path} has no frame size (corrupt?)")
        rot = _display_rotation(c)
        if rot in (90, 270):
            w, h = h, w
        return VideoInfo(str(path), w, h, Fraction(fps), Fraction(tb), int(vs.frames or 0), dur,
                         _codec_id(vs), _codec_id(a) if a is not None else None, adur, rot)


def _display_rotation(container: Any) -> int:
    """The display rotation of the first video frame (phone videos store pixels sideways and
    a display matrix), in degrees counter-clockwise, one of 0, 90, 180, 270."""
    try:
        frame = next(container.decode(container.streams.video[0]))
    except Exception:
        return 0
    finally:
        container.seek(0)
    return _rotation(frame)


def _rotation(frame: Any) -> int:
    return int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4 * 90


def upright(frame: Any) -> np.ndarray:
    """A decoded PyAV frame as RGB uint8, turned as it is meant to be displayed."""
    img = frame.to_ndarray(format="rgb24")
    k = _rotation(frame) // 90
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


_END = object()


def _codec_id(stream: Any) -> str:
    """The stream's codec (AVCodecID name, e.g. ``mp3`` — not the decoder ``mp3float``)."""
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


class FrameReader(threading.Thread):
    """Decode video frames (RGB uint8) into a bounded queue: ``(index, pts, time_s, frame)``.

    Decoding errors (corrupt or truncated data) stop the reader; what was decoded so far is
    delivered and the error is kept in :attr:`error` for the summary.
    """

    def __init__(self, path: Path, queue_size: int = 8, max_frames: int | None = None):
        super().__init__(daemon=True, name="deid-reader")
        self.path, self.max_frames = path, max_frames
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.error: str | None = None
        self.decoded = 0
        self.seconds = 0.0
        self._halt = threading.Event()   # not _stop: threading.Thread has a _stop()

    def stop(self, timeout: float = 10.0) -> None:
        """End decoding and wait for the thread (at most ``timeout`` s): a daemon thread still
        inside FFmpeg while the interpreter shuts down (after SIGTERM) can crash it."""
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def _put(self, item: Any) -> bool:
        while not self._halt.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            with _open_input(self.path) as c:
                vs = c.streams.video[0]
                vs.thread_type = "AUTO"
                tb = vs.time_base or Fraction(1, 90000)
                fps = vs.average_rate or vs.guessed_rate or Fraction(25)
                it = c.decode(vs)
                while not self._halt.is_set():
                    t0 = time.thread_time()
                    try:
                        f = next(it)
                    except StopIteration:
                        break
                    except Exception as exc:  # corrupt / truncated packet stream
                        self.error = f"decoding stopped after {self.decoded} frames: {exc}"
                        break
                    img = upright(f)                 # display rotation applied
                    self.seconds += time.thread_time() - t0
                    pts = f.pts if f.pts is not None else None
                    ts = float(pts * tb) if pts is not None else self.decoded / float(fps)
                    if not self._put((self.decoded, pts, ts, img)):
                        return
                    self.decoded += 1
                    if self.max_frames and self.decoded >= self.max_frames:
                        break
        except DeidError as exc:
            self.error = str(exc)
        except Exception as exc:  # pragma: no cover - unexpected
            self.error = f"decoding failed: {exc!r}"
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[tuple[int, Any, float, np.ndarray]]:
        while True:
            item = self.q.get()
            if item is _END:
                return
            yield item


class Mp4Writer:
    """H.264 (libx264, yuv420p; yuv444p for odd frame sides) mp4 writer keeping the given
    timestamps, plus the audio of
    ``audio_from`` remuxed (or re-encoded to AAC), interleaved by time. Runs in a thread.
    """

    def __init__(self, path: Path, width: int, height: int, fps: Fraction, time_base: Fraction,
                 audio_from: Path | None = None, crf: int = 18, preset: str = "veryfast",
                 queue_size: int = 8, audio_end: float | None = None):
        import av  # PyAV: not on the GPU image, where tests/test_gpu.py imports deid_core.video
        self.path = path
        self.container = av.open(str(path), "w", format="mp4")
        self.vs = self.container.add_stream("libx264", rate=fps)
        # yuv420p needs even sides; odd-sized input keeps its size with 4:4:4 chroma instead
        self.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.vs.width, self.vs.height, self.vs.pix_fmt = width, height, self.pix_fmt
        self.vs.codec_context.time_base = time_base
        self.vs.time_base = time_base
        self.vs.options = {"crf": str(crf), "preset": preset}
        self.time_base, self.fps = time_base, fps
        self.audio_mode: str | None = None
        self.audio_codec: str | None = None
        self._ain = None
        self._apackets: Iterator | None = None
        self._pending_audio: Any = None
        self.audio_end: float | None = None       # cut audio here (set by close())
        self._resampled = None
        if audio_from is not None:
            self._setup_audio(audio_from)
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.error: BaseException | None = None
        self.frames = 0
        self.seconds = 0.0
        self._last_pts: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="deid-writer")
        self._thread.start()

    # audio -------------------------------------------------------------------------------
    def _setup_audio(self, src: Path) -> None:
        import av  # PyAV: not on the GPU image, where tests/test_gpu.py imports deid_core.video
        try:
            self._ain = av.open(str(src), "r")
        except Exception:
            return
        if not self._ain.streams.audio:
            self._ain.close()
            self._ain = None
            return
        ain = self._ain.streams.audio[0]
        name = _codec_id(ain)
        self.audio_codec = name
        if name in MP4_AUDIO_COPY:
            self.as_ = self.container.add_stream_from_template(ain)
            self.audio_mode = "copy"
        else:
            rate = ain.codec_context.sample_rate or 48000
            # AAC needs a named layout ("2 channels" from .avi is not one); >2 ch -> 5.1/stereo
            nch = ain.codec_context.channels or 2
            layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(nch, "stereo")
            self.as_ = self.container.add_stream("aac", rate=rate, layout=layout)
            self.audio_mode = "aac"
        self._astream = ain
        self._apackets = self._ain.demux(ain)

    def _audio_until(self, t: float | None) -> None:
        """Mux audio packets with start time <= t seconds (all when t is None)."""
        if self._apackets is None:
            return
        while True:
            pkt = self._pending_audio
            if pkt is None:
                try:
                    pkt = next(self._apackets)
                except (StopIteration, Exception):
                    self._apackets = None
                    break
            if pkt.dts is None and pkt.pts is None:       # flush packet
                continue
            ts = float((pkt.pts if pkt.pts is not None else pkt.dts) * pkt.time_base)
            if self.audio_end is not None and ts >= self.audio_end:
                continue                                  # past the last video frame (max_frames)
            if t is not None and ts > t:
                self._pending_audio = pkt
                return
            self._pending_audio = None
            if self.audio_mode == "copy":
                pkt.stream = self.as_
                self.container.mux(pkt)
            else:
                try:
                    frames = pkt.decode()
                except Exception:
                    continue
                for fr in frames:
                    fr.pts = None
                    for op in self.as_.encode(fr):
                        self.container.mux(op)
        if self.audio_mode == "aac":
            for op in self.as_.encode(None):
                self.container.mux(op)

    # video -------------------------------------------------------------------------------
    def write(self, frame: np.ndarray, pts: int | None) -> None:
        """Queue one RGB frame with its presentation time (in ``time_base`` units)."""
        while True:
            if self.error is not None:
                raise DeidError(f"writing {self.path} failed: {self.error}")
            try:
                self.q.put((frame, pts), timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        import av  # PyAV: not on the GPU image, where tests/test_gpu.py imports deid_core.video
        try:
            while True:
                item = self.q.get()
                if item is _END:
                    break
                frame, pts = item
                t0 = time.thread_time()
                if pts is None:
                    pts = int(round(self.frames / self.fps / self.time_base))
                if self._last_pts is not None and pts <= self._last_pts:
                    pts = self._last_pts + 1                # keep timestamps strictly increasing
                self._last_pts = pts
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vf.pts, vf.time_base = pts, self.time_base
                for pkt in self.vs.encode(vf):
                    self._audio_until(float(pkt.pts * self.time_base) if pkt.pts is not None else None)
                    self.container.mux(pkt)
                self.frames += 1
                self.seconds += time.thread_time() - t0
            t0 = time.thread_time()
            for pkt in self.vs.encode(None):
                self.container.mux(pkt)
            self._audio_until(None)
            self.seconds += time.thread_time() - t0
        except BaseException as exc:  # reported to the producer
            self.error = exc
            while True:                                      # unblock the producer
                try:
                    if self.q.get_nowait() is _END:
                        break
                except queue.Empty:
                    break

    def close(self, audio_end: float | None = None) -> None:
        """Flush and close; ``audio_end`` (s) cuts the audio (when only part of the video was
        processed). Raises DeidError if encoding failed."""
        self.audio_end = audio_end
        if self._thread.is_alive():
            while self.error is None:
                try:
                    self.q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        try:
            self.container.close()
        finally:
            if self._ain is not None:
                self._ain.close()
        if self.error is not None:
            raise DeidError(f"writing {self.path} failed: {self.error}")

    def abort(self) -> None:
        try:
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass
        try:
            self.q.put_nowait(_END)
        except queue.Full:
            pass
        self._thread.join(timeout=10)
        for c in (self.container, self._ain):
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass


def remux_copy(src: Path, dst: Path, expect_frames: int | None = None) -> bool:
    """Copy the streams of ``src`` into mp4 ``dst`` without re-encoding (video must be H.264
    and audio mp4-compatible). Returns False when that is not possible, or when the copy
    does not hold ``expect_frames`` video frames (checked by decoding it)."""
    import av  # PyAV: not on the GPU image, where tests/test_gpu.py imports deid_core.video
    with av.open(str(src)) as inp:
        if not inp.streams.video or _codec_id(inp.streams.video[0]) != "h264":
            return False
        streams = [inp.streams.video[0]]
        if inp.streams.audio:
            if _codec_id(inp.streams.audio[0]) not in MP4_AUDIO_COPY:
                return False
            streams.append(inp.streams.audio[0])
        with av.open(str(dst), "w", format="mp4") as out:
            omap = {s.index: out.add_stream_from_template(s) for s in streams}
            for pkt in inp.demux(*streams):
                if pkt.size == 0:          # demuxer flush packets
                    continue
                pkt.stream = omap[pkt.stream.index]
                out.mux(pkt)
    if expect_frames is not None:
        with av.open(str(dst)) as chk:
            if sum(1 for _ in chk.decode(chk.streams.video[0])) != expect_frames:
                return False
    return True


# ----------------------------------------------------------------------------------------
# Flicker metric.
def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> list[np.ndarray]:
    """All (or the first ``max_frames``) frames of a video as RGB uint8 arrays."""
    r = FrameReader(Path(path), queue_size=4, max_frames=max_frames)
    r.start()
    frames = [f for _, _, _, f in r]
    if r.error and not frames:
        raise DeidError(r.error)
    return frames

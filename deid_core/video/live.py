"""``deid live``: OpenCV capture (camera index, stream URL or a file with ``realtime=True``
pacing it at its own fps), a one-slot queue that drops the oldest frame when the pipeline is
slower than the source, an fps overlay, optional side-by-side preview window and optional mp4
output (the paper's live setting, §1, §4).
"""
from __future__ import annotations

import dataclasses
import gc
import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face.aligner import CropFn
from deid_core.video.codec import Mp4Writer, _END
from deid_core.video.config import VideoConfig
from deid_core.video.files import write_summary_json, summarize, summary_path
from deid_core.video.tracking import FrameProcessor, CropFnProvider


# ----------------------------------------------------------------------------------------
# Live.
def gui_available() -> tuple[bool, str]:
    """Whether ``cv2.imshow`` can open a window here (GUI build and a display)."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display ($DISPLAY is not set)"
    info = cv2.getBuildInformation()
    gui = [ln for ln in info.splitlines() if ln.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
        return False, "this OpenCV build has no GUI (opencv-python-headless)"
    return True, ""


class LiveSource(threading.Thread):
    """Capture thread with a one-slot (``maxsize``) queue that drops the oldest frame when
    the consumer is slower than the source. ``realtime`` paces a file at its own fps."""

    def __init__(self, source: int | str, realtime: bool = False, maxsize: int = 1,
                 max_frames: int | None = None):
        super().__init__(daemon=True, name="deid-capture")
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            raise DeidError(f"cannot open video source {source!r} (camera index, file or URL)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1 <= fps <= 240 else 30.0
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.realtime, self.max_frames = realtime, max_frames
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.captured = self.dropped = 0
        self._halt = threading.Event()   # not _stop: threading.Thread has a _stop()

    def stop(self, timeout: float = 10.0) -> None:
        """End capture and wait for the thread (at most ``timeout`` s), so that the camera is
        released before the interpreter exits."""
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            while not self._halt.is_set():
                ok, bgr = self.cap.read()
                if not ok:
                    break
                if self.realtime:
                    due = t0 + self.captured / self.fps
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                item = (self.captured, time.perf_counter() - t0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                self.captured += 1
                while True:
                    try:
                        self.q.put_nowait(item)
                        break
                    except queue.Full:
                        try:
                            self.q.get_nowait()               # drop the oldest frame
                            self.dropped += 1
                        except queue.Empty:
                            pass
                if self.max_frames and self.captured >= self.max_frames:
                    break
        finally:
            self.cap.release()
            while True:
                try:
                    self.q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    try:
                        self.q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass


def draw_fps(frame: np.ndarray, fps: float, text: str = "") -> np.ndarray:
    """Overlay ``"NN.N fps"`` in the top-left corner (in place; returns the frame)."""
    s = f"{fps:5.1f} fps {text}".rstrip()
    scale = max(0.5, frame.shape[0] / 720)
    cv2.putText(frame, s, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                int(4 * scale), cv2.LINE_AA)
    cv2.putText(frame, s, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(1.5 * scale)), cv2.LINE_AA)
    return frame


def run_live(source: int | str, aligner: Any, net: CropFn | CropFnProvider,
             config: VideoConfig | None = None, out: str | os.PathLike | None = None,
             show: bool = False, realtime: bool = False, overwrite: bool = False,
             overlay: bool = True, duration: float | None = None) -> dict:
    """Live de-identification from a camera/stream/file (``realtime`` paces a file).

    Frames that arrive while the pipeline is busy are dropped (a one-frame queue), never
    queued without bound. ``out`` writes the processed frames (fps overlay included) to an
    mp4 with their capture times (variable frame rate); ``show`` opens a side-by-side
    preview window (needs a GUI build of OpenCV and a display; 'q' or Esc quits). The models
    are warmed up and the heap is frozen (``gc.freeze``) before the capture clock starts.
    """
    cfg = config or VideoConfig(fail_closed=True)
    if show:
        ok, why = gui_available()
        if not ok:
            raise DeidError(f"--show needs a display and a GUI build of OpenCV: {why}. "
                            f"Run headless with --out FILE.mp4 instead "
                            f"(or install opencv-python instead of opencv-python-headless)")
    out_path: Path | None = None
    if out is not None:
        out_path = Path(out)
        if out_path.suffix.lower() != ".mp4":
            raise DeidError(f"output must be an .mp4 file, got {out_path}")
        if isinstance(source, str) and Path(source).exists() and out_path.resolve() == Path(source).resolve():
            raise DeidError(f"output {out_path} is the input: refusing to overwrite the input")
        if out_path.exists() and not overwrite:
            raise DeidError(f"output {out_path} exists: pass --overwrite to replace it")
        out_path.parent.mkdir(parents=True, exist_ok=True)
    src = LiveSource(source, realtime=realtime, max_frames=cfg.max_frames)
    proc = FrameProcessor(aligner, net, cfg)
    proc.warm_up((src.height, src.width))       # before the capture clock starts
    tmp = paths.atomic_write_path(out_path) if out_path else None
    writer = (Mp4Writer(tmp, src.width, src.height, Fraction(src.fps).limit_denominator(1001),
                        Fraction(1, 1000), crf=cfg.crf, preset=cfg.preset) if tmp else None)
    infos: list[dict] = []
    ema = None
    last = None
    latencies: list[float] = []
    interrupted = False
    caller_froze = gc.get_freeze_count() > 0    # then the caller owns the frozen heap
    try:
        gc.collect()                # the heap that exists now (models, libraries) is never
        gc.freeze()                 # walked mid-stream: no collector stall drops frames
        t_start = time.perf_counter()
        src.start()
        while True:
            try:
                item = src.q.get()
            except KeyboardInterrupt:           # Ctrl-C ends a live session normally
                interrupted = True
                break
            if item is _END:
                break
            idx, t_cap, rgb = item
            res, fi = proc(rgb, t_cap)
            fi.pop("faces", None)
            fi["source_index"] = idx
            infos.append(fi)
            now = time.perf_counter()
            latencies.append(now - t_start - t_cap)
            if last is not None:
                inst = 1.0 / max(now - last, 1e-6)
                ema = inst if ema is None else 0.9 * ema + 0.1 * inst
            last = now
            if overlay:
                draw_fps(res, ema or 0.0, f"faces {fi['n_faces']}")
            if writer is not None:
                writer.write(res, int(round(t_cap * 1000)))
            if show:
                view = cv2.cvtColor(np.hstack([rgb, res]), cv2.COLOR_RGB2BGR)
                cv2.imshow("deid live (input | de-identified)", view)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            if duration is not None and now - t_start >= duration:
                break
        src.stop()
        if writer is not None:
            writer.close()
            os.replace(tmp, out_path)
        wall = time.perf_counter() - t_start
        n_fb = sum(fi.get("fallback_faces", 0) for fi in infos)
        warns = ([f"{n_fb} face(s) were obscured (pixelated) instead of de-identified by the "
                  f"network: lost by the detector, too small, with unreliable landmarks, or "
                  f"left recognisable by the network"]
                 if n_fb else [])
        summary = summarize(infos, dict(proc.times), wall, {
            "source": str(source), "source_fps": src.fps, "captured": src.captured,
            "dropped": src.dropped, "realtime": realtime, "interrupted": interrupted, "output": str(out_path) if out_path else None,
            "latency_ms_mean": round(1000 * float(np.mean(latencies)), 1) if latencies else None,
            "first_source_index": infos[0]["source_index"] if infos else None,
            "max_gap": int(np.diff([fi["source_index"] for fi in infos]).max()) if len(infos) > 1 else 0,
            "config": dataclasses.asdict(cfg), "warnings": warns,
        })
        if out_path is not None:
            write_summary_json(summary_path(out_path), summary)
        return summary
    except BaseException:
        src.stop()
        if writer is not None:
            writer.abort()
        raise
    finally:
        if not caller_froze:
            gc.unfreeze()
        src.stop()
        if show:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
        if tmp is not None and tmp.exists():
            tmp.unlink()

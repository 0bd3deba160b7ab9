"""The scan pass of the two-pass file mode: detections, landmarks, tracks, replay, consent votes.

``deid video`` reads a file twice (a live stream cannot be): the scan records what the tracker
(:meth:`FrameProcessor.observe`) saw in every frame -- about 0.6 kB per face and frame, no
pixels -- extends every track backwards and forwards with :class:`~deid_core.video.replay.Replayer`
(a ring of ``replay_seconds`` of gray frames), and collects the consent list's votes per track;
the render pass (:mod:`deid_core.video.files`) then draws each frame from its record, so a face
is covered in the frames before its first detection and every track has its consent decision
before its first frame is drawn. Memory stays bounded: records, not frames. Progress is
resumable (:class:`ScanCheckpoint`).
"""
from __future__ import annotations

import hashlib
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import box_iou
from deid_core.video.codec import FrameReader
from deid_core.video.config import VideoConfig
from deid_core.video.replay import Replayer, gray
from deid_core.video.tracking import FrameObs, FrameProcessor, TrackView


@dataclass
class Scan:
    """Result of :func:`scan_video`: one record per frame and what replay added."""
    frames: list[FrameObs]
    targets: dict[int, Any] = field(default_factory=dict)         # track → its one target
    first_detected: dict[int, int] = field(default_factory=dict)  # track → frame
    replayed_backward: dict[int, int] = field(default_factory=dict)  # track → frames added
    replayed_forward: dict[int, int] = field(default_factory=dict)
    decode_error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    resumed_at: int | None = None                                 # frame a resumed scan went on from

    @property
    def tracks(self) -> list[int]:
        return sorted({v.track for f in self.frames for v in f.views})


def _covered(obs: FrameObs, box: np.ndarray, track: int, iou: float) -> bool:
    """Whether another track already covers ``box`` in this frame."""
    others = [np.asarray(v.box if v.state == "lost" else v.face.box, np.float64)
              for v in obs.views if v.track != track]
    return bool(others) and float(box_iou(np.asarray(box, np.float64)[None], np.stack(others)).max()) >= iou


class ScanCheckpoint:
    """Resumable scan progress: the records so far and the tracker's state, pickled atomically
    every ``every`` frames to a hidden file next to the output, keyed by the input file (path,
    size, mtime) and the settings. A rerun of the same command after an interruption resumes
    the scan there (the replay ring restarts empty: a track born in the first frames after the
    resume point is not replayed back across it); a finished run deletes the file."""

    def __init__(self, path: Path, key: str, every: int = 250):
        self.path, self.key, self.every = Path(path), key, int(every)

    @staticmethod
    def key_for(inp: Path, *settings: Any) -> str:
        st = inp.stat()
        h = hashlib.sha1(f"{inp.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        for x in settings:
            h.update(repr(x).encode())
        return h.hexdigest()

    def load(self) -> dict | None:
        """The saved state when it belongs to this input and settings, else None."""
        if not self.path.is_file():
            return None
        try:
            with open(self.path, "rb") as fh:
                state = pickle.load(fh)
        except Exception:              # a foreign or truncated file: start over
            return None
        return state if isinstance(state, dict) and state.get("key") == self.key else None

    def save(self, state: dict) -> None:
        with paths.atomic_write(self.path) as tmp, open(tmp, "wb") as fh:
            pickle.dump({"key": self.key, **state}, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def scan_video(inp: Path, proc: FrameProcessor, cfg: VideoConfig, fps: float,
               consent: Any = None, total: int | None = None,
               checkpoint: ScanCheckpoint | None = None) -> Scan:
    """Pass 1 over ``inp``: track every frame with ``proc.observe``, replay tracks over
    ``cfg.replay_seconds`` backwards and forwards (when ``cfg.replay``), vote consent;
    ``checkpoint`` makes the progress resumable."""
    horizon = max(int(round(cfg.replay_seconds * fps)), 1)
    replayer = Replayer(proc.aligner, horizon) if cfg.replay else None
    scan = Scan(frames=[])
    forward: dict[int, tuple[Any, Any, int]] = {}   # lost track → (face, velocity, frames)
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        scan, forward = saved["scan"], saved["forward"]
        proc.restore(saved["tracker"])
        if consent is not None:
            consent.restore_votes(saved["consent"])
        scan.resumed_at = len(scan.frames)
    reader = FrameReader(inp, cfg.queue_size, cfg.max_frames)
    t_replay = t_consent = 0.0
    pbar = None
    if cfg.progress:
        pbar = tqdm(total=total, unit="frame", desc=f"scan {inp.name}", dynamic_ncols=True,
                    initial=len(scan.frames))
    try:
        reader.start()
        for idx, _pts, ts, frame in reader:
            if idx < len(scan.frames):
                continue                                 # scanned before the interruption
            obs = proc.observe(frame, ts)
            scan.frames.append(obs)
            for v in obs.views:
                if v.target is not None:
                    scan.targets.setdefault(v.track, v.target)
                if v.state == "detected":
                    scan.first_detected.setdefault(v.track, obs.index)
            if consent is not None:
                t0 = time.perf_counter()
                for v in obs.views:
                    if v.state == "detected" and getattr(v.face, "reliable", True):
                        consent.observe(v.track, frame, v.face.landmarks)
                t_consent += time.perf_counter() - t0
            if replayer is not None:
                t0 = time.perf_counter()
                _replay(replayer, scan, obs, gray(frame), forward, cfg, horizon)
                t_replay += time.perf_counter() - t0
            if checkpoint is not None and len(scan.frames) % checkpoint.every == 0:
                checkpoint.save({"scan": scan, "forward": forward, "tracker": proc.state(),
                                 "consent": consent.votes() if consent is not None else None})
            if pbar is not None:
                pbar.update(1)
    finally:
        reader.stop()
        if pbar is not None:
            pbar.close()
    scan.decode_error = reader.error
    scan.seconds = {"scan_decode": reader.seconds, "replay": t_replay, "consent": t_consent}
    if not scan.frames:
        raise DeidError(f"no frame could be decoded from {inp}"
                        + (f": {reader.error}" if reader.error else ""))
    return scan


def _replay(replayer: Replayer, scan: Scan, obs: FrameObs, g: np.ndarray,
            forward: dict[int, tuple[Any, Any, int]], cfg: VideoConfig, horizon: int) -> None:
    """Backward replay of the tracks born in ``obs``; forward replay of its lost tracks."""
    replayer.push(obs.index, g, obs.cut)
    for v in obs.views:
        if v.track in obs.born:
            n = 0
            for idx, face in replayer.backward(v.face):
                earlier = scan.frames[idx]
                if _covered(earlier, face.box, v.track, cfg.iou_threshold):
                    break
                earlier.views.append(TrackView(v.track, face, None, "replayed"))
                n += 1
            if n:
                scan.replayed_backward[v.track] = n
    live = {v.track: v for v in obs.views if v.state != "lost"}
    for tr in list(forward):
        if tr in live:
            del forward[tr]                       # found again
    for k, v in enumerate(obs.views):
        if v.state != "lost":
            continue
        face, vel, n = forward.get(v.track, (v.face, None, 0))
        if n >= horizon:
            continue
        step = replayer.forward(face, vel)
        if step is None:
            forward[v.track] = (face, vel, horizon)    # left the frame: stop following
            continue
        moved, vel = step
        forward[v.track] = (moved, vel, n + 1)
        if moved.reliable:   # a fitted face replaces the pixelated region; a guess keeps it
            obs.views[k] = TrackView(v.track, moved, v.target, "replayed")
            scan.replayed_forward[v.track] = scan.replayed_forward.get(v.track, 0) + 1

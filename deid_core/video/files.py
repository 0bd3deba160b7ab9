"""``deid video IN OUT``: a video file through the pipeline (paper §3 a–h), written to a temp
file in the output's folder and renamed, with a JSON summary sidecar ``OUT.json``.

The paper works strictly per frame (§4); a file can be read twice, so by default a scan pass
(:mod:`~deid_core.video.scan`: tracks, replay, consent votes) precedes the render pass, and the
summary carries the per-track audit report (:mod:`~deid_core.video.report`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face import RotationPolicy
from deid_core.face.aligner import CropFn
from deid_core.video.codec import FrameReader, Mp4Writer, probe_video, remux_copy
from deid_core.video.config import MAX_FRAME_PIXELS, MAX_FRAME_SIDE, VideoConfig
from deid_core.video.report import contact_sheet as report_contact_sheet
from deid_core.video.report import crop_box, least_confident, track_report
from deid_core.video.scan import ScanCheckpoint, scan_video
from deid_core.video.tracking import FrameProcessor, CropFnProvider

#: tiles on the contact sheet (the least confidently covered frames)
SHEET_TILES = 18


# ----------------------------------------------------------------------------------------
# Files: argument checks and the whole run.
def check_paths(inp: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False
                ) -> tuple[Path, Path]:
    """Input must exist; output must differ from it, be .mp4 and not exist (unless overwrite)."""
    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise DeidError(f"input video not found: {inp}")
    if out.suffix.lower() != ".mp4":
        raise DeidError(f"output must be an .mp4 file (H.264), got {out}")
    same = out.resolve() == inp.resolve() or (out.exists() and os.path.samefile(out, inp))
    if same:
        raise DeidError(f"output {out} is the input video: refusing to overwrite the input")
    if out.exists() and not overwrite:
        raise DeidError(f"output {out} exists: pass --overwrite to replace it")
    if out.exists() and out.is_dir():
        raise DeidError(f"output {out} is a folder")
    side = summary_path(out)
    if side.exists() and not overwrite and side.resolve() != inp.resolve():
        raise DeidError(f"the summary file {side} exists: pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return inp, out


def _ranges(idx: Sequence[int]) -> list[list[int]]:
    """[1, 2, 3, 7] -> [[1, 3], [7, 7]] (compact frame lists in the summary)."""
    out: list[list[int]] = []
    for i in idx:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def summary_path(out: Path) -> Path:
    """The JSON summary sidecar of an output video: ``OUT.mp4`` -> ``OUT.json``."""
    return Path(out).with_suffix(".json")


def write_summary_json(path: Path, obj: dict) -> None:
    paths.write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def summarize(frame_infos: list[dict], times: dict[str, float], wall: float,
              extra: dict | None = None) -> dict:
    """The JSON summary: frames, faces per frame, no-face and fail-closed frames, stage times.

    ``fallback_frames`` / ``fallback_faces`` count the frames and face-frames handled by the
    obscuring fallback instead of the network (lost, too small, unreliable landmarks, or left
    recognisable by the network: ``recognisable_tracks``, the identity check)."""
    n = len(frame_infos)
    faces = [fi["n_faces"] for fi in frame_infos]
    no_face = [fi["index"] for fi in frame_infos if fi["n_faces"] == 0]
    closed = [fi["index"] for fi in frame_infos if fi["fail_closed"]]
    fallback = [fi["index"] for fi in frame_infos if fi.get("fallback_faces")]
    tracks = sorted({t for fi in frame_infos for t in fi["tracks"]})
    s = {
        "frames": n,
        "faces_per_frame": faces,
        "frames_with_faces": n - len(no_face),
        "frames_no_face": len(no_face),
        "frames_no_face_ranges": _ranges(no_face),
        "fail_closed_frames": len(closed),
        "fail_closed_ranges": _ranges(closed),
        "fallback_frames": len(fallback),
        "fallback_faces": int(sum(fi.get("fallback_faces", 0) for fi in frame_infos)),
        "fallback_ranges": _ranges(fallback),
        "detector_runs": sum(1 for fi in frame_infos if fi["detected"]),
        "tracks": len(tracks),
        "small_faces": int(sum(fi["small_faces"] for fi in frame_infos)),
        "recognisable_tracks": sorted({t for fi in frame_infos for t in fi.get("recognisable", [])}),
        "time_s": {k: round(v, 4) for k, v in times.items()},
        "ms_per_frame": {k: round(1000 * v / max(n, 1), 2) for k, v in times.items()},
        "wall_s": round(wall, 3),
        "fps": round(n / wall, 2) if wall > 0 else None,
    }
    if extra:
        s.update(extra)
    return s


def deidentify_video(inp: str | os.PathLike, out: str | os.PathLike, aligner: Any,
                     net: CropFn | CropFnProvider, config: VideoConfig | None = None,
                     overwrite: bool = False, consent: Any = None,
                     detect: Callable[[np.ndarray], list] | None = None,
                     contact_sheet: bool = False) -> dict:
    """De-identify a video file: H.264 mp4 out with the input's resolution, frame timestamps
    and (remuxed) audio; ``OUT.json`` summary with the per-track audit report.

    Two passes by default (``config.two_pass``): :func:`~deid_core.video.scan.scan_video`
    records and replays every track and collects the ``consent`` list's votes, then each frame
    is drawn from its record; one pass = the live behaviour (:class:`FrameProcessor` per frame).
    ``detect`` replaces the aligner's detector (e.g. with rotated views). ``contact_sheet``:
    also ``OUT.sheet.png``, output crops of the least confidently covered frames.

    Nothing is written at ``out`` unless the run completes (temp file + ``os.replace``); the
    input is only read. Zero faces in the whole clip → the output is a stream copy of the
    input (or its re-encode) and the summary carries a warning.
    """
    cfg = config or VideoConfig()
    inp, out = check_paths(inp, out, overwrite)
    if contact_sheet and sheet_path(out).exists() and not overwrite:
        raise DeidError(f"the contact sheet {sheet_path(out)} exists: pass --overwrite to replace it")
    info = probe_video(inp)
    if max(info.width, info.height) > MAX_FRAME_SIDE or info.width * info.height > MAX_FRAME_PIXELS:
        raise DeidError(f"{inp}: frames of {info.width}x{info.height} exceed the supported "
                        f"maximum ({MAX_FRAME_SIDE} px side, 4K); downscale first, e.g. "
                        f"ffmpeg -i IN -vf scale=-2:2160 OUT")
    warns: list[str] = []
    if info.width % 2 or info.height % 2:
        warns.append(f"odd frame size {info.width}x{info.height}: encoded as H.264 4:4:4 "
                     f"(yuv444p) to keep the size; some players only play yuv420p")
    if info.width * info.height > 1920 * 1080:
        warns.append(f"large frames ({info.width}x{info.height}): consider detect_scale < 1 "
                     f"(--detect-scale) and --detect-every > 1 for speed")
    total = min(info.frames, cfg.max_frames) if cfg.max_frames and info.frames else (
        info.frames or cfg.max_frames or None)
    t_start = time.perf_counter()
    policy = RotationPolicy(every=cfg.rotate_every) if cfg.rotated_views and detect is None else None
    if policy is not None:
        detect = lambda frame: policy.faces(aligner, frame, aligner.detect(frame))  # noqa: E731
    scan, decisions, wanted = None, {}, []
    proc = FrameProcessor(aligner, net, cfg, detect=detect)
    checkpoint = None
    if cfg.two_pass:
        model = getattr(getattr(net, "deid", None), "source", type(net).__name__)
        settings = ({k: v for k, v in dataclasses.asdict(cfg).items() if k != "progress"},
                    getattr(aligner, "config", None), model, getattr(net, "lam", None),
                    None if consent is None else consent.fingerprint())
        checkpoint = ScanCheckpoint(scan_checkpoint_path(out), ScanCheckpoint.key_for(inp, *settings))
        scan = scan_video(inp, proc, cfg, float(info.fps), consent, total, checkpoint)
        decisions = {t: consent.decision(t) for t in scan.tracks} if consent is not None else {}
        for obs in scan.frames:
            for v in obs.views:
                v.target = scan.targets.get(v.track, v.target)
                d = decisions.get(v.track)
                v.action = "keep" if d is not None and d.action == "keep" else "deidentify"
        wanted = least_confident(scan.frames, SHEET_TILES)
        scan_times = dict(proc.times)
        proc = FrameProcessor(aligner, net, cfg, detect=detect)      # render: fresh filters
    elif consent is not None:
        raise DeidError("a consent list needs the two-pass mode (each track's decision is "
                        "made from all its frames before the first one is drawn)")
    tmp = paths.atomic_write_path(out)
    reader = FrameReader(inp, cfg.queue_size, cfg.max_frames)
    writer: Mp4Writer | None = None
    frame_infos: list[dict] = []
    tiles: list[tuple[str, np.ndarray]] = []
    sheet_at = {w["frame"]: w for w in wanted} if contact_sheet else {}
    pbar = None
    try:
        writer = Mp4Writer(tmp, info.width, info.height, info.fps, info.time_base,
                           audio_from=inp, crf=cfg.crf, preset=cfg.preset, queue_size=cfg.queue_size)
        if cfg.progress:
            pbar = tqdm(total=total, unit="frame", desc=f"deid {inp.name}", dynamic_ncols=True)
        reader.start()
        last_ts = 0.0
        for idx, pts, ts, frame in reader:
            last_ts = ts
            if scan is None:
                res, fi = proc(frame, ts)
            else:
                if idx >= len(scan.frames):
                    raise DeidError(f"{inp} decoded to more frames in the render pass than in "
                                    f"the scan ({len(scan.frames)}): did the file change?")
                res, fi = proc.render(frame, scan.frames[idx])
            if idx in sheet_at:
                w = sheet_at[idx]
                tiles.append((f"f{idx} t{w['track']} {w['state']}", crop_box(res, w["box"])))
            fi.pop("faces", None)
            frame_infos.append(fi)
            writer.write(res, pts)
            if pbar is not None:
                pbar.update(1)
        if pbar is not None:
            pbar.close()
        if not frame_infos:
            raise DeidError(f"no frame could be decoded from {inp}"
                            + (f": {reader.error}" if reader.error else ""))
        cut = cfg.max_frames is not None and len(frame_infos) >= cfg.max_frames
        writer.close(audio_end=last_ts + 1.0 / float(info.fps) if cut else None)
        wall = time.perf_counter() - t_start
        times = dict(proc.times, decode=reader.seconds, encode=writer.seconds)
        if scan is not None:
            times.update({f"scan_{k}": v for k, v in scan_times.items()}, **scan.seconds)
        truncated = bool(reader.error) or (info.frames > 0 and len(frame_infos) < info.frames
                                           and not cfg.max_frames)
        if reader.error:
            warns.append(f"{inp}: {reader.error}; the output holds the {len(frame_infos)} "
                         f"frames decoded before it")
        elif truncated:
            warns.append(f"{inp}: container lists {info.frames} frames but only "
                         f"{len(frame_infos)} could be decoded (truncated?)")
        n_fb = sum(fi.get("fallback_faces", 0) for fi in frame_infos)
        if n_fb:
            n_fbf = sum(1 for fi in frame_infos if fi.get("fallback_faces"))
            warns.append(f"{n_fb} face(s) in {n_fbf} frame(s) were obscured (pixelated) instead "
                         f"of de-identified by the network: lost by the detector, too small, "
                         f"with unreliable landmarks, or left recognisable by the network "
                         f"(see fallback_ranges, recognisable_tracks)")
        copied = False
        if all(fi["n_faces"] == 0 and not fi["fail_closed"] for fi in frame_infos):
            # (a rotated input is re-encoded upright: a stream copy would drop its rotation)
            warns.append(f"no face found in any frame of {inp}: output is a copy of the input "
                         f"(faces below ~20 px need --upsample 1; dlib HOG needs ~80 px)")
            if not truncated and not cfg.max_frames and not info.rotation:
                copied = _copy_input(inp, tmp, len(frame_infos))
        extra = {"input": info.to_json(), "output": str(out),
                 "frames_expected": info.frames, "truncated": truncated,
                 "decode_error": reader.error, "copied_without_faces": copied,
                 "audio": {"mode": writer.audio_mode if not copied else "copy",
                           "codec": writer.audio_codec},
                 "config": dataclasses.asdict(cfg), "warnings": warns,
                 "mode": "two-pass" if scan is not None else "one-pass"}
        if policy is not None:
            extra["rotated_views"] = policy.stats()
        if consent is not None:
            extra["consent"] = consent.to_json()
        if scan is not None:
            extra["replayed_frames"] = _ranges([fi["index"] for fi in frame_infos if fi["replayed"]])
            extra["kept_frames"] = _ranges([fi["index"] for fi in frame_infos if fi["kept"]])
            extra["track_report"] = track_report(
                frame_infos, scan.first_detected, scan.replayed_backward, scan.replayed_forward,
                {t: d.to_json() for t, d in decisions.items()})
            extra["kept_boxes"] = _kept_boxes(scan)
            extra["least_confident"] = wanted
            extra["scan_resumed_at"] = scan.resumed_at
        summary = summarize(frame_infos, times, wall, extra)
        os.replace(tmp, out)
        if checkpoint is not None:
            checkpoint.remove()
        if contact_sheet:
            summary["contact_sheet"] = str(report_contact_sheet(sheet_path(out), tiles))
        write_summary_json(summary_path(out), summary)
        for w in warns:
            warnings.warn(w, stacklevel=2)
        return summary
    except BaseException:
        reader.stop()
        if writer is not None:
            writer.abort()
        if pbar is not None:
            pbar.close()
        raise
    finally:
        reader.stop()
        if tmp.exists():
            tmp.unlink()


def scan_checkpoint_path(out: Path) -> Path:
    """Where an interrupted scan's progress waits for the rerun (hidden, next to ``OUT``)."""
    return Path(out).with_name(f".{Path(out).name}.scan.pkl")


def sheet_path(out: Path) -> Path:
    """The contact sheet next to an output video: ``OUT.mp4`` -> ``OUT.sheet.png``."""
    return Path(out).with_suffix(".sheet.png")


def _kept_boxes(scan: Any) -> dict[str, list[list[float]]]:
    """Per frame (as a string), the boxes of faces kept unchanged by consent (``deid audit``
    does not count them as left visible)."""
    out: dict[str, list[list[float]]] = {}
    for obs in scan.frames:
        for v in obs.views:
            if v.action == "keep":
                box = v.box if v.state == "lost" else v.face.box
                out.setdefault(str(obs.index), []).append([round(float(x), 1) for x in box])
    return out


def _copy_input(inp: Path, tmp: Path, n_frames: int) -> bool:
    """Replace the re-encode at ``tmp`` with a stream copy of the input (no faces anywhere)."""
    tmp2 = tmp.with_name(tmp.name + ".copy.mp4")
    try:
        copied = remux_copy(inp, tmp2, expect_frames=n_frames)
        if copied:
            os.replace(tmp2, tmp)
        return copied
    except Exception:
        return False     # keep the re-encode of the unchanged frames
    finally:
        if tmp2.exists():
            tmp2.unlink()

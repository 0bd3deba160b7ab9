"""Guards: outputs are replaced atomically — a failure mid-write keeps the previous
file byte-identical and leaves no temp file (image writer, `deid image`, video writer).

Failures are injected *inside* the write (the encoder writes part of the file, then raises), so
an implementation that writes the destination in place is caught.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deid_core import video as V
from deid_core.errors import DeidError
from deid_core.face import write_image
from deid_core.video import files as video_files
from test_guards_audio import paint_net


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _half_written_pil_save(monkeypatch):
    from PIL import Image
    real = Image.Image.save

    def bad_save(self, fp, *a, **kw):
        real(self, fp, *a, **kw)
        with open(fp, "r+b") as fh:
            fh.truncate(max(1, Path(fp).stat().st_size // 2))
        raise OSError("injected failure: disk full")
    monkeypatch.setattr(Image.Image, "save", bad_save)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_write_image_failure_keeps_previous_file(portraits, tmp_path, monkeypatch, suffix):
    path = tmp_path / f"out{suffix}"
    write_image(path, portraits[0])
    before = path.read_bytes()
    _half_written_pil_save(monkeypatch)
    with pytest.raises(DeidError, match="cannot write image"):
        write_image(path, portraits[1])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _entries(tmp_path) == [path.name]                  # no temp file left


def test_deid_image_overwrite_failure_keeps_previous_output(portrait_paths, tmp_path, monkeypatch):
    """`deid image --overwrite` over an earlier result: a failing write keeps that result."""
    import torch
    from deid_core.cli import main
    from deid_core.model import Generator, ModelConfig
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128")
    ck = tmp_path / "ck" / "g.pt"
    ck.parent.mkdir()
    torch.save({"config": {"model": cfg.to_dict()}, "generator": Generator(cfg).state_dict(),
                "step": 0, "lam_state": {"lam": 2e-6}}, ck)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.png"
    write_image(out, np.full((64, 64, 3), 7, np.uint8))       # an earlier result
    before = out.read_bytes()
    _half_written_pil_save(monkeypatch)
    assert main(["image", str(portrait_paths[0]), str(out), "--checkpoint", str(ck),
                 "--overwrite"]) == 1
    monkeypatch.undo()
    assert out.read_bytes() == before and _entries(out_dir) == ["o.png"]


def test_video_failure_midway_keeps_previous_output(clip, fixed_aligner, tmp_path, monkeypatch):
    out = tmp_path / "o.mp4"
    V.deidentify_video(clip, out, fixed_aligner, paint_net,
                       V.VideoConfig(progress=False, max_frames=6))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"o.mp4", "o.json"}
    # the encoder fails after a few frames were muxed (the temp file is half written)
    real = V.Mp4Writer.write
    calls = []

    def failing_write(self, frame, pts):
        calls.append(1)
        if len(calls) == 20:
            raise DeidError("injected failure: encoder died")
        return real(self, frame, pts)
    monkeypatch.setattr(V.Mp4Writer, "write", failing_write)
    with pytest.raises(DeidError, match="injected"):
        V.deidentify_video(clip, out, fixed_aligner, paint_net, V.VideoConfig(progress=False),
                           overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_video_summary_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    side = tmp_path / "o.json"
    video_files.write_summary_json(side, {"frames": 1})
    before = side.read_bytes()
    real = Path.write_text

    def bad_write_text(self, data, *a, **kw):
        real(self, data[: len(data) // 2], *a, **kw)
        raise OSError("injected failure: disk full")
    monkeypatch.setattr(Path, "write_text", bad_write_text)
    with pytest.raises(OSError, match="injected"):
        video_files.write_summary_json(side, {"frames": 2})
    monkeypatch.undo()
    assert side.read_bytes() == before
    assert _entries(tmp_path) == ["o.json"]

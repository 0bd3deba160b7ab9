"""Guards: the target identity reaches the network, in every inference path.

The generator is replaced by :class:`EchoGenerator`, a stand-in whose output colour is a
fixed function of the identity embedding it is given (and which records that embedding), so
these tests hold whatever the trained model does with its conditioning: they check the
*plumbing* — ``Deidentifier.__call__`` / ``crop_fn``, ``deid image --target``,
``video.build_pipeline(target=...)`` and the per-track targets of ``FrameProcessor`` — on real
NASA faces with the real aligner and the real dlib identity network (the conditioning network).
A path that drops the target (uses the face's own embedding, zeros, or another track's)
fails, and swapping the target changes the output face materially.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from deid_core import pipeline
from deid_core.evaluate import video_metrics
from deid_core import video as V
from deid_core.pipeline import Deidentifier
from deid_core.model import ModelConfig


class EchoGenerator(nn.Module):
    """G(x, e[, λ]) → (a flat colour tanh(5·e·P), mask 1); records every e it receives."""

    def __init__(self):
        super().__init__()
        self.cfg = ModelConfig.preset("compact-128")
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(self.cfg.id_dim, 3, generator=g))
        self.seen: list[np.ndarray] = []

    def forward(self, x, emb, lam=None):
        self.seen.append(emb.detach().float().cpu().numpy().copy())
        colour = torch.tanh(5 * emb.float() @ self.proj)                    # N×3
        img = colour[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return img, torch.ones_like(x[:, :1])


@pytest.fixture(scope="module")
def identity():
    from deid_core.identity import load_identity_network
    return load_identity_network("dlib")


@pytest.fixture()
def echo(identity) -> Deidentifier:
    return Deidentifier(EchoGenerator(), identity, device="cpu", source="echo")


@pytest.fixture(scope="module")
def targets(identity, portraits):
    d = Deidentifier(EchoGenerator(), identity, device="cpu")
    return {"A": d.embed_target(portraits[3]), "B": d.embed_target(portraits[4])}


def _hull(info, shape):
    return video_metrics.hull_mask([f.landmarks for f in info["faces"]], shape)


def _same(a, b, atol=1e-5) -> bool:
    return np.allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=atol)


def test_call_feeds_the_given_target_and_swapping_it_changes_the_face(echo, targets, portraits):
    frame = portraits[2]
    eA, eB = targets["A"], targets["B"]
    assert np.linalg.norm(eA - eB) > 0.4                       # two different persons
    outA, info = echo(frame, eA)
    assert info["n_faces"] == 1 and all(_same(r, eA) for r in echo.G.seen[-1])
    outB, _ = echo(frame, eB)
    assert all(_same(r, eB) for r in echo.G.seen[-1])
    hull = _hull(info, frame.shape[:2])
    diff = np.abs(outA.astype(int) - outB.astype(int)).sum(-1)
    assert diff[hull].mean() > 30, diff[hull].mean()           # the face itself changed
    assert (diff[~hull] == 0).all()                            # nothing outside the face
    # no target: the face is its own target (training setting), not A/B and not zeros
    echo(frame, None)
    own = echo.embed_target(frame)
    got = echo.G.seen[-1][0]
    assert _same(got, own, atol=1e-4) and not _same(got, eA, atol=0.05)
    # crop_fn (the FaceAligner step-e callable) on a batch: the target row for every crop
    crop = echo.aligner.warp(frame, info["transforms"][0])
    imgs, _ = echo.crop_fn(eB)(np.stack([crop, crop[:, ::-1].copy()]))
    assert len(echo.G.seen[-1]) == 2 and all(_same(r, eB) for r in echo.G.seen[-1])
    assert (imgs[0] == imgs[1]).all()                          # same target → same colour


def test_deid_image_target_reaches_the_network(echo, targets, portrait_paths, tmp_path, monkeypatch):
    from deid_core.cli import main
    monkeypatch.setattr(Deidentifier, "from_checkpoint", classmethod(lambda cls, *a, **k: echo))
    ck = tmp_path / "any.pt"
    ck.write_bytes(b"unused: from_checkpoint is replaced")
    src = str(portrait_paths[2])
    assert main(["image", src, str(tmp_path / "a.png"), "--checkpoint", str(ck),
                 "--target", str(portrait_paths[3])]) == 0
    assert _same(echo.G.seen[-1][0], targets["A"], atol=1e-4)
    assert main(["image", src, str(tmp_path / "b.png"), "--checkpoint", str(ck),
                 "--target", str(portrait_paths[4])]) == 0
    assert _same(echo.G.seen[-1][0], targets["B"], atol=1e-4)
    from deid_core.face import read_image
    a, b = read_image(tmp_path / "a.png").astype(int), read_image(tmp_path / "b.png").astype(int)
    assert np.abs(a - b).sum(-1).mean() > 1.0                  # the written image differs too


@pytest.fixture(scope="module")
def clip_frames(sample_dir):
    frames = V.read_frames(sample_dir / "clip" / "nasa_clip.mp4", max_frames=52)
    return frames[44:52]                                       # two faces (from frame 40 on)


def test_video_target_photo_reaches_every_track(echo, targets, portrait_paths, clip_frames,
                                                tmp_path, monkeypatch):
    monkeypatch.setattr(Deidentifier, "from_checkpoint", classmethod(lambda cls, *a, **k: echo))
    ck = tmp_path / "any.pt"
    ck.write_bytes(b"unused")
    outs = {}
    for name, photo in (("A", portrait_paths[3]), ("B", portrait_paths[4])):
        aligner, net = pipeline.build_pipeline(ck, target=photo)
        assert isinstance(net, pipeline.DeidentifierCropFns) and net.target is not None
        # the photo's embedding (the pipeline's detector may place the landmarks a little
        # differently from embed_target's): near this person's, far from the other one's
        other = targets["B" if name == "A" else "A"]
        assert np.linalg.norm(net.target - targets[name]) < 0.25 < np.linalg.norm(net.target - other)
        proc = V.FrameProcessor(aligner, net, V.VideoConfig(progress=False))
        start = len(echo.G.seen)
        for i, f in enumerate(clip_frames[:3]):
            outs[name], info = proc(f, i / 25)
        rows = np.concatenate(echo.G.seen[start:])
        assert info["n_faces"] == 2 and len(rows) >= 5
        assert all(_same(r, net.target) for r in rows)      # both faces, every frame
    hull = _hull(info, clip_frames[2].shape[:2])
    diff = np.abs(outs["A"].astype(int) - outs["B"].astype(int)).sum(-1)
    assert diff[hull].mean() > 30, diff[hull].mean()


def test_video_per_track_targets_are_each_tracks_first_appearance(echo, clip_frames):
    """Without --target: each track keeps the embedding of its first appearance (§3), and its
    face is rendered with that target, not the other track's or the current frame's own."""
    net = pipeline.DeidentifierCropFns(echo)
    al = echo.aligner
    proc = V.FrameProcessor(al, net, V.VideoConfig(progress=False))
    out0, info0 = proc(clip_frames[0], 0.0)
    assert info0["n_faces"] == 2
    first = {tr.id: np.array(tr.target) for tr in proc.tracks}
    # the targets are the embeddings of the first frame's crops
    for tr in proc.tracks:
        crop = al.warp(clip_frames[0], al.transform(tr.face.landmarks))
        assert _same(first[tr.id], echo.embed_crops(crop[None])[0], atol=1e-4)
    t1, t2 = first.values()
    assert np.linalg.norm(t1 - t2) > 0.3                       # two persons, two targets
    for i in range(1, 4):
        start = len(echo.G.seen)
        out, info = proc(clip_frames[i], i / 25)
        rows = np.concatenate(echo.G.seen[start:])
        assert sorted(info["tracks"]) == sorted(first)          # same two tracks
        # every network call got exactly one of the two first-appearance targets, both used
        used = {min(first, key=lambda k: np.abs(first[k] - r).max()) for r in rows}
        assert used == set(first)
        assert all(min(np.abs(first[k] - r).max() for k in first) < 1e-5 for r in rows)
    # each face region is painted with its own track's target colour
    colour = {k: np.round((np.tanh(5 * first[k] @ echo.G.proj.numpy()) + 1) * 127.5) for k in first}
    for k, face in zip(info["tracks"], info["faces"]):
        inner = video_metrics.hull_mask([face.landmarks], out.shape[:2])
        got = np.median(out[inner].reshape(-1, 3), axis=0)
        other = [j for j in first if j != k][0]
        assert np.abs(got - colour[k]).max() <= 12, (got, colour[k])
        assert np.abs(colour[k] - colour[other]).max() > 30

"""Inference (§3 test time) with a checkpoint, and the `deid train` / `deid image` commands."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deid_core.cli import main
from deid_core.errors import DeidError
from deid_core.evaluate.naturalness import hf_energy
from deid_core.pipeline import Deidentifier
from deid_core.train import export_weights
from deid_core.model import load_checkpoint
from deid_core.model import Generator, ModelConfig


def _save(path: Path, preset: str, half: bool, lam: float = 2e-6) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset)
    g = Generator(cfg)
    if cfg.lam_cond:   # make λ matter in an untrained network
        for m in g.modules():
            if type(m).__name__ == "FiLM":
                torch.nn.init.normal_(m.proj.weight, 0, 0.5)
    state = {k: (v.half() if half else v) for k, v in g.state_dict().items()}
    torch.save({"config": {"model": cfg.to_dict()}, "generator": state, "step": 0,
                "lam_state": {"lam": lam, "conditioned": cfg.lam_cond}}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    return {"fixed": _save(d / "fixed.pt", "compact-128", half=True),
            "cond": _save(d / "cond.pt", "compact-128-lamcond", half=True)}


@pytest.fixture(scope="module")
def deid(ckpts):
    return Deidentifier.from_checkpoint(ckpts["fixed"], "cpu")


@pytest.fixture(scope="module")
def deid_cond(ckpts, deid):
    return Deidentifier.from_checkpoint(ckpts["cond"], "cpu", identity=deid.identity)


def test_fp16_weights_load_as_fp32(deid):
    assert all(p.dtype == torch.float32 for p in deid.G.parameters())
    assert deid.size == 128 and deid.aligner.size == 128


def test_embed_target_single_face(deid, portraits, portrait_paths, tmp_path):
    e0 = deid.embed_target(portraits[0])
    e0b = deid.embed_target(str(portrait_paths[0]))
    e1 = deid.embed_target(portraits[1])
    assert e0.shape == (128,) and e0.dtype == np.float32
    assert np.allclose(e0, e0b, atol=1e-5)
    # same person (a resized copy) closer than another person, in dlib's own metric
    import cv2
    small = cv2.resize(portraits[0], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    assert np.linalg.norm(deid.embed_target(small) - e0) < 0.3 < np.linalg.norm(e1 - e0)
    blank = tmp_path / "blank.png"
    from deid_core.face import write_image
    write_image(blank, np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(DeidError, match=r"blank\.png.*exactly one face, found 0"):
        deid.embed_target(blank)
    h = min(portraits[0].shape[0], portraits[1].shape[0])
    two = np.concatenate([portraits[0][:h], portraits[1][:h]], axis=1)
    with pytest.raises(DeidError, match="found 2"):
        deid.embed_target(two, name="pair.jpg")


def test_call_changes_only_the_face(deid, portraits):
    frame = portraits[2]
    target = deid.embed_target(portraits[3])
    out, info = deid(frame, target)
    assert out.shape == frame.shape and out.dtype == np.uint8 and info["n_faces"] == 1
    changed = np.abs(out.astype(int) - frame).sum(-1) > 0
    lm = info["faces"][0].landmarks
    x0, y0 = lm.min(0) - 2
    x1, y1 = lm.max(0) + 2
    outside = changed.copy()
    outside[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = False
    assert changed.sum() > 100 and not outside.any()
    net = deid.crop_fn(target, None)
    M = info["transforms"][0]
    imgs, masks = net(np.stack([deid.aligner.warp(frame, M)]))
    assert imgs.shape == (1, 128, 128, 3) and masks.shape == (1, 128, 128)
    # what lands in the face is exactly this generator's output for this target, pasted back
    # (not the input, another network's, or the self-target's output)
    assert np.array_equal(out, deid.aligner.paste(frame, info["faces"][0], M, imgs[0], masks[0]))
    own, _ = deid.crop_fn(deid.embed_target(frame), None)(np.stack([deid.aligner.warp(frame, M)]))
    assert not np.array_equal(out, deid.aligner.paste(frame, info["faces"][0], M, own[0], masks[0]))
    with pytest.raises(DeidError, match="128 values"):
        deid.crop_fn(np.zeros(64, np.float32))


def test_lambda_drives_conditioned_model_and_fixed_model_ignores_it(deid, deid_cond, portraits):
    crop = deid.aligner.warp(portraits[4], deid.aligner.transform(deid.aligner.detect(portraits[4])[0].landmarks))
    e = deid.embed_crops(crop[None])[0]
    a = deid_cond.crop_fn(e, 0.0)(crop[None])[0].astype(int)
    b = deid_cond.crop_fn(e, 1e-5)(crop[None])[0].astype(int)
    assert np.abs(a - b).mean() > 5          # λ changes the face materially (untrained: ~20)
    assert deid_cond.resolve_lam(None) == (2e-6, False)
    for bad in (-1.0, 1e9, float("nan")):              # absurd λ refused, any model
        with pytest.raises(DeidError, match="outside"):
            deid_cond.resolve_lam(bad)
    with pytest.raises(DeidError, match="outside"):
        deid.resolve_lam(1e9)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert deid.resolve_lam(1e-5) == (2e-6, True)
    assert any("fixed λ" in str(x.message) for x in w)


def test_cli_image_refuses_input_and_existing_output(ckpts, portrait_paths, tmp_path, capsys):
    src = tmp_path / "in.jpg"
    shutil.copy(portrait_paths[5], src)
    before = src.read_bytes()
    args = ["image", str(src), None, "--checkpoint", str(ckpts["fixed"]), "--target",
            str(portrait_paths[6])]
    assert main([str(a) if a else str(src) for a in args]) == 1
    assert "is the input" in capsys.readouterr().err and src.read_bytes() == before
    out = tmp_path / "out.png"
    args[2] = str(out)
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_faces"] == 1 and out.is_file() and not list(tmp_path.glob(".*tmp*"))
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_cli_train_and_resume_on_a_prepared_cache(portrait_paths, tmp_path, capsys):
    from deid_core.train import prepare_faces
    src = tmp_path / "src"
    src.mkdir()
    for p in portrait_paths[:2]:
        shutil.copy(p, src / p.name)
    prepare_faces(src, tmp_path / "cache", size=128, progress=False)
    run = tmp_path / "run"
    base = ["train", "--preset", "compact-128", "--data", str(tmp_path / "cache"), "--out",
            str(run), "--batch", "2", "--threads", "1", "--no-progress", "--lam", "0:0", "1:2e-6"]
    assert main(base + ["--steps", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1
    assert main(base + ["--steps", "2", "--resume"]) == 0
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["step"] == 2 and ck["lam_state"]["lam"] == 2e-6
    w = export_weights(run / "checkpoint.pt", tmp_path / "w.pt")
    d = Deidentifier.from_checkpoint(w, "cpu")
    assert d.cfg.name == "compact-128" and w.stat().st_size < 25e6
    # `deid export`: never over an existing file; --lam only for a λ-conditioned model
    before = w.read_bytes()
    assert main(["export", str(run / "checkpoint.pt"), str(w)]) == 1 and w.read_bytes() == before
    assert main(["export", str(run / "checkpoint.pt"), str(tmp_path / "w2.pt"), "--lam", "1e-6"]) == 1
    assert "fixed λ" in capsys.readouterr().err
    assert main(["export", str(run / "checkpoint.pt"), str(tmp_path / "w2.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == (tmp_path / "w2.pt").stat().st_size
    # --source-chroma switches the source-colour transfer on in the copy, the source untouched
    assert main(["export", str(run / "checkpoint.pt"), str(tmp_path / "w3.pt"),
                 "--source-chroma", "on"]) == 0
    assert load_checkpoint(tmp_path / "w3.pt")["config"]["model"]["source_chroma"] is True
    assert not load_checkpoint(run / "checkpoint.pt")["config"]["model"]["source_chroma"]
    # --warp-at: where a warp head's flow is applied (the frame, or the paper's 128-px crop)
    assert main(["export", str(run / "checkpoint.pt"), str(tmp_path / "w4.pt"), "--warp-at", "crop"]) == 0
    assert load_checkpoint(tmp_path / "w4.pt")["config"]["model"]["warp_at"] == "crop"
    assert Deidentifier.from_checkpoint(tmp_path / "w4.pt", "cpu").cfg.warp_at == "crop"
    assert main(["train", "--data", str(tmp_path / "cache"), "--out", str(run), "--lam", "x:y"]) == 1


def test_cli_train_holds_out_the_persons_of_a_folder(portrait_paths, tmp_path, capsys):
    from deid_core.train import prepare_faces
    src, held = tmp_path / "src", tmp_path / "held"
    src.mkdir()
    held.mkdir()
    for p in portrait_paths[:2]:
        shutil.copy(p, src / p.name)
    shutil.copy(portrait_paths[0], held / portrait_paths[0].name)
    prepare_faces(src, tmp_path / "cache", size=128, progress=False)
    base = ["train", "--preset", "compact-128", "--data", str(tmp_path / "cache"), "--batch", "1",
            "--threads", "1", "--no-progress", "--steps", "1", "--identity", "none"]
    assert main(base + ["--out", str(tmp_path / "r1"), "--hold-out", str(held)]) == 0
    cfg = json.loads((tmp_path / "r1" / "config.json").read_text())["train"]
    assert cfg["exclude_persons"] == [portrait_paths[0].stem]
    shutil.copy(portrait_paths[1], held / portrait_paths[1].name)   # everyone held out
    assert main(base + ["--out", str(tmp_path / "r2"), "--hold-out", str(held)]) == 1
    assert "no faces" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "r3"), "--hold-out", str(tmp_path / "nope")]) == 1
    assert "--hold-out folder not found" in capsys.readouterr().err


def test_cli_train_lam_range_needs_two_values_for_lamcond(tmp_path, capsys):
    args = ["train", "--preset", "compact-128-lamcond", "--data", str(tmp_path), "--out",
            str(tmp_path / "r"), "--lam", "1e-6"]
    assert main(args) == 1 and "give LO HI" in capsys.readouterr().err


def test_eval_lam_reaches_the_de_id_rows(ckpts, portraits, deid):
    """`deid eval lfw/rank/table3 --lam` dials a λ-conditioned checkpoint for the de-ID rows."""
    from deid_core.cli import build_parser
    from deid_core.evaluate.conditions import condition_transforms
    for cmd in ("lfw", "rank", "table3"):
        assert build_parser().parse_args(["eval", cmd, "--lam", "5e-6"]).lam == 5e-6
    face = deid.aligner.detect(portraits[0])[0]
    outs = {}
    for lam in (0.0, 2e-5):
        t, notes = condition_transforms(str(ckpts["cond"]), None, 0, False, lam=lam)
        assert any(f"λ = {lam:g}" in n for n in notes), notes
        outs[lam] = t["deid"](portraits[0], face.landmarks)
        assert outs[lam].shape == portraits[0].shape
    assert np.abs(outs[0.0].astype(int) - outs[2e-5].astype(int)).max() > 0


def test_demos_default_to_the_starter_checkpoint(ckpts, portrait_paths, tmp_path, monkeypatch):
    """`deid image/video/live` without --checkpoint use data/checkpoints/*.pt when present,
    and say what to pass when there is none."""
    from deid_core import paths
    from deid_core.paths import resolve_checkpoint
    from deid_core.pipeline import build_pipeline
    monkeypatch.setattr(paths, "CHECKPOINT_DIR", tmp_path / "none")
    with pytest.raises(DeidError, match="--checkpoint"):
        resolve_checkpoint(None)
    with pytest.raises(DeidError, match="--passthrough"):
        build_pipeline(None)
    assert resolve_checkpoint(ckpts["fixed"]) == Path(ckpts["fixed"])
    shelf = tmp_path / "checkpoints"
    shelf.mkdir()
    shutil.copy(ckpts["cond"], shelf / "compact-128-lamcond_starter.pt")
    monkeypatch.setattr(paths, "CHECKPOINT_DIR", shelf)
    assert resolve_checkpoint(None) == shelf / "compact-128-lamcond_starter.pt"
    # the default λ of a λ-conditioned export is the one it is given
    export_weights(ckpts["cond"], tmp_path / "dial.pt", lam=7e-6)
    assert Deidentifier.from_checkpoint(tmp_path / "dial.pt", "cpu").resolve_lam(None)[0] == 7e-6
    out = tmp_path / "out.jpg"
    assert main(["image", str(portrait_paths[0]), str(out), "--lam", "1e-6"]) == 0
    assert out.is_file()


def _warp_deidentifier(warp_at: str, identity) -> Deidentifier:
    torch.manual_seed(0)
    cfg = ModelConfig.preset("compact-128-lamcond", flow_px=4.0, flow_dial=True, lam_scale="linear",
                             flow_luma=0.1, luma_grid=16, warp_at=warp_at)
    G = Generator(cfg)
    with torch.no_grad():
        G.to_flow.weight.normal_(0, 0.05)
        G.to_luma.weight.normal_(0, 0.05)
    del G.to_mask               # mask 1: the output is the reshaped face alone, not a blend
    G.to_mask = lambda h: torch.full_like(h[:, :1], 20.0)
    return Deidentifier(G, identity, lam_state={"lam": 2e-5, "conditioned": True})


def test_warp_head_reshapes_the_full_resolution_frame(deid, portraits):
    at_frame, at_crop = (_warp_deidentifier(w, deid.identity) for w in ("frame", "crop"))
    big = cv2.resize(portraits[0], None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    face = at_frame.aligner.detect(big)[0]
    crop = at_frame.aligner.warp(big, at_frame.aligner.transform(face.landmarks))[None]
    img_f, m_f, fields = at_frame.crop_fn(None, 2e-5)(crop)
    img_c, m_c = at_crop.crop_fn(None, 2e-5)(crop)
    assert np.array_equal(img_f, img_c) and np.array_equal(m_f, m_c) and fields.shape == (1, 128, 128, 3)
    assert np.abs(fields[..., :2]).max() > 0.5 and np.abs(fields[..., 2]).max() > 0.5
    out_f, _ = at_frame(big, None, 2e-5, faces=[face])
    out_c, _ = at_crop(big, None, 2e-5, faces=[face])
    # the same reshaping, at the frame's resolution: fine detail as in the input (the crop
    # path pastes a 128-px picture of a face twice as large and loses it)
    fine = [hf_energy(im, face.landmarks)[2] for im in (big, out_f, out_c)]
    assert fine[1] > 0.85 * fine[0] and fine[2] < 0.6 * fine[0]
    d_f = cv2.GaussianBlur((out_f.astype(np.float32) - big).mean(-1), (0, 0), 4)
    d_c = cv2.GaussianBlur((out_c.astype(np.float32) - big).mean(-1), (0, 0), 4)
    assert np.corrcoef(d_f.ravel(), d_c.ravel())[0, 1] > 0.8
    # at λ = 0 the dial's warp is the identity: every pixel of the input, untouched
    out0, _ = at_frame(big, None, 0.0, faces=[face])
    assert np.array_equal(out0, big)

"""The identity-band measurement (scripts/identity_bands.py): the band mix and the shape warp it
rests on, and its verdict on real faces: identity lives in the fine band, not in shading or shape."""
from __future__ import annotations

import importlib.util
import shutil

import cv2
import numpy as np
import pandas as pd

from deid_core import paths

_spec = importlib.util.spec_from_file_location(
    "identity_bands", paths.REPO_ROOT / "scripts" / "identity_bands.py")
bands = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bands)


def _textured(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.uniform(60, 200, (size, size, 3)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 1.5).clip(0, 255).astype(np.uint8)


def test_band_mix_swaps_exactly_one_band():
    src, donor = _textured(0), _textured(1)
    for take in ("low", "high"):                      # a face mixed with itself is itself
        assert np.abs(bands.band_mix(src, src, 3.0, take).astype(int) - src).max() <= 1
    lo = bands.band_mix(src, donor, 3.0, "low").astype(np.float32)
    hi = bands.band_mix(src, donor, 3.0, "high").astype(np.float32)
    # the two mixes share the bands between them: low + high = source + donor
    assert np.abs(lo + hi - src - donor).mean() < 1.0
    # the low-band mix keeps the source's fine band, the high-band mix takes the donor's
    fine = lambda x: x - cv2.GaussianBlur(x.astype(np.float32), (0, 0), 3.0)  # noqa: E731
    assert np.corrcoef(fine(lo).ravel(), fine(src).ravel())[0, 1] > 0.95
    assert np.corrcoef(fine(hi).ravel(), fine(donor).ravel())[0, 1] > 0.95


def test_shape_warp_moves_points_to_their_targets():
    img = np.zeros((96, 96, 3), np.uint8)
    cv2.circle(img, (30, 40), 4, (255, 255, 255), -1)
    src = np.array([[30.0, 40.0], [60.0, 60.0], [50.0, 25.0]])
    dst = np.array([[38.0, 46.0], [60.0, 60.0], [50.0, 25.0]])
    out = bands.shape_warp(img, src, dst)
    assert out[46, 38, 0] == 255 and out[40, 30, 0] == 0     # the disc's centre moved
    assert out[0].max() == 0 and np.array_equal(bands.shape_warp(img, src, src), img)


def test_identity_lives_in_the_fine_band_of_real_faces(tmp_path):
    """Six held-out NASA portraits: another person's shading (low band, σ = 4 px) or face shape
    leaves every recogniser calling the face the same person; another person's fine band
    makes most faces someone else."""
    faces = tmp_path / "faces"
    faces.mkdir()
    for f in sorted((paths.sample_dir() / "portraits").glob("*.jpg"))[:6]:
        shutil.copy(f, faces / f.name)
    assert bands.main(["--images", str(faces), "--sigmas", "4", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "identity_bands.csv").set_index("condition")
    for net in bands.NETWORKS:
        assert df.loc["donor (another person)", f"{net} same person"] <= 0.2
        assert df.loc["low band from donor", f"{net} same person"] >= 0.8
        assert df.loc["shape from donor ×1", f"{net} same person"] >= 0.8
        assert df.loc["high band from donor", f"{net} same person"] <= 0.5
        # inside the hull another face moves less than the whole picture: the rest stays
        assert (df.loc["face swap in the hull", f"{net} distance"]
                < df.loc["donor (another person)", f"{net} distance"])
    assert (tmp_path / "identity_bands.jpg").is_file()

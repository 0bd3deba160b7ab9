"""The kit's skeleton: package, CLI, paths, embedded sample, requirements."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deid_core import DeidError, paths
from deid_core.cli import build_parser, main


def test_sample_has_public_domain_portraits(portrait_paths):
    assert len(portrait_paths) >= 20
    for p in portrait_paths[:3]:
        img = np.asarray(Image.open(p).convert("RGB"))
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 200


def _research_only(rel: str) -> bool:
    return rel.startswith("data/") and ("lfw-a" in rel.lower() or "celeba-" in rel.lower())


def test_sample_holds_no_research_only_data():
    # what is on disk under data/ (works without git too)
    on_disk = [p.relative_to(paths.REPO_ROOT).as_posix() for p in (paths.REPO_ROOT / "data").rglob("*")]
    assert any(p.startswith("data/sample/portraits/") for p in on_disk)     # the walk saw the sample
    assert not [p for p in on_disk if _research_only(p)]
    # what git tracks, when this is a checkout (never vacuous: the listing must be the repo's)
    if not (paths.REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: only the files on disk were checked")
    r = subprocess.run(["git", "ls-files"], cwd=paths.REPO_ROOT, capture_output=True, text=True)
    tracked = r.stdout.splitlines()
    assert r.returncode == 0 and "deid_core/__init__.py" in tracked and len(tracked) > 50, r.stderr
    assert not [t for t in tracked if _research_only(t)]


def test_dlib_model_files_located_without_import():
    for name in ["dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_68_face_landmarks.dat",
                 "shape_predictor_5_face_landmarks.dat", "mmod_human_face_detector.dat"]:
        assert paths.dlib_model(name).stat().st_size > 50_000
    with pytest.raises(DeidError, match="not found"):
        paths.dlib_model("no_such_model.dat")


def test_missing_package_error_names_it():
    with pytest.raises(DeidError, match="no_such_pkg_xyz"):
        paths.package_file("no_such_pkg_xyz", "x")


def test_shared_data_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("DEID_SHARED_DATA", str(tmp_path))
    assert paths.shared_data_dir() == tmp_path
    monkeypatch.setenv("DEID_SHARED_DATA", str(tmp_path / "absent"))
    assert paths.shared_data_dir() is None


def test_cli_help_lists_commands(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    assert "info" in help_text
    assert main([]) == 2


def test_cli_console_script_runs():
    exe = Path(sys.executable).with_name("deid")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "COMMAND" in out.stdout


def test_cli_info_reports_models(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "dlib ResNet-29" in out and "MISSING" not in out

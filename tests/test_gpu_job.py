"""The prepared GPU job (scripts/gpu): dlib weights as fp16 tensors, the import chain the GPU
image allows, the carry format, and ``job.sh --dry-run`` end to end on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deid_core import paths
from deid_core.errors import DeidError

REPO = paths.REPO_ROOT
GPU = REPO / "scripts" / "gpu"
sys.path.insert(0, str(GPU))
import shards  # noqa: E402

MiB = 1 << 20
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run(cmd: list[str], timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                         env=env or ENV)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def tiny_carry(tmp_path_factory) -> Path:
    """A dry-run carry from the embedded sample (8 persons held out, 16 train)."""
    carry = tmp_path_factory.mktemp("gpu") / "carry"
    run([sys.executable, str(GPU / "pack.py"), "--tiny", "--carry", str(carry)], timeout=300)
    return carry


def test_dlib_fp16_weights_match_dat(tmp_path, portrait_paths):
    """fp16 tensors → fp32 network: descriptors within 2e-3 of the .dat port's (threshold 0.6)."""
    from deid_core.face import FaceAligner, read_image
    from deid_core.identity.dlib_net import DlibIdentity
    from deid_core.identity.dlib_resnet import export_dlib_weights
    pt = export_dlib_weights(tmp_path / "dlib.pt")
    assert pt.stat().st_size < 12 * MiB
    with pytest.raises(DeidError, match="exists"):
        export_dlib_weights(pt)
    ref, half = DlibIdentity(), DlibIdentity(weights=pt)
    assert next(half.net.parameters()).dtype == torch.float32
    aligner = FaceAligner()
    chips = []
    for p in portrait_paths[:4]:
        img = read_image(p)
        chips.append(ref.chip(img, aligner.detect(img)[0].landmarks))
    a, b = ref.embed(np.stack(chips)), half.embed(np.stack(chips))
    diff = float(np.abs(a - b).max())
    assert diff < 2e-3, diff
    assert float(np.linalg.norm(a - b, axis=1).max()) < 5e-3
    with pytest.raises(DeidError, match="not a dlib weights file"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
        DlibIdentity(weights=tmp_path / "bad.pt")


def test_import_chain_without_venv_only_packages():
    """The modules the job imports load with dlib, tqdm, pandas, matplotlib, facenet_pytorch
    and onnxruntime blocked (the GPU image has none of our venv)."""
    code = "\n".join([
        "import sys", "sys.path.insert(0, 'scripts/gpu')", "import importguard",
        "g = importguard.install()", "import job",
        "from deid_core.identity.dlib_net import DlibIdentity",
        "from deid_core.face import template_landmarks", "template_landmarks(128)",
        "import deid_core.train, deid_core.pipeline, deid_core.augment",
        "try:", "    import dlib", "except ModuleNotFoundError:", "    print('blocked')"])
    res = run([sys.executable, "-c", code], timeout=120)
    assert "blocked" in res.stdout


def test_gpu_tests_dry_run_on_cpu():
    """tests/test_gpu.py, the GPU machine's own check, runs its plain runner on the CPU with the
    packages the image lacks blocked (``importguard.ABSENT``): every test passes or skips."""
    code = "\n".join([
        "import sys, runpy", "sys.path.insert(0, 'scripts/gpu')", "import importguard",
        "importguard.install(importguard.ABSENT)", "sys.argv = ['tests/test_gpu.py']",
        "runpy.run_path('tests/test_gpu.py', run_name='__main__')"])
    res = run([sys.executable, "-c", code], timeout=300,
              env={**ENV, "DEID_GPU_TEST_DEVICE": "cpu"})
    assert "FAIL" not in res.stdout and res.stdout.count("PASS") >= 3, res.stdout[-2000:]


def test_shards_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    faces = [np.full((16, 16, 3), v, np.uint8) + rng.integers(0, 3, (16, 16, 3), dtype=np.uint8)
             for v in (10, 120, 240)]
    index = shards.write_shards(tmp_path / "s", [shards.encode_jpeg(f, 95) for f in faces],
                                ["b", "a", "b"], 16, 95, {"x": 3}, shard_bytes=400)
    assert len(index["shards"]) >= 2 and index["persons"] == ["a", "b"]
    got, persons, _ = shards.read_shards(tmp_path / "s")
    assert got.shape == (3, 16, 16, 3) and persons.tolist() == [1, 0, 1]
    assert np.abs(got.astype(int) - np.stack(faces)).max() <= 6
    with pytest.raises(FileExistsError):
        shards.write_shards(tmp_path / "s", [], [], 16, 95)


def test_tiny_carry(tiny_carry):
    manifest = json.loads((tiny_carry / "manifest.json").read_text())
    faces, _, index = shards.read_shards(tiny_carry / manifest["faces"])
    held, _, hindex = shards.read_shards(tiny_carry / manifest["heldout"])
    assert faces.shape == (16, 128, 128, 3) and held.shape == (8, 128, 128, 3)
    assert not set(index["persons"]) & set(hindex["persons"])   # held-out persons never train
    assert (tiny_carry / manifest["dlib"]).stat().st_size < 12 * MiB
    if manifest.get("init") and manifest["init_recipe"] != manifest["recipe"]:
        # e.g. the first, paper-recipe starter: the job trains the preset the recipe was tuned on
        assert manifest["preset"] == "compact-128w-lamcond"


def test_job_dry_run(tiny_carry, tmp_path):
    """job.sh --dry-run on the CPU: every output file, within the return limits; unpack.py
    rebuilds a checkpoint that the inference code loads."""
    out = tmp_path / "out"
    res = run([str(GPU / "job.sh"), "--dry-run", "--carry", str(tiny_carry), "--out", str(out)],
              timeout=300, env={**ENV, "PYTHON": sys.executable})
    assert "status ok" in res.stdout
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16 * MiB for f in files), files
    for name in ("bench.json", "discriminator.pt", "job.log", "losses.csv", "samples.png"):
        assert name in files
    assert any(f.startswith("generator_fp16_") for f in files)
    bench = json.loads((out / "bench.json").read_text())
    assert bench["status"] == "ok" and bench["dry_run"]
    for key in ("train_img_per_s", "g_only_img_per_s", "gpu", "torch", "steps", "minutes",
                "compile", "latency_128", "latency_256", "paste"):
        assert key in bench, key
    assert bench["steps"] == 6 and bench["train_img_per_s"] > 0
    # carried weights of another model config (e.g. the first, paper-recipe starter) are
    # warm-started tensor by tensor, not ignored; the committed warp-head model is trained as
    # an image head (--head image, the default): warm start, its own to_image fresh
    manifest = json.loads((tiny_carry / "manifest.json").read_text())
    init_path = next(p for p in (REPO / manifest["init"], tiny_carry / manifest["init"])
                     if p.is_file())
    init_cfg = torch.load(init_path, map_location="cpu", weights_only=False)["config"]["model"]
    if not manifest.get("init_matches", True) or init_cfg.get("flow_px", 0) > 0:
        assert bench["init"].startswith("warm start from") and bench["prior_steps"] == 0
    assert bench["head"] == "image"
    assert set(bench["paste"]) == {"320x240", "640x360"}
    assert all(v["changed_pixels"] > 0 for v in bench["paste"].values())
    # unpack into a loadable checkpoint
    ck_path = tmp_path / "gpu_model.pt"
    run([sys.executable, str(GPU / "unpack.py"), str(out), str(ck_path)], timeout=120)
    from deid_core.pipeline import Deidentifier
    deid = Deidentifier.from_checkpoint(ck_path)
    G = torch.load(ck_path, map_location="cpu", weights_only=False)
    assert G["step"] == bench["prior_steps"] + 6 == bench["total_steps"]    # continued or fresh
    assert G["discriminator"] is not None and G["gpu_job"]["status"] == "ok"
    assert deid.cfg.name == bench["preset"]
    with pytest.raises(subprocess.CalledProcessError):   # never over an existing file
        subprocess.run([sys.executable, str(GPU / "unpack.py"), str(out), str(ck_path)],
                       cwd=REPO, env=ENV, check=True, capture_output=True, timeout=120)
    # the next run continues from it (copied into the carry: not a tracked file)
    carry2 = tmp_path / "carry2"
    run([sys.executable, str(GPU / "pack.py"), "--tiny", "--carry", str(carry2), "--init",
         str(ck_path)], timeout=300)
    assert json.loads((carry2 / "manifest.json").read_text())["init"] == "init.pt"
    out2 = tmp_path / "out2"
    run([str(GPU / "job.sh"), "--dry-run", "--carry", str(carry2), "--out", str(out2),
         "--max-steps", "3"], timeout=300, env={**ENV, "PYTHON": sys.executable})
    bench2 = json.loads((out2 / "bench.json").read_text())
    assert bench2["prior_steps"] == G["step"] and bench2["total_steps"] == G["step"] + 3
    assert bench2["init_discriminator"] and bench2["init"].endswith("init.pt")
    assert "continuing as trained" in (out2 / "job.log").read_text()


def test_job_refuses_a_used_output(tiny_carry, tmp_path):
    (tmp_path / "old.txt").write_text("x")
    res = subprocess.run([str(GPU / "job.sh"), "--dry-run", "--carry", str(tiny_carry),
                          "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         env={**ENV, "PYTHON": sys.executable}, timeout=120)
    assert res.returncode == 1 and "not empty" in res.stderr


@pytest.mark.gpu
def test_job_on_cuda(tmp_path):
    """On the GPU machine: one short job on the real carry (or skip when not packed)."""
    carry = REPO / ".carry"
    if not (carry / "manifest.json").is_file():
        pytest.skip("no .carry/ here: run scripts/gpu/pack.sh first")
    out = tmp_path / "out"
    res = run([str(GPU / "job.sh"), "--carry", str(carry), "--out", str(out), "--minutes", "2",
               "--compile", "off", "--reserve", "45"], timeout=200,
              env={**ENV, "PYTHON": sys.executable})
    bench = json.loads((out / "bench.json").read_text())
    assert bench["status"] == "ok" and bench["gpu"], res.stdout[-2000:]


def test_job_recipe_options_tuned_then_init_then_command_line():
    import job
    from deid_core.recipe import TUNED_OPTIONS, RecipeConfig
    cfg = job.parse_args(["--recipe", "deid"])
    assert job.job_options(cfg, {}) == TUNED_OPTIONS           # a fresh deid run: tuned
    RecipeConfig.preset("deid", **TUNED_OPTIONS)               # every tuned switch is valid
    # a continued deid model keeps its own switches (its curriculum is behind it) ...
    same = {"options": {"dial_gamma": 2.0, "curriculum": False}}
    opts = job.job_options(cfg, same)
    assert opts["dial_gamma"] == 2.0 and opts["curriculum"] is False
    assert opts["luma_mid"] == TUNED_OPTIONS["luma_mid"]
    # ... and the command line wins over both; --plain trains the preset as ablated
    cfg = job.parse_args(["--recipe", "deid", "--option", "dial_gamma=1.2", "--plain"])
    assert job.job_options(cfg, same) == {"dial_gamma": "1.2", "curriculum": False}
    assert job.job_options(job.parse_args(["--recipe", "paper"]), {}) == {}
    # a continued warp head keeps exactly its own switches: the tuned hinges fight a warp
    warp = {"options": {"flow_px": 5.0, "flow_dial": True, "curriculum": False}}
    assert job.job_options(job.parse_args(["--recipe", "deid"]), warp) == warp["options"]
    # ... unless the command line turns it back into an image head
    cfg = job.parse_args(["--recipe", "deid", "--option", "flow_px=0"])
    assert job.job_options(cfg, warp)["luma_mid"] == TUNED_OPTIONS["luma_mid"]



def test_job_trains_a_carried_warp_head_as_an_image_head():
    """--head image (default) turns a continued warp head into the image head, under the
    command line's own options; --head as-trained and image-head inits are left alone."""
    import job
    warp = {"model": {"flow_px": 5.0, "flow_grid": 8}, "options": {"curriculum": False}}
    cfg = job.with_head(job.parse_args(["--recipe", "deid", "--option", "detail_sigma=2"]), warp)
    assert cfg.options == {**job.IMAGE_HEAD, "detail_sigma": "2"}
    opts = job.job_options(cfg, warp)                     # an image head gets the tuned ones
    assert opts["flow_px"] == "0" and opts["curriculum"] == "1" and "luma_mid" in opts
    kept = job.parse_args(["--recipe", "deid", "--head", "as-trained"])
    assert job.with_head(kept, warp) is kept
    image = {"model": {"flow_px": 0.0}, "options": {"curriculum": False}}
    default = job.parse_args(["--recipe", "deid"])
    assert job.with_head(default, image) is default and job.with_head(default, {}) is default

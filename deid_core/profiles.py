"""Run profiles for the notebooks and ``run_all.sh``: ``smoke`` (embedded sample, CPU, minutes)
and ``paper`` (the paper's presets and schedules, a GPU and the full datasets).

A :class:`Profile` is the one place where the settings of a run live; :func:`notebook_parameters`
turns it into the values injected into each notebook's ``parameters`` cell by papermill.
Paper values cite Sec. 4 ("Training is performed using the Adam optimizer ... batch of 32 ...
230k iterations ... λ from 1e-7 to 2e-6 in four steps").
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.model import resolve_device


#: The notebooks, in the order ``run_all.sh`` executes them.
NOTEBOOKS: tuple[str, ...] = (
    "00_setup_and_data",
    "01_train",
    "02_lambda_sweep",
    "03_identity_evaluation",
    "04_user_study",
    "05_video_demo",
)


@dataclass
class Profile:
    """All settings of one run of the notebooks."""

    name: str                                  # "smoke" or "paper"
    device: str = "cpu"                        # "cpu" or "cuda"
    data_dir: str | None = None                # user datasets root (LFW, CelebA, ...); None: sample/shared
    seed: int = 0
    use_shared_data: bool = True               # smoke: use ../shared/data only where present and cheap
    # 00: data preparation
    n_prepare: int = 24                        # faces aligned in notebook 00
    # 01: training
    preset: str = "compact-128-lamcond"        # model preset (deid_core.model); -lamcond: λ at inference
    train_steps: int = 60
    train_batch: int = 8
    train_data: str = "sample"                 # "sample" | "shared" | "user"
    use_starter_checkpoint: bool = True        # later notebooks use data/checkpoints/ when present
    checkpoint: str | None = None              # 02/03/05: this checkpoint instead of notebook 01's choice
    demo_lam: float | None = None              # λ for 03/05 with a λ-conditioned model (None: its default)
    # 02: λ sweep (Fig. 9); λ values are the identity-loss weights of Sec. 3.2
    lams: list[float] = field(default_factory=lambda: [0.0, 1e-7, 5e-7, 1e-6, 2e-6])
    n_sweep_faces: int = 6
    # 03: identity evaluation (Tables 3, 4, 5)
    evaluators: list[str] = field(default_factory=lambda: ["facenet-casia", "sface"])
    n_eval_identities: int = 24
    lfw_pairs: int = 0                         # 0: skip LFW verification unless shared/user data has it
    # 04: user study (Table 2)
    study_persons: int = 5
    # 05: video
    clip: str | None = None                    # None: the embedded sample clip
    max_frames: int = 60
    # execution
    timeouts: dict[str, int] = field(default_factory=dict)   # per notebook, seconds

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _smoke(device: str, data_dir: str | None) -> Profile:
    return Profile(
        name="smoke", device=device, data_dir=data_dir,
        n_prepare=24, preset="compact-128-lamcond", train_steps=40, train_batch=8,
        train_data="sample", lams=[0.0, 5e-6, 1e-5, 1.5e-5, 2e-5], n_sweep_faces=6,
        evaluators=["facenet-casia", "sface"], n_eval_identities=16, lfw_pairs=0,
        study_persons=5, max_frames=0,
        # per-cell limits that catch a hung kernel, with room for a busy shared CPU
        timeouts={"00_setup_and_data": 900, "01_train": 1800, "02_lambda_sweep": 1200,
                  "03_identity_evaluation": 1800, "04_user_study": 1200, "05_video_demo": 1200},
    )


def _paper(device: str, data_dir: str | None) -> Profile:
    return Profile(
        name="paper", device=device, data_dir=data_dir,
        n_prepare=260_000, preset="paper-128-lamcond", train_steps=230_000, train_batch=32,
        train_data="user" if data_dir else "shared",
        lams=[0.0, 1e-7, 5e-7, 1e-6, 2e-6], n_sweep_faces=16,
        evaluators=["facenet-casia", "sface"], n_eval_identities=1000, lfw_pairs=6000,
        study_persons=5, max_frames=0, use_starter_checkpoint=False,
        timeouts={nb: 7 * 24 * 3600 for nb in NOTEBOOKS},
    )


PROFILES = {"smoke": _smoke, "paper": _paper}


def get_profile(name: str = "smoke", device: str | None = None, data_dir: str | Path | None = None,
                seed: int = 0) -> Profile:
    """The named profile with the device (default: cuda when available, else cpu) and data root."""
    if name not in PROFILES:
        raise DeidError(f"unknown profile '{name}': choose one of {sorted(PROFILES)}")
    if device is None:
        device = resolve_device("auto").type
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise DeidError(f"unknown device '{device}': use cpu or cuda")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeidError(f"--device {device} asked for, but torch sees no CUDA device "
                            f"(torch {torch.__version__}); use --device cpu")
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser().resolve()
        if not data_dir.is_dir():
            raise DeidError(f"--data folder not found: {data_dir}")
        data_dir = str(data_dir)
    prof = PROFILES[name](device, data_dir)
    prof.seed = seed
    if name == "smoke" and os.environ.get("DEID_SMOKE_TRAIN_STEPS"):   # tests: a shorter run
        prof.train_steps = int(os.environ["DEID_SMOKE_TRAIN_STEPS"])
    return prof


def notebook_parameters(notebook: str, profile: Profile, results_dir: str | Path) -> dict:
    """Values for the ``parameters`` cell of one notebook (papermill injects them)."""
    if notebook not in NOTEBOOKS:
        raise DeidError(f"unknown notebook '{notebook}': expected one of {NOTEBOOKS}")
    shared = paths.shared_data_dir() if profile.use_shared_data else None
    common = {
        "profile": profile.name,
        "device": profile.device,
        "seed": profile.seed,
        "results_dir": str(Path(results_dir).resolve()),
        "sample_dir": str(paths.sample_dir()),
        "shared_data_dir": str(shared) if shared else None,
        "data_dir": profile.data_dir,
    }
    per = {
        "00_setup_and_data": {"n_prepare": profile.n_prepare},
        "01_train": {"preset": profile.preset, "steps": profile.train_steps,
                     "batch_size": profile.train_batch,
                     "train_data": profile.train_data,
                     "use_starter_checkpoint": profile.use_starter_checkpoint},
        "02_lambda_sweep": {"checkpoint": profile.checkpoint, "lams": list(profile.lams),
                            "n_faces": profile.n_sweep_faces,
                            "evaluator_names": list(profile.evaluators)},
        "03_identity_evaluation": {"checkpoint": profile.checkpoint, "lam": profile.demo_lam,
                                   "evaluators": list(profile.evaluators),
                                   "n_identities": profile.n_eval_identities,
                                   "lfw_pairs": profile.lfw_pairs},
        "04_user_study": {"checkpoint": profile.checkpoint, "lam": profile.demo_lam,
                          "n_persons": profile.study_persons, "evaluator": "sface"},
        "05_video_demo": {"checkpoint": profile.checkpoint, "lam": profile.demo_lam,
                          "clip": profile.clip, "max_frames": profile.max_frames},
    }[notebook]
    return {**common, **per}


@dataclass
class Runtime:
    """Resolved folders and device of a notebook run (see :func:`resolve_runtime`)."""

    results: Path
    sample: Path
    shared: Path | None
    device: str


def resolve_runtime(device: str = "auto", results_dir: str | None = None, sample_dir: str | None = None,
                    shared_data_dir: str | None = "auto", seed: int = 0) -> Runtime:
    """Resolve a notebook's parameters (``"auto"``/``None`` defaults) and seed every RNG."""
    if device in (None, "auto"):
        device = resolve_device("auto").type
    shared = paths.shared_data_dir() if shared_data_dir == "auto" else (
        Path(shared_data_dir) if shared_data_dir and Path(shared_data_dir).is_dir() else None)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    results = paths.results_dir(results_dir)
    os.environ["DEID_RESULTS"] = str(results)  # deid_core.evaluate writes where the notebook reads
    return Runtime(results=results,
                   sample=Path(sample_dir) if sample_dir else paths.sample_dir(),
                   shared=shared, device=device)


def data_sources(sample_dir: str | Path | None = None, shared_dir: str | Path | None = None,
                 user_dir: str | Path | None = None) -> list[dict]:
    """One row per data source the notebooks can use: name, path, files, licence, used by."""
    sample = Path(sample_dir) if sample_dir else paths.sample_dir()

    def count(p: Path, pattern: str = "*") -> int:
        return sum(1 for f in p.rglob(pattern) if f.is_file()) if p.is_dir() else 0

    rows = [
        {"source": "sample/portraits", "path": str(sample / "portraits"),
         "files": count(sample / "portraits"), "licence": "NASA, public domain",
         "used by": "00-05 (smoke)"},
        {"source": "sample/inflight", "path": str(sample / "inflight"),
         "files": count(sample / "inflight"), "licence": "NASA, public domain",
         "used by": "03, 04 (same-person pairs)"},
        {"source": "sample/clip", "path": str(sample / "clip"),
         "files": count(sample / "clip", "*.mp4"), "licence": "NASA, public domain",
         "used by": "05"},
    ]
    if shared_dir:
        for sub, lic in (("lfw-a", "research only"), ("celeba-aligned-10k", "CelebA: non-commercial research"),
                         ("celeba-wild-256", "CelebA: non-commercial research"),
                         ("videos", "research/demo only")):
            p = Path(shared_dir) / sub
            if p.is_dir():
                rows.append({"source": f"shared/{sub}", "path": str(p), "files": count(p),
                             "licence": lic, "used by": "where present (never committed)"})
    else:
        rows.append({"source": "shared data", "path": "(absent)", "files": 0, "licence": "",
                     "used by": "not needed by the smoke profile"})
    if user_dir:
        p = Path(user_dir)
        rows.append({"source": "--data", "path": str(p), "files": count(p), "licence": "yours",
                     "used by": "paper profile"})
    return rows

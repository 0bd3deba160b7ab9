"""Training loop (§3 "At training time", §3.2, §4) on CPU or CUDA, single process or DDP.

One iteration:
  (a) distort the batch x (scale, rotation, elastic; :mod:`deid_core.augment`);
  (b) G(distort(x), e(x)[, λ]) → z^raw, m, with e(x) the frozen identity network's
      descriptor of the undistorted image (target = source during training);
  (c) D step on δ = β·x + (1 − β)·z^masked (mixup over LSGAN, β ~ Beta(0.2, 0.2));
  (d) G step on the compound loss (:func:`deid_core.losses.compound_loss`).

Adam lr 1e-4, β = (0.5, 0.99) for both networks; batch 32 (128 px) / 64 (256 px).
The recipe (:mod:`deid_core.recipe`, ``TrainConfig.recipe``) is ``paper`` (§3.2 as written)
or ``deid`` (bounded repeller, loss-network views, patch GAN with logits, colour and mask
constraints, curriculum, EMA weights); each ``deid`` change is a switch (``options``).

CUDA: bf16 (or fp16 with a GradScaler) autocast, channels-last tensors. Multi-GPU:
launch with ``torchrun --nproc_per_node=K -m deid_core.cli train ...``; the world is read
from torchrun's environment variables (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and the
networks are wrapped in DistributedDataParallel (NCCL on CUDA, gloo on CPU). Each rank
takes its slice of the same global batch.

Checkpoints (:mod:`deid_core.train.checkpoint`) every ``ckpt_every`` steps and at the end.
Logs: ``RUN_DIR/losses.csv`` (per-term losses), TensorBoard if installed, sample grids
``RUN_DIR/samples/step_XXXXXXX.png`` (source | output | mask).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import os
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from deid_core import __version__, paths
from deid_core.augment import ViewConfig, distort, same_view
from deid_core.errors import DeidError
from deid_core.face import template_landmarks
from deid_core.identity import load_identity_network
from deid_core.losses import (PerceptualLoss, compound_loss, generator_terms, loss_discriminator,
                              loss_discriminator_ns, masked_output, mixup, sample_mixup)
from deid_core.model import (Generator, ModelConfig, build_discriminator, to_uint8,
                             load_checkpoint, resolve_device)
from deid_core.recipe import dial
from deid_core.transfer import source_transfer
from deid_core.train.checkpoint import (CHECKPOINT_NAME, atomic_save, load_matching_weights,
                                        rng_state, set_rng_state)
from deid_core.train.config import LOSS_KEYS, TrainConfig, lam_at, sample_lams
from deid_core.train.data import FaceCacheDataset, StepBatchSampler


def face_region(size: int) -> torch.Tensor:
    """1×1×S×S float mask of the template landmarks' convex hull in an aligned crop."""
    pts = np.round(template_landmarks(size)).astype(np.int32)
    region = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(pts), 1)
    return torch.from_numpy(region).float()[None, None]


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema ← β·ema + (1 − β)·model for parameters; buffers copied."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach().to(pe.dtype), 1 - beta)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


# ---------------------------------------------------------------------------- utilities
def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 by default on CUDA (fp16 if bf16 is unsupported); off on CPU."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise DeidError("fp16 autocast needs CUDA (use bf16 or off on CPU)")
        return torch.float16
    raise DeidError(f"unknown amp mode '{amp}' (auto, bf16, fp16, off)")


def save_grid(path: Path, x: torch.Tensor, z: torch.Tensor | list[torch.Tensor],
              m: torch.Tensor) -> Path:
    """PNG with one row per example: source | output(s) | mask."""
    outs = [to_uint8(zi) for zi in (z if isinstance(z, (list, tuple)) else [z])]
    mask = (m.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    mask = mask[:, 0, :, :, None].expand(-1, -1, -1, 3).numpy()
    rows = [np.concatenate([src, *(o[i] for o in outs), mask[i]], axis=1)
            for i, src in enumerate(to_uint8(x))]
    grid = np.concatenate(rows, axis=0)
    with paths.atomic_write(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(path)


def load_identity(name: str, device: torch.device):
    if name == "none":
        return None
    return load_identity_network(name, device=str(device))


def _ddp_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


# ------------------------------------------------------------------------------ trainer
class Trainer:
    """Holds networks, optimizers, loss and data for one run; :meth:`run` trains."""

    def __init__(self, cfg: TrainConfig, dataset=None, identity=None):
        self.cfg = cfg
        self.recipe = cfg.recipe_config()
        self.mcfg = cfg.model_config()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.world, self.rank, local = _ddp_env()
        self.device = resolve_device(cfg.device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", local)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.channels_last = (cfg.channels_last == "on"
                              or (cfg.channels_last == "auto" and self.device.type == "cuda"))
        self.batch = cfg.resolved_batch()
        self.schedule = cfg.resolved_schedule()
        self.out = Path(cfg.out)
        # seeds: identical init on every rank; per-rank data slices come from the sampler
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1 + 1000 * self.rank)  # aug, mixup, λ
        self.G = Generator(self.mcfg).to(self.device)
        self.D = build_discriminator(self.mcfg).to(self.device) if cfg.gan else None
        if self.channels_last:
            self.G = self.G.to(memory_format=torch.channels_last)
            if self.D is not None:
                self.D = self.D.to(memory_format=torch.channels_last)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_D = (torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=cfg.betas)
                      if self.D is not None else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.skipped_steps: dict[str, int] = {}     # optimizer steps skipped: NaN/inf gradient
        self.G_train, self.D_train = self.G, self.D
        self.G_ema = (copy.deepcopy(self.G).eval().requires_grad_(False)
                      if self.recipe.ema else None)
        self.region = face_region(self.mcfg.size).to(self.device)
        self.view = same_view(ViewConfig(), self.gen) if self.recipe.eot else None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G_train = DDP(self.G, device_ids=ids)
            if self.D is not None:
                self.D_train = DDP(self.D, device_ids=ids)
        # loss network (frozen)
        if identity is None:
            identity = load_identity(cfg.identity, self.device)
        self.perceptual = None
        if identity is not None:
            landmarks = None
            if hasattr(identity, "crop_to_chip_tensor"):
                landmarks = template_landmarks(self.mcfg.size)
            self.perceptual = PerceptualLoss(identity, cfg.loss, crop_landmarks=landmarks)
        self.dataset = dataset
        self.init_report: dict | None = None     # filled by warm_start (cfg.init)
        self.step = 0
        self.lam = lam_at(self.schedule, 0)
        self.tb = None

    # -------------------------------------------------------------------- one iteration
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def set_steps(self, steps: int) -> None:
        """Change the run length (e.g. after timing the first steps): the λ schedule and the
        recipe's curriculum are fractions of it."""
        self.cfg.steps = int(steps)
        self.schedule = self.cfg.resolved_schedule()
        self.lam = lam_at(self.schedule, self.step)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, dict | None]:
        """Target descriptor e(x) and the source/target features (no gradient)."""
        if self.perceptual is None:
            return torch.zeros(x.shape[0], self.mcfg.id_dim, device=x.device), None
        with torch.no_grad():
            feats = {k: v.detach().float() for k, v in self.perceptual.features(x).items()}
        return feats[self.perceptual.descriptor], feats

    def _step_if_finite(self, opt: torch.optim.Optimizer, net: torch.nn.Module, name: str) -> None:
        """Optimizer step unless a gradient is NaN/inf: one bad batch must not poison the
        weights (a run then dies many steps later). fp16's GradScaler already skips such
        steps itself; bf16 and fp32 have no scaler, so the check is done here."""
        if self.scaler.is_enabled():
            self.scaler.step(opt)
            return
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            self.skipped_steps[name] = self.skipped_steps.get(name, 0) + 1
            opt.zero_grad(set_to_none=True)
            return
        opt.step()

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        """One D + G update on the batch x (N×3×S×S in [−1, 1]); returns per-term losses."""
        cfg, rc, n = self.cfg, self.recipe, x.shape[0]
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_in = distort(x, cfg.augment, generator=self.gen)
        mix_beta = sample_mixup(n, cfg.loss.mixup_alpha, generator=self.gen).to(self.device)
        if self.mcfg.lam_cond:
            uniform = rc.lam_sampling == "uniform"
            lam = sample_lams(n, (0.0, rc.lam_max) if uniform else cfg.lam_range,
                              cfg.lam_zero_prob, self.gen, uniform=uniform).to(self.device)
        else:
            lam = torch.full((n,), self.lam, device=self.device)
        ramp = rc.ramp_factor(self.step, cfg.steps)
        e, feat_x = self.embed(x)
        with self._autocast():
            z_raw, mask = self.G_train(x_in, e, lam if self.mcfg.lam_cond else None, source=x)
        z_raw = source_transfer(z_raw.float(), x, self.mcfg)
        mask = mask.float()
        z_masked = masked_output(z_raw, mask, x)
        out: dict[str, float] = {}
        # (c) discriminator step on the mixup of real and (masked, with gan_raw also raw) output
        d_out_g = d_out_raw = None
        if self.D is not None:
            self.opt_D.zero_grad(set_to_none=True)
            with self._autocast():
                d_out = self.D_train(mixup(x, z_masked.detach(), mix_beta))
                d_raw = (self.D_train(mixup(x, z_raw.detach(), mix_beta))
                         if rc.gan == "ns" and rc.gan_raw else None)
            if rc.gan == "ns":
                loss_d = loss_discriminator_ns(d_out, mix_beta)
                if d_raw is not None:
                    loss_d = loss_d + loss_discriminator_ns(d_raw, mix_beta)
            else:
                loss_d = loss_discriminator(d_out, mix_beta)
            self.scaler.scale(loss_d).backward()
            self._step_if_finite(self.opt_D, self.D, "D")
            d_logged = loss_d.detach()
            self.D.requires_grad_(False)
            with self._autocast():   # unwrapped D: no DDP sync
                if rc.gan == "ns":
                    d_out_g = self.D(z_masked)
                    d_out_raw = self.D(z_raw) if rc.gan_raw else None
                else:
                    d_out_g = self.D(mixup(x, z_masked, mix_beta))
        # (d) generator step on the compound loss
        self.opt_G.zero_grad(set_to_none=True)
        terms = generator_terms(x, z_raw, mask, d_out=d_out_g, mix_beta=mix_beta,
                                perceptual=self.perceptual, feat_x=feat_x, lam=lam, recipe=rc,
                                ramp=ramp, d_out_raw=d_out_raw, face_region=self.region,
                                view=self.view)
        total = compound_loss(terms, cfg.loss, rc)
        self.scaler.scale(total).backward()
        self._step_if_finite(self.opt_G, self.G, "G")
        self.scaler.update()
        if self.D is not None:
            self.D.requires_grad_(True)
        self.step += 1
        if self.G_ema is not None:   # StyleGAN2-ADA's EMA: half-life ema_kimg, ramped up
            nimg = self.step * self.batch
            ema_nimg = min(rc.ema_kimg * 1000, nimg * rc.ema_rampup)
            ema_update(self.G_ema, self.G, 0.5 ** (self.batch / max(ema_nimg, 1e-8)))
        logged = {k: v.detach().float() for k, v in terms.items()}
        logged["total"] = total.detach().float()
        logged["lam"] = lam.float().mean()
        if self.D is not None:
            logged["D"] = d_logged.float()
        values = torch.stack(list(logged.values())).tolist()   # one device sync per step
        out.update(zip(logged, values))
        out["skipped"] = float(sum(self.skipped_steps.values()))
        out["ramp"] = ramp
        self.lam = lam_at(self.schedule, self.step)
        return out

    # ------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "config": {"model": self.mcfg.to_dict(), "train": self.cfg.to_dict(),
                       "recipe": self.recipe.to_dict()},
            "generator": self.G.state_dict(),
            "generator_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "discriminator": self.D.state_dict() if self.D is not None else None,
            "optimizer": {"G": self.opt_G.state_dict(),
                          "D": self.opt_D.state_dict() if self.opt_D else None,
                          "scaler": self.scaler.state_dict()},
            "step": self.step,
            "lam_state": {"schedule": self.schedule, "lam": self.lam,
                          "conditioned": self.mcfg.lam_cond, "range": list(self.cfg.lam_range),
                          "zero_prob": self.cfg.lam_zero_prob, "lam_unit": self.cfg.loss.lam_unit},
            "rng": rng_state(self.gen),
            "deid_version": __version__,
        }

    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        if self.rank != 0:
            return None
        return atomic_save(self.state_dict(), Path(path or self.out / CHECKPOINT_NAME))

    def load_checkpoint(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise DeidError(f"no checkpoint to resume from at {path}")
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False), str(path))

    def load_state_dict(self, ck: dict, where: str = "state") -> None:
        """Restore networks, optimizers, step, λ and RNG states from :meth:`state_dict`."""
        saved = ModelConfig.from_dict(ck["config"]["model"])
        for k in ("detail_sigma", "source_chroma", "warp_at"):   # no weights: may change between runs
            setattr(saved, k, getattr(self.mcfg, k))
        if saved != self.mcfg:
            raise DeidError(f"{where} was trained with another model config ({saved.name}); "
                            f"cannot resume as {self.mcfg.name}")
        self.G.load_state_dict(ck["generator"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(ck.get("generator_ema") or ck["generator"])
        if self.D is not None and ck.get("discriminator") is not None:
            self.D.load_state_dict(ck["discriminator"])
        self.opt_G.load_state_dict(ck["optimizer"]["G"])
        if self.opt_D is not None and ck["optimizer"].get("D") is not None:
            self.opt_D.load_state_dict(ck["optimizer"]["D"])
        self.scaler.load_state_dict(ck["optimizer"]["scaler"])
        self.step = int(ck["step"])
        self.lam = lam_at(self.schedule, self.step)
        set_rng_state(ck["rng"], self.gen)

    def warm_start(self, path: str | Path, probe: torch.Tensor | None = None) -> dict:
        """Copy every generator (and discriminator) tensor of ``path`` whose name and shape
        match this run's networks; the rest keep their initialisation. A generator saved
        without ``id_norm`` gets its decoder FC columns rescaled by the rms its latent and
        descriptor had on ``probe`` faces (float N×3×S×S in [−1, 1]; default: the first
        faces of the dataset), so the warm-started network starts from the same function."""
        ck = load_checkpoint(path)
        src_cfg = ModelConfig.from_dict(ck["config"]["model"])
        report = {"from": str(path), "generator": 0, "skipped": [], "discriminator": 0}
        src = {k: v.float() for k, v in (ck.get("generator_ema") or ck["generator"]).items()}
        if self.mcfg.id_norm and not src_cfg.id_norm and "dec_fc.weight" in src and self.perceptual:
            src["dec_fc.weight"] = self._fold_id_norm(src_cfg, ck, src["dec_fc.weight"], probe)
        report["generator"], report["skipped"] = load_matching_weights(self.G, src)
        if self.G_ema is not None:
            self.G_ema.load_state_dict(self.G.state_dict())
        if self.D is not None and ck.get("discriminator"):
            report["discriminator"], _ = load_matching_weights(
                self.D, {k: v.float() for k, v in ck["discriminator"].items()})
        return report

    @torch.no_grad()
    def _fold_id_norm(self, src_cfg: ModelConfig, ck: dict, w: torch.Tensor,
                      probe: torch.Tensor | None = None) -> torch.Tensor:
        """dec_fc columns × the rms of latent / descriptor (measured on the probe faces)."""
        G0 = Generator(src_cfg)
        load_matching_weights(G0, {k: v.float() for k, v in ck["generator"].items()})
        x = self._probe_faces() if probe is None else probe.detach().float().cpu()
        e, _ = self.embed(x.to(self.device))
        h = G0.enc_in(x)
        for down in G0.enc_down:
            h = down(h)
        rms_l = G0.enc_fc(h.flatten(1)).square().mean().sqrt().item()
        rms_e = e.float().square().mean().sqrt().item()
        w = w.clone()
        w[:, :src_cfg.latent_dim] *= rms_l
        w[:, src_cfg.latent_dim:src_cfg.latent_dim + src_cfg.id_dim] *= rms_e
        return w

    def _probe_faces(self) -> torch.Tensor:
        if self.dataset is not None and len(self.dataset):
            return torch.stack([self.dataset[i] for i in range(min(8, len(self.dataset)))])
        return torch.zeros(1, 3, self.mcfg.size, self.mcfg.size)

    # -------------------------------------------------------------------------- logging
    def _log(self, row: dict) -> None:
        path = self.out / "losses.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=("step",) + LOSS_KEYS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"loss/{k}", v, row["step"])

    def _truncate_log(self) -> None:
        """On resume: drop CSV rows written after the checkpoint's step."""
        path = self.out / "losses.csv"
        if not path.is_file():
            return
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        with paths.atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=("step",) + LOSS_KEYS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    @torch.no_grad()
    def sample(self, x: torch.Tensor, path: Path) -> Path:
        """PNG grid, one row per face: source | outputs at 5 dial positions (λ-conditioned;
        else the current λ) | raw output and mask at the top position. Uses the EMA
        generator if any."""
        x = x.to(self.device)
        e, _ = self.embed(x)
        G = self.G_ema if self.G_ema is not None else self.G
        lams = dial(self.recipe, 5) if self.mcfg.lam_cond else [self.lam]
        if self.mcfg.lam_cond and self.recipe.lam_sampling != "uniform":
            lams = [0.0] + list(np.geomspace(self.cfg.lam_range[0], self.cfg.lam_range[1], 4))
        outs, mask = [], None
        for lam in lams:
            with self._autocast():
                z, m = G(x, e, lam if self.mcfg.lam_cond else None)
            z = source_transfer(z.float(), x, self.mcfg)
            outs.append(masked_output(z, m.float(), x))
            mask = m.float()
        return save_grid(path, x, outs + [z.float()], mask)

    # ---------------------------------------------------------------------------- run
    def fit(self, resume: bool = False, progress: bool = True, until: int | None = None
            ) -> list[dict]:
        """Train until ``cfg.steps`` (or stop early at step ``until``, checkpointing as at
        the end, e.g. to continue in a later session); returns this call's loss rows."""
        from tqdm import tqdm  # not on the GPU image (scripts/gpu/importguard.py)
        cfg = self.cfg
        if self.dataset is None:
            if not cfg.data:
                raise DeidError("no training data: give one or more face caches (--data)")
            self.dataset = FaceCacheDataset(cfg.data, size=self.mcfg.size,
                                            exclude_persons=cfg.exclude_persons,
                                            preload=cfg.preload)
        if getattr(self.dataset, "size", self.mcfg.size) != self.mcfg.size:
            raise DeidError(f"data crops are {self.dataset.size}² but {self.mcfg.name} needs "
                            f"{self.mcfg.size}²")
        if not resume and self.rank == 0 and any(
                (self.out / n).exists() for n in (CHECKPOINT_NAME, "losses.csv")):
            raise DeidError(f"{self.out} already holds a training run: pass --resume to continue "
                            f"it, or choose a new --out (nothing is overwritten)")
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(
                {"model": self.mcfg.to_dict(), "train": cfg.to_dict(),
                 "recipe": self.recipe.to_dict()}, indent=1, default=str))
        if cfg.init and not resume and self.init_report is None:
            self.init_report = self.warm_start(cfg.init)
            if self.rank == 0:
                print(f"warm start from {cfg.init}: {self.init_report['generator']} generator "
                      f"tensors, {len(self.init_report['skipped'])} kept fresh")
        if resume:
            self.load_checkpoint(self.out / CHECKPOINT_NAME)
            if self.rank == 0:
                self._truncate_log()
        if self.rank == 0 and self.tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional (tensorboard package)
                self.tb = SummaryWriter(str(self.out / "tb"))
            except Exception:
                self.tb = None
        stop = min(cfg.steps, until) if until else cfg.steps
        sampler = StepBatchSampler(len(self.dataset), self.batch, cfg.seed, self.step,
                                   self.rank, self.world, stop)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.workers,
                            pin_memory=self.device.type == "cuda")
        picks = np.linspace(0, len(self.dataset) - 1, min(8, len(self.dataset))).round().astype(int)
        fixed = torch.stack([self.dataset[int(i)] for i in picks])   # spread over persons
        rows: list[dict] = []
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.mcfg.name}",
                   unit="it", disable=not progress or self.rank != 0)
        self.G.train()
        t0 = time.perf_counter()
        for x in loader:
            out = self.train_step(x)
            row = {"step": self.step, **out}
            rows.append(row)
            if self.rank == 0:
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(row)
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.sample(fixed, self.out / "samples" / f"step_{self.step:07d}.png")
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save_checkpoint()
            bar.update(1)
            bar.set_postfix(loss=f"{out['total']:.3f}", R=f"{out['R_raw']:.3f}",
                            lam=f"{out['lam']:.2g}")
        bar.close()
        if self.rank == 0:
            self.save_checkpoint()
            self.sample(fixed, self.out / "samples" / f"step_{self.step:07d}.png")
            if self.tb is not None:
                self.tb.flush()
        self.seconds = time.perf_counter() - t0
        return rows


def train(cfg: TrainConfig, resume: bool = False, dataset=None, identity=None,
          progress: bool = True, until: int | None = None) -> Trainer:
    """Build a :class:`Trainer` and run it; returns the trainer (history in ``.history``)."""
    trainer = Trainer(cfg, dataset=dataset, identity=identity)
    trainer.history = trainer.fit(resume=resume, progress=progress, until=until)
    if trainer.world > 1:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    return trainer

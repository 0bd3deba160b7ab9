"""Rebuild one loadable checkpoint from the files a GPU job returned.

    python scripts/gpu/unpack.py RETURNED_DIR OUT.pt [--lam L]

Merges the fp16 generator shards (``generator_fp16_K.pt``, EMA weights when the recipe keeps
them), adds the discriminator and the job's ``bench.json`` (``gpu_job``), and writes a
checkpoint in the ``deid export`` format: ``deid image|video|eval --checkpoint OUT.pt`` use it,
and ``scripts/gpu/pack.sh --init OUT.pt`` continues from it on the next GPU run. ``--lam``
sets the default dial position of a λ-conditioned model. Never writes over an existing file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.model import Generator, ModelConfig

PREFIX = "generator_fp16_"


def unpack(src: Path, dst: Path, lam: float | None = None) -> dict:
    """Merge the job's files in ``src`` into the checkpoint ``dst``; returns it."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise DeidError(f"{dst} exists: choose another output (nothing is overwritten)")
    files = sorted(src.glob(f"{PREFIX}*.pt"), key=lambda p: int(p.stem[len(PREFIX):]))
    if not files:
        raise DeidError(f"no {PREFIX}*.pt in {src}: not the output of scripts/gpu/job.sh")
    parts = [torch.load(f, map_location="cpu", weights_only=False) for f in files]
    head = parts[0]
    if [p["part"] for p in parts] != list(range(head["parts"])):
        raise DeidError(f"{src}: generator parts {[p['part'] for p in parts]} of {head['parts']}")
    if any(p["config"] != head["config"] or p["step"] != head["step"] for p in parts):
        raise DeidError(f"{src}: generator parts come from different saves (config or step)")
    gen = {k: v for p in parts for k, v in p["generator"].items()}
    G = Generator(ModelConfig.from_dict(head["config"]["model"]))
    try:
        G.load_state_dict({k: v.float() for k, v in gen.items()})
    except RuntimeError as exc:
        raise DeidError(f"{src}: generator weights do not match their config: {exc}") from exc
    lam_state = dict(head.get("lam_state") or {})
    lam_state["schedule"] = [list(map(float, s)) for s in lam_state.get("schedule", [])]
    if lam is not None:
        if not head["config"]["model"].get("lam_cond"):
            raise DeidError("--lam sets the default λ of a λ-conditioned model; this one has a "
                            "fixed λ")
        lam_state["lam"] = float(lam)
    d_path = src / "discriminator.pt"
    disc = torch.load(d_path, map_location="cpu", weights_only=False) if d_path.is_file() else None
    bench_path = src / "bench.json"
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None
    doc = {"config": head["config"], "generator": gen, "generator_is_ema": head.get("ema"),
           "discriminator": disc["discriminator"] if disc else None, "step": int(head["step"]),
           "lam_state": lam_state, "deid_version": head.get("deid_version"), "gpu_job": bench}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.atomic_write_path(dst)
    torch.save(doc, tmp)
    os.replace(tmp, dst)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="folder of the returned files")
    p.add_argument("dst", help="checkpoint to write (.pt)")
    p.add_argument("--lam", type=float, default=None, help="default λ (λ-conditioned models)")
    a = p.parse_args(argv)
    try:
        doc = unpack(Path(a.src), Path(a.dst), a.lam)
    except DeidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bench = doc["gpu_job"] or {}
    print(f"{a.dst}: {doc['config']['model']['name']}, step {doc['step']}, "
          f"ema {doc['generator_is_ema']}, GPU {bench.get('gpu')}, "
          f"{bench.get('train_img_per_s')} img/s, status {bench.get('status')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

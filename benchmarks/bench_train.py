"""Training throughput (images/s) per preset, with the real dlib loss network, as a ratio
against compact-128 measured in the same process.

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--device cpu|cuda] [--batch 4]
        [--steps 2] [--presets compact-128 paper-128 paper-256] [--amp off|bf16] [--csv FILE]

Each preset: one warm-up iteration, then ``--steps`` timed iterations (D + G update, the
full compound loss) on random aligned-face-sized batches. On CUDA pass ``--amp bf16`` to
compare against fp32 (run it twice).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deid_core.identity import load_identity_network  # noqa: E402
from deid_core.train import InMemoryFaces  # noqa: E402
from deid_core.model import ModelConfig, count_parameters  # noqa: E402
from deid_core.train import Trainer, TrainConfig  # noqa: E402


def bench(preset: str, batch: int, steps: int, device: str, amp: str, identity) -> dict:
    size = ModelConfig.preset(preset).size
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    cfg = TrainConfig(preset=preset, out="unused", batch=batch, device=device, amp=amp, steps=10)
    t = Trainer(cfg, dataset=None, identity=identity)
    t.train_step(x)                                  # warm-up
    if t.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        t.train_step(x)
    if t.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    row = {"preset": preset, "device": str(t.device), "amp": str(t.amp_dtype), "batch": batch,
           "steps": steps, "s_per_it": dt / steps, "images_per_s": batch * steps / dt,
           "gen_params": count_parameters(t.G)}
    if t.device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--amp", default="off")
    ap.add_argument("--presets", nargs="+", default=["compact-128", "paper-128", "paper-256"])
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    identity = load_identity_network("dlib", device=args.device)
    presets = ["compact-128"] + [p for p in args.presets if p != "compact-128"]
    rows = [bench(p, args.batch, args.steps, args.device, args.amp, identity) for p in presets]
    base = rows[0]["images_per_s"]
    print(f"threads={torch.get_num_threads()} device={args.device} amp={args.amp} batch={args.batch}")
    print(f"{'preset':<22}{'G params':>12}{'s/it':>9}{'img/s':>9}{'vs compact':>12}")
    for r in rows:
        r["ratio_vs_compact128"] = r["images_per_s"] / base
        print(f"{r['preset']:<22}{r['gen_params']:>12,}{r['s_per_it']:>9.2f}"
              f"{r['images_per_s']:>9.2f}{r['ratio_vs_compact128']:>12.2f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()

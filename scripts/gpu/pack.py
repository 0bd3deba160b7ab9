"""Build ``.carry/``: everything the GPU job needs that git does not carry (called by pack.sh).

- ``faces/``: training faces (prepared 128-px caches, §4's mixed sources) as JPEG shards,
  every person of the held-out folder left out, LFW never; as many faces as fit the size
  budget, drawn round-robin over persons so that every identity is represented;
- ``heldout/``: the held-out sample portraits aligned at 128 px (§3 c–d), for the sample grid;
- ``dlib_resnet29_fp16.pt``: the loss network (§3.2.1) as fp16 torch tensors (no dlib there);
- ``init.pt`` (only when the weights to continue from are not a tracked file, which travels
  anyway): fp16 generator + discriminator;
- ``manifest.json``: what is where, written last.

It then prints the size of everything that travels (tracked + untracked-not-ignored files
+ ``.carry/``) against the limits (64 MiB in all, 40 MiB for ``.carry/``) and what to move
aside when over. The carry is built in ``.carry-new/`` and renamed; an existing ``.carry/`` is
kept unless ``--replace``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shards  # noqa: E402
from job import as_trained  # noqa: E402
from deid_core import paths  # noqa: E402
from deid_core.face import IMAGE_SUFFIXES, AlignConfig, FaceAligner, read_image  # noqa: E402
from deid_core.train import TrainConfig, read_face_index  # noqa: E402
from deid_core.errors import DeidError  # noqa: E402
from deid_core.identity.dlib_resnet import export_dlib_weights  # noqa: E402
from deid_core.model import ModelConfig, load_checkpoint  # noqa: E402

MiB = 1 << 20
REPO = paths.REPO_ROOT
DLIB_NAME = "dlib_resnet29_fp16.pt"
JOB_PRESET = "compact-128w-lamcond"     # the preset the deid recipe was tuned on (model card)


def held_out_persons(folder: Path) -> list[str]:
    """Persons of a flat folder (file stems) or a folder-per-person tree (folder names)."""
    out = set()
    for p in folder.rglob("*"):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            rel = p.relative_to(folder)
            out.add(rel.parts[0] if len(rel.parts) > 1 else p.stem)
    return sorted(out)


def round_robin(records: list[dict], seed: int) -> list[dict]:
    """Records ordered so that any prefix spreads over as many persons as possible."""
    rng = random.Random(seed)
    by_person: dict[str, list[dict]] = {}
    for r in records:
        by_person.setdefault(r["person"], []).append(r)
    queues = [rng.sample(v, len(v)) for _, v in sorted(by_person.items())]
    rng.shuffle(queues)
    out = []
    while queues:
        queues = [q for q in queues if q]
        for q in queues:
            out.append(q.pop())
    return out


def encode_caches(caches: list[Path], exclude: set[str], quality: int, size: int,
                  budget: int, seed: int) -> tuple[list[bytes], list[str], dict]:
    """JPEG bytes and person ids of the cache faces that fit ``budget`` bytes."""
    records = []
    for root in caches:
        meta = json.loads((root / "meta.json").read_text())
        if int(meta["size"]) != size:
            raise DeidError(f"{root}: faces are {meta['size']} px, expected {size}")
        if "lfw" in root.name.lower():
            raise DeidError(f"{root}: LFW is evaluation data and never trains")
        for r in read_face_index(root):
            if r["person"] not in exclude:
                records.append({"file": root / r["path"], "person": f"{root.name}/{r['person']}",
                                "source": root.name})
    jpegs, persons, sources, used = [], [], {}, 0
    for r in round_robin(records, seed):
        data = shards.encode_jpeg(read_image(r["file"]), quality)
        if used + len(data) > budget:
            break
        jpegs.append(data)
        persons.append(r["person"])
        sources[r["source"]] = sources.get(r["source"], 0) + 1
        used += len(data)
    info = {"available": len(records), "packed": len(jpegs), "bytes": used,
            "persons_packed": len(set(persons)),
            "persons_available": len({r["person"] for r in records})}
    return jpegs, persons, {"sources": sources, **info}


def align_folder(folder: Path, size: int) -> tuple[list[np.ndarray], list[str]]:
    """Aligned crops (largest face of each image) and persons of a flat image folder."""
    aligner = FaceAligner(AlignConfig(size=size))
    crops, persons = [], []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        img = read_image(p)
        faces = aligner.detect(img)
        if faces:
            crops.append(aligner.warp(img, aligner.transform(faces[0].landmarks)))
            persons.append(p.stem)
    if not crops:
        raise DeidError(f"no face found in {folder}")
    return crops, persons


def git_files(*args: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=REPO, capture_output=True,
                         check=True).stdout.decode()
    return [REPO / f for f in out.split("\0") if f and (REPO / f).is_file()]


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def is_tracked(path: Path) -> bool:
    try:
        rel = path.resolve().relative_to(REPO)
    except ValueError:
        return False
    return subprocess.run(["git", "ls-files", "--error-unmatch", str(rel)], cwd=REPO,
                          capture_output=True).returncode == 0


def default_init() -> Path | None:
    starters = sorted((REPO / "data" / "checkpoints").glob("*_starter.pt"),
                      key=lambda p: p.stat().st_mtime)
    return starters[-1] if starters else None


def write_init(src: Path, dst: Path) -> dict:
    """fp16 generator (EMA when there is one) + discriminator of a checkpoint, with its
    config (model, recipe), in the export format."""
    ck = load_checkpoint(src)
    half = lambda sd: {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    weights = ck.get("generator_ema") or ck["generator"]     # a training run's EMA weights
    doc = {"config": ck["config"], "generator": half(weights),
           "step": int(ck.get("step", 0)), "lam_state": ck.get("lam_state", {}),
           "deid_version": ck.get("deid_version")}
    if ck.get("discriminator") is not None:
        doc["discriminator"] = ck["discriminator"]
    torch.save(doc, dst)
    return ck["config"]


def job_model_config(preset: str, recipe: str) -> dict:
    """The model config the job will train: the preset with the recipe's model fields."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {"preset": preset, **({"recipe": recipe} if "recipe" in names else {})}
    return TrainConfig(**kw).model_config().to_dict()


def report_sizes(carry: Path, max_total: int, max_carry: int, needed: set[Path]) -> bool:
    """Print what travels; suggest what to move aside when over. True when within limits."""
    tracked = git_files()
    untracked = git_files("--others", "--exclude-standard")
    t_b = sum(p.stat().st_size for p in tracked)
    u_b = sum(p.stat().st_size for p in untracked)
    c_b = tree_bytes(carry)
    total = t_b + u_b + c_b
    print(f"travels: tracked {t_b / MiB:.1f} MiB ({len(tracked)} files) + untracked "
          f"{u_b / MiB:.2f} MiB ({len(untracked)}) + .carry {c_b / MiB:.1f} MiB = "
          f"{total / MiB:.1f} MiB (limits: {max_total / MiB:.0f} in all, {max_carry / MiB:.0f} "
          f"for .carry)")
    for p in sorted(carry.rglob("*")):
        if p.is_file() and p.stat().st_size > MiB // 2:
            print(f"  .carry/{p.relative_to(carry)}: {p.stat().st_size / MiB:.1f} MiB")
    ok = total <= max_total and c_b <= max_carry
    if not ok:
        over = total - max_total
        print(f"OVER by {max(over, c_b - max_carry) / MiB:.1f} MiB. Move aside before the run "
              f"(outside the checkout; put back after), largest first, files the job does not "
              f"read:")
        keep = {p.resolve() for p in needed}
        cand = sorted(((p.stat().st_size, p) for p in tracked + untracked
                       if p.resolve() not in keep and "deid_core" not in p.parts
                       and "gpu" not in p.parts), reverse=True)
        freed = 0
        for size, p in cand:
            if freed >= over:
                break
            print(f"  {size / MiB:6.2f} MiB  {p.relative_to(REPO)}")
            freed += size
        if c_b > max_carry:
            print("  or re-run pack.sh with a smaller --faces-mib")
    return ok


def main(argv: list[str] | None = None) -> int:
    cache = paths.cache_dir() / "faces"
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--carry", default=str(REPO / ".carry"))
    p.add_argument("--caches", nargs="*", default=None,
                   help="prepared face caches (default: celeba-wild-256 and nasa-portraits "
                        "under DEID_CACHE/faces, + celeba-aligned-10k with --aligned-10k)")
    p.add_argument("--aligned-10k", action="store_true")
    p.add_argument("--hold-out", default=str(REPO / "data" / "sample" / "portraits"))
    p.add_argument("--init", default=None, help="weights to continue from (default: the "
                   "newest data/checkpoints/*_starter.pt; 'none': train from scratch)")
    p.add_argument("--preset", default=None, help="model the job trains (default: the init "
                   f"weights' preset when they are a model of --recipe, else {JOB_PRESET})")
    p.add_argument("--recipe", default="deid", help="training recipe of the job (default: deid)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the face shards")
    p.add_argument("--faces-mib", type=float, default=None,
                   help="size budget of the face shards (default: all that fits the limits)")
    p.add_argument("--max-total-mib", type=float, default=64.0)
    p.add_argument("--max-carry-mib", type=float, default=40.0)
    p.add_argument("--margin-mib", type=float, default=1.5,
                   help="kept free for files others add to the tree before the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true",
                   help="dry-run carry from the embedded sample alone (no shared data)")
    p.add_argument("--replace", action="store_true", help="replace an existing carry folder")
    p.add_argument("--check", action="store_true",
                   help="only print what would travel now (no build): run just before the GPU call")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    carry = Path(a.carry).resolve()
    if a.check:
        return 0 if report_sizes(carry, int(a.max_total_mib * MiB), int(a.max_carry_mib * MiB),
                                 set()) else 2
    if carry.exists() and not a.replace:
        raise DeidError(f"{carry} exists: pass --replace to rebuild it (nothing is overwritten)")
    new = carry.with_name(carry.name + "-new")
    if new.exists():
        shutil.rmtree(new)   # our own unfinished build
    new.mkdir(parents=True)
    manifest: dict = {"format": "deid-gpu-carry-1", "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "size": a.size}
    # loss network and held-out faces
    export_dlib_weights(new / DLIB_NAME)
    manifest["dlib"] = DLIB_NAME
    held_dir = Path(a.hold_out)
    crops, held = align_folder(held_dir, a.size)
    if a.tiny:   # dry run: the first 8 sample persons are held out, the rest train
        train_crops, train_persons = crops[8:], held[8:]
        crops, held = crops[:8], held[:8]
    shards.write_shards(new / "heldout", [shards.encode_jpeg(c, 95) for c in crops], held,
                        a.size, 95, {held_dir.name: len(crops)})
    manifest.update(heldout="heldout", heldout_persons=held)
    # weights to continue from
    init = None if a.init == "none" else (Path(a.init) if a.init else default_init())
    needed = set()
    if init is not None:
        if is_tracked(init):
            manifest["init"] = str(init.resolve().relative_to(REPO))
            init_cfg = load_checkpoint(init)["config"]
            needed.add(init)
        else:
            init_cfg = write_init(init, new / "init.pt")
            manifest["init"] = "init.pt"
        model = init_cfg["model"]
        manifest["init_preset"] = model.get("name")
        manifest["init_recipe"] = (init_cfg.get("recipe") or {}).get("name", "paper")
        manifest["init_source"] = str(init)
    else:
        manifest["init"] = None
    # continue a model of this recipe as it is; otherwise train the preset the recipe was
    # tuned on (the old paper-recipe starter's decoder is 8 channels wide at 128 px)
    same_recipe = manifest.get("init_recipe") == a.recipe
    manifest["preset"] = a.preset or (manifest["init_preset"] if same_recipe else JOB_PRESET)
    manifest["recipe"] = a.recipe
    if init is not None:
        want = ModelConfig.from_dict(job_model_config(manifest["preset"], a.recipe))
        # the job continues a model of its own preset and recipe as trained (job.as_trained)
        continued = bool(as_trained({"config": init_cfg}, manifest["preset"], a.recipe))
        manifest["init_matches"] = continued or ModelConfig.from_dict(model) == want
        if not manifest["init_matches"]:
            print(f"NOTE: {init.name} is not a {manifest['preset']} model of the {a.recipe} recipe "
                  f"(its config differs): the job warm-starts the tensors whose names and "
                  f"shapes match (Trainer.warm_start) and trains the rest from scratch, the "
                  f"recipe's curriculum included.")
    # training faces within the budget
    used = tree_bytes(new)
    if a.tiny:
        jpegs = [shards.encode_jpeg(c, a.quality) for c in train_crops]
        persons = train_persons
        finfo = {"sources": {"sample-portraits": len(jpegs)}, "packed": len(jpegs)}
    else:
        caches = ([Path(c) for c in a.caches] if a.caches is not None else
                  [cache / f"celeba-wild-256_s{a.size}_hog", cache / f"nasa-portraits_s{a.size}_hog"]
                  + ([cache / f"celeba-aligned-10k_s{a.size}_yunet"] if a.aligned_10k else []))
        for c in caches:
            if not (c / "index.jsonl").is_file():
                raise DeidError(f"face cache {c} not prepared: run scripts/gpu/pack.sh (it runs "
                                f"`deid prepare`)")
        tracked = sum(f.stat().st_size for f in git_files())
        untracked = sum(f.stat().st_size for f in git_files("--others", "--exclude-standard"))
        budget = min(a.max_carry_mib * MiB - used,
                     (a.max_total_mib - a.margin_mib) * MiB - tracked - untracked - used)
        if a.faces_mib is not None:
            budget = min(budget, a.faces_mib * MiB)
        budget -= 64 * 1024   # index files
        if budget < 4 * MiB:
            raise DeidError(f"only {budget / MiB:.1f} MiB left for faces: move files aside "
                            f"(see below) or lower --max-carry-mib's other contents")
        jpegs, persons, finfo = encode_caches(caches, set(held_out_persons(held_dir)),
                                              a.quality, a.size, int(budget), a.seed)
        finfo["budget_mib"] = round(budget / MiB, 2)
        print(f"faces: {finfo['packed']} of {finfo['available']} ({finfo['persons_packed']} of "
              f"{finfo['persons_available']} persons) in {finfo['bytes'] / MiB:.1f} MiB "
              f"(q{a.quality}); by source: {finfo['sources']}")
    shards.write_shards(new / "faces", jpegs, persons, a.size, a.quality, finfo["sources"])
    manifest.update(faces="faces", faces_info=finfo, quality=a.quality, tiny=a.tiny,
                    held_out_folder=str(held_dir))
    tmp = new / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, new / "manifest.json")
    if carry.exists():
        shutil.rmtree(carry)
    os.replace(new, carry)
    print(f"carry written to {carry} in {time.perf_counter() - t0:.0f} s")
    ok = report_sizes(carry, int(a.max_total_mib * MiB), int(a.max_carry_mib * MiB), needed)
    return 0 if ok or a.tiny else 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DeidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

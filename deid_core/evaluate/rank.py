"""Table 4 (paper §4): rank of the true identity among all gallery identities (``deid eval rank``),
and its small version on a handful of identities (notebook 03).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from deid_core import paths
from deid_core.evaluate import metrics
from deid_core.evaluate.conditions import condition_transforms, shared_dataset, load_evaluators
from deid_core.evaluate.embed import embed_files, net_fingerprint
from deid_core.evaluate.faces import dataset_landmarks, scan_folder_dataset
from deid_core.evaluate.gallery import GalleryIndex, build_gallery, split_probes
from deid_core.evaluate.table_writer import write_table


PAPER_TABLE4_AVERAGE = {"original": "median 1, mean 17 (of 54,000)",
                        "deid-low": "median 3773 (7.0 %), mean 3726",
                        "deid-high": "median 2776 (5.1 %), mean 3155"}


# ----------------------------------------------------------------------------- Table 4
def table4(net, lfw_root, extra_roots: Sequence = (), transforms: dict | None = None,
           max_probes_per_identity: int = 10, n_probe_identities: int | None = None,
           max_gallery_images: int | None = None, max_extra_identities: int | None = None,
           n_person_rows: int = 6, seed: int = 0, name: str = "table4_rank",
           notes: Sequence[str] = (), progress: bool = True) -> pd.DataFrame:
    """Table 4: rank of the true identity among all gallery identities (cosine to the mean
    gallery embedding), original vs each transform, per person (the ``n_person_rows`` identities
    with most probes) and overall.

    Gallery: every identity of ``lfw_root`` (held-out probe images excluded) plus the identities of
    each ``extra_roots`` folder (distractors), optionally capped for compute.
    """
    rng = np.random.default_rng(seed)
    ds = scan_folder_dataset(lfw_root)
    lm, _ = dataset_landmarks(ds, progress=progress)
    probe, gallery = split_probes(ds.identities, max_probes_per_identity, seed)
    ids = np.asarray(ds.identities)
    if n_probe_identities is not None:
        pid = np.unique(ids[probe])
        keep = set(rng.choice(pid, min(n_probe_identities, len(pid)), replace=False).tolist())
        probe = np.array([i for i in probe if ids[i] in keep], np.int64)
    if max_gallery_images is not None:
        g = []
        for n in np.unique(ids[gallery]):
            members = gallery[ids[gallery] == n]
            g.extend(rng.permutation(members)[:max_gallery_images].tolist())
        gallery = np.sort(np.array(g, np.int64))
    cache = paths.cache_dir() / "eval" / "galleries"
    fp = net_fingerprint(net)
    tag = f"{net.name}-{fp}-{ds.root.name}-s{seed}-p{max_probes_per_identity}-g{max_gallery_images}"
    gals = [build_gallery(ds, lambda f: embed_files(net, ds, lm, f, progress=False),
                          cache / tag, indices=gallery, progress=progress)]
    prefixes = [""]
    for r in extra_roots:
        e = scan_folder_dataset(r)
        names = e.names[:max_extra_identities] if max_extra_identities else e.names
        keep_n = set(names)
        idx = [i for i, n in enumerate(e.identities) if n in keep_n]
        elm, _ = dataset_landmarks(e, progress=progress)
        gals.append(build_gallery(e, lambda f, e=e, elm=elm: embed_files(net, e, elm, f, progress=False),
                                  cache / f"{net.name}-{fp}-{e.root.name}-n{max_extra_identities}", indices=idx,
                                  progress=progress))
        prefixes.append(f"{e.root.name}:")
    gal = GalleryIndex.concat(*gals, prefixes=prefixes) if len(gals) > 1 else gals[0]
    true = gal.index_of([ds.identities[i] for i in probe])
    conds = {"original": None, **(transforms or {})}
    probe_ids = ids[probe]
    # per-person rows: most probes, then most images (LFW's best-known faces, like the paper's celebrities)
    n_img = pd.Series(ids).value_counts()
    counts = pd.Series(probe_ids).value_counts()
    persons = sorted(counts.index, key=lambda n: (-counts[n], -n_img[n], n))[:n_person_rows]
    rows = []
    for cond, fn in conds.items():
        emb = embed_files(net, ds, lm, probe, transform=fn, tag=cond, progress=progress)
        ranks = gal.rank(emb, true_index=true)
        for person in persons + ["overall"]:
            r = ranks if person == "overall" else ranks[probe_ids == person]
            s = metrics.rank_summary(r, len(gal))
            paper = ""
            if person == "overall":
                paper = PAPER_TABLE4_AVERAGE["original"] if cond == "original" else (
                    f"{PAPER_TABLE4_AVERAGE['deid-low']}; high-res {PAPER_TABLE4_AVERAGE['deid-high']}"
                    if cond == "deid" else "")
            rows.append({"person": person, "condition": cond, "probes": s["n"],
                         "median": s["median"], "mean ± SD": f"{s['mean']:.1f} ± {s['sd']:.1f}",
                         "rank-1": round(s["rank1"], 3), "rank-5": round(s["rank5"], 3),
                         "median % of gallery": round(s["median_pct"], 3), "paper": paper})
    df = pd.DataFrame(rows)
    write_table(name, df, f"Table 4 — rank of the true identity among {len(gal):,} gallery identities "
                          f"({net.name})", [
        f"Gallery: {len(gals[0]):,} identities of {ds.root.name} (mean of up to "
        f"{max_gallery_images or 'all'} non-probe images each)"
        + "".join(f" + {len(g):,} identities of {p[:-1]}" for g, p in zip(gals[1:], prefixes[1:])) + ".",
        f"Probes: {len(probe):,} held-out images of {len(np.unique(probe_ids)):,} {ds.root.name} identities "
        f"(up to {max_probes_per_identity} each); ranks are 1-based by cosine similarity.",
        "LFW-a is grayscale and pre-aligned while CelebA is colour: CelebA distractors are easier to reject.",
        "Paper: ArcFace LResNet50E-IR over 54,000 identities, frames of 6 celebrities.", *notes])
    return df


# ----------------------------------------------------------------------- Table 4 (small)
def table4_sample(originals: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], outputs: dict,
                  evaluators: Sequence, name: str = "table4_rank_sample") -> pd.DataFrame:
    """Table 4 on a small set: rank of the true identity when the gallery is each evaluator's
    embedding of the originals (one per identity) and the probes are the modified originals
    themselves (the strongest attack); the ``original`` row is rank 1 by construction."""
    n = len(originals)
    rows = []
    for net in evaluators:
        gallery = np.concatenate([net.embed_faces(im, [lm]) for im, lm in zip(originals, landmarks)])
        for cond, outs in {"original": originals, **outputs}.items():
            probes = np.concatenate([net.embed_faces(o, [lm]) for o, lm in zip(outs, landmarks)])
            sim = np.stack([metrics.cosine_similarity(np.repeat(p[None], len(gallery), 0), gallery)
                            for p in probes])
            s = metrics.rank_summary(metrics.ranks_from_similarity(sim, np.arange(n)), n)
            rows.append({"evaluator": net.name, "condition": cond, "probes": s["n"],
                         "median": s["median"], "mean ± SD": f"{s['mean']:.1f} ± {s['sd']:.1f}",
                         "rank-1": round(s["rank1"], 3), "median % of gallery": round(s["median_pct"], 1),
                         "paper": {"original": "median 1 of 54,000",
                                   "deid": "median 3773 of 54,000 (7.0%), low-res"}.get(cond, "")})
    df = pd.DataFrame(rows)
    write_table(name, df, f"Table 4 (small) — rank of the true identity among {n} identities", [
        f"Probes are the modified gallery photos themselves; chance median rank = {(n + 1) / 2:.1f}.",
        "Paper: ArcFace, 54,000 identities, video frames."])
    return df


def run_rank(evaluator: str = "sface", lfw_root: str | None = None, extra: Sequence[str] | None = None,
             checkpoint: str | None = None, baselines: bool = True, weights: str | None = None,
             n_probe_identities: int | None = None, max_probes_per_identity: int = 10,
             max_gallery_images: int | None = None, max_extra_identities: int | None = None,
             seed: int = 0, name: str = "table4_rank", progress: bool = True,
             lam: float | None = None):
    """Table 4 (``deid eval rank``)."""
    net = load_evaluators([evaluator], weights)[0]  # fail fast on missing weights
    root = Path(lfw_root) if lfw_root else shared_dataset("lfw-a")
    if extra is None:
        extra = [str(shared_dataset("celeba-aligned-10k"))] if paths.shared_data_dir() and lfw_root is None else []
    transforms, notes = condition_transforms(checkpoint, root if baselines else None, seed, progress,
                                              lam)
    return table4(net, root, extra, transforms, max_probes_per_identity=max_probes_per_identity,
                  n_probe_identities=n_probe_identities, max_gallery_images=max_gallery_images,
                  max_extra_identities=max_extra_identities, seed=seed, name=name, notes=notes,
                  progress=progress)

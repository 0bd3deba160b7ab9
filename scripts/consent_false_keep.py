"""False-keep risk of the video consent list (deid_core.video.consent) on in-the-wild faces.

For each person A of a folder-per-person dataset (default: <shared data>/celeba-wild-256) the
reference photo is its first image with a detected face (rule `first`) or its most
typical one (`medoid`, a good photo); all other images are probes. SFace
cosine similarity reference → probe, then for each threshold candidate:

- per image: share of (reference A, one image of a stranger B != A) pairs reaching it, and of
  (reference A, another image of A) pairs;
- per track under the consent vote rule (``vote_statistic``: keep mode a low quantile, only mode
  the median; k = votes observations): ``--draws`` random k-image tracks of each stranger B
  against each reference A, and of A itself against its own reference.

Images where the detector finds no face are skipped (a few % of the crops are not faces).
Writes results/tables/consent_false_keep.csv|.md. Exits with status 2 if the data is absent.

Usage: OMP_NUM_THREADS=1 python scripts/consent_false_keep.py [--draws 40] [--max-ids N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deid_core import paths  # noqa: E402
from deid_core.evaluate.faces import dataset_landmarks, scan_folder_dataset  # noqa: E402
from deid_core.evaluate.table_writer import write_table  # noqa: E402
from deid_core.face import read_image  # noqa: E402
from deid_core.identity import load_identity_network  # noqa: E402
from deid_core.video.consent import ConsentConfig, vote_statistic  # noqa: E402

KEEP_THRESHOLDS = (0.363, 0.40, 0.45, 0.50, 0.55, 0.60)
ONLY_THRESHOLDS = (0.20, 0.25, 0.30, 0.363)


def embed_dataset(root: Path, max_ids: int | None, threads: int):
    """(embeddings N×D of the detected images, identity index per row, names)."""
    ds = scan_folder_dataset(root, max_identities=max_ids)
    lms, det = dataset_landmarks(ds)
    net = load_identity_network("sface", threads=threads)
    keep = np.flatnonzero(det)
    chips = np.stack([net.chip(read_image(ds.path(i)), lms[i]) for i in keep])
    emb = net.embed(chips).astype(np.float64)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    names = ds.names
    ident = np.array([names.index(ds.identities[i]) for i in keep])
    return emb, ident, names, len(ds.files)


def reference_image(emb: np.ndarray, members: np.ndarray, rule: str) -> int:
    """One person's reference image: ``first`` (the first with a face, any quality) or
    ``medoid`` (highest median similarity to the person's other images: a good, typical photo,
    as a user would pick; it also skips mislabelled or non-face first images)."""
    if rule == "first" or len(members) < 3:
        return int(members[0])
    s = emb[members] @ emb[members].T
    np.fill_diagonal(s, np.nan)
    return int(members[int(np.argmax(np.nanmedian(s, axis=1)))])


def track_stats(sims_ref_to_imgs: np.ndarray, members: np.ndarray, k: int, draws: int, mode: str,
                q: float, rng: np.random.Generator) -> np.ndarray:
    """(R, draws) vote statistics of ``draws`` random k-image tracks drawn from ``members``
    (image indices of one person) against each of R references (rows of the similarity matrix)."""
    idx = np.stack([rng.choice(members, size=k, replace=False) for _ in range(draws)])
    return vote_statistic(sims_ref_to_imgs[:, idx], mode, q, axis=-1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="folder-per-person dataset (default: <shared>/celeba-wild-256)")
    ap.add_argument("--max-ids", type=int, default=None, help="use the first N identities")
    ap.add_argument("--votes", type=int, nargs="+", default=[5, 10, 15])
    ap.add_argument("--draws", type=int, default=40, help="random tracks per (reference, person) pair")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default: results/tables)")
    args = ap.parse_args()
    shared = paths.shared_data_dir()
    root = Path(args.root) if args.root else (shared / "celeba-wild-256" if shared else None)
    if root is None or not root.is_dir():
        print(f"consent_false_keep: dataset not found ({root or 'no shared data folder'}); "
              "set DEID_SHARED_DATA or pass --root. Nothing written.", file=sys.stderr)
        return 2
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    q = ConsentConfig().keep_quantile
    emb, ident, names, n_files = embed_dataset(root, args.max_ids, args.threads)
    P = len(names)
    members = [np.flatnonzero(ident == p) for p in range(P)]
    rows = []
    for rule in ("first", "medoid"):
        ref = np.array([reference_image(emb, m, rule) for m in members if len(m)])
        ref_id = ident[ref]
        S = emb[ref] @ emb.T                               # (R, N) reference → image similarity
        is_ref = np.zeros(len(emb), bool)
        is_ref[ref] = True
        same = ref_id[:, None] == ident[None, :]
        stranger_img = S[~same]
        same_img = S[same & ~is_ref[None, :]]
        print(f"{len(emb)} of {n_files} images with a face, {len(ref)} references ({rule}), "
              f"{time.time() - t0:.0f} s", flush=True)
        for mode, thresholds in (("keep", KEEP_THRESHOLDS), ("only", ONLY_THRESHOLDS)):
            for k in args.votes:
                strangers, own = [], []
                for p, m in enumerate(members):
                    if len(m) >= k:                        # tracks of person p vs every other reference
                        st = track_stats(S, m, k, args.draws, mode, q, rng)
                        strangers.append(st[ref_id != p].ravel())
                    r = np.flatnonzero(ref_id == p)
                    probes = m[~is_ref[m]]
                    if len(r) and len(probes) >= k:        # tracks of p vs p's own reference
                        own.append(track_stats(S[r], probes, k, args.draws, mode, q, rng).ravel())
                strangers_a, own_a = np.concatenate(strangers), np.concatenate(own)
                for t in thresholds:
                    rows.append({"reference": rule, "mode": mode, "threshold": t, "votes": k,
                                 "stranger_image": float((stranger_img >= t).mean()),
                                 "stranger_track": float((strangers_a >= t).mean()),
                                 "same_image": float((same_img >= t).mean()),
                                 "same_track": float((own_a >= t).mean()),
                                 "stranger_tracks": len(strangers_a), "same_tracks": len(own_a),
                                 "paper": ""})
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200):
        print(df.to_string(index=False))
    out = Path(args.out) if args.out else paths.results_dir() / "tables"
    write_table("consent_false_keep", df, out_dir=out,
                title="Consent list: false-keep / true-keep of SFace tracks vs threshold",
                notes=[f"{root.name}: {len(emb)} of {n_files} images with a detected face (the rest "
                       f"skipped), {len(ref)} people; reference: `first` = each person's first such "
                       "image (any quality; some are mislabelled or not faces), `medoid` = the image "
                       "with the highest median similarity to the person's others (a good photo)",
                       f"stranger_image / same_image: share of (reference, one image) pairs with cosine "
                       f"similarity >= threshold, stranger = another person ({len(stranger_img)} / "
                       f"{len(same_img)} pairs, medoid rule)",
                       "the false-keep floor at high thresholds is label noise: some CelebA ids are one "
                       "person (e.g. 07392/07393, 07312/07317/07314/07319 have hundreds of pairs >= 0.6)",
                       f"stranger_track / same_track: share of tracks of `votes` distinct random images "
                       f"({args.draws} per person pair) whose vote statistic reaches the threshold; "
                       f"keep mode: the {q} 'lower' quantile of the similarities, only mode: the median",
                       "keep mode: false-keep = stranger_track (a stranger left visible), true-keep = "
                       "same_track; only mode: a person's track left visible = 1 - same_track, "
                       "stranger_track = strangers de-identified as well (harmless)",
                       "distinct images per track are harsher on true keeps and kinder on strangers than "
                       "the correlated frames of one video; stranger_image is the worst case for a "
                       "static shot; with R reference people false-keep grows about R-fold",
                       f"seed {args.seed}, {args.threads} thread(s), {time.time() - t0:.0f} s"])
    print(f"wrote {out / 'consent_false_keep.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluation metrics on constructed inputs with known answers (Tables 3-5 machinery)."""
from __future__ import annotations

import numpy as np
import pytest

from deid_core.errors import DeidError
from deid_core.evaluate import metrics
from deid_core.evaluate.gallery import GalleryIndex, build_gallery, rank_probes, split_probes


def _pairs(n_folds=10, n_pos=300, n_neg=300, seed=0):
    rng = np.random.default_rng(seed)
    folds = np.repeat(np.arange(n_folds), n_pos + n_neg)
    same = np.tile(np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)], n_folds)
    return rng, folds, same


def test_tpr_at_far_separable_and_inseparable():
    rng, folds, same = _pairs()
    # perfectly separable: positives in [1, 2], negatives in [-2, 0] -> TPR 1, FAR 0
    scores = np.where(same, rng.uniform(1, 2, len(same)), rng.uniform(-2, 0, len(same)))
    tpr, far = metrics.tpr_at_far(scores, same, folds, far=1e-3)
    assert tpr.mean == 1.0 and tpr.std == 0.0 and far.mean <= 0.005  # ~FAR on held-out negatives
    # identical distributions: at FAR 1e-3 TPR must be ~1e-3 (well below 2 %)
    scores = rng.normal(size=len(same))
    tpr, far = metrics.tpr_at_far(scores, same, folds, far=1e-3)
    assert tpr.mean < 0.02 and far.mean < 0.02
    assert len(tpr.per_fold) == 10


def test_tpr_at_far_known_threshold():
    # negatives 0..2699 spread over 9 "other" folds; FAR 1e-3 of 2700 -> 2 negatives may exceed t
    neg_other = np.arange(2700, dtype=float)
    t = metrics.threshold_at_far(neg_other, 1e-3)
    assert t == 2697.0 and (neg_other > t).sum() == 2
    # fold 0's positives: half above the threshold chosen on folds 1..9 -> TPR 0.5 on fold 0
    folds = np.r_[np.zeros(4), np.repeat(np.arange(1, 10), 300)]
    same = np.r_[[True, True, True, True], np.zeros(2700, bool)]
    scores = np.r_[[3000.0, 3001.0, 10.0, 20.0], neg_other]
    tpr, _ = metrics.tpr_at_far(scores, same, folds, far=1e-3)
    assert tpr.per_fold[0] == 0.5


def test_kfold_accuracy_known():
    rng, folds, same = _pairs()
    scores = np.where(same, 1.0, -1.0) + rng.normal(scale=1e-3, size=len(same))
    assert metrics.kfold_accuracy(scores, same, folds).mean == 1.0
    # flip 10 % of the labels' scores in every fold -> accuracy 0.9
    flip = np.zeros(len(same), bool)
    for f in range(10):
        idx = np.flatnonzero(folds == f)
        flip[idx[:30]] = True   # 30 positives
        flip[idx[300:330]] = True  # 30 negatives
    acc = metrics.kfold_accuracy(np.where(flip, -scores, scores), same, folds)
    assert acc.mean == pytest.approx(0.9)


def test_pairs_input_errors():
    with pytest.raises(DeidError, match="lengths differ"):
        metrics.tpr_at_far(np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(DeidError, match="not finite"):
        metrics.kfold_accuracy(np.array([np.nan, 1]), np.array([1, 0]), np.array([0, 1]))


def test_ranks_toy_gallery():
    # 4 identities on the axes; probes constructed so their true rank is known
    gal = GalleryIndex(["a", "b", "c", "d"], np.eye(4, dtype=np.float32), np.ones(4))
    probes = np.array([[1, 0, 0, 0],          # a: rank 1
                       [0.9, 0.5, 0, 0],      # b: a is closer -> rank 2
                       [0.5, 0.6, 0.2, 0.4],  # c: b, a, d closer -> rank 4
                       [0, 0, 0.3, 0.3]], np.float32)  # d: tie with c counts in its favour -> 1
    ranks = gal.rank(probes, true_names=["a", "b", "c", "d"], batch=3)
    assert ranks.tolist() == [1, 2, 4, 1]
    sim = probes @ np.eye(4)
    assert metrics.ranks_from_similarity(sim, [0, 1, 2, 3]).tolist() == [1, 2, 4, 1]
    s = metrics.rank_summary(ranks, gallery_size=4)
    assert s["median"] == 1.5 and s["rank1"] == 0.5 and s["mean"] == 2.0
    with pytest.raises(DeidError, match="not in the gallery"):
        gal.rank(probes[:1], true_names=["zz"])


def test_gallery_from_embeddings_build_and_resume(tmp_path):
    from deid_core.evaluate.faces import Dataset
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(7, 16)).astype(np.float32)
    ids = [f"p{i}" for i in range(7) for _ in range(3)]
    emb = np.repeat(centers, 3, 0) + 0.05 * rng.normal(size=(21, 16)).astype(np.float32)
    ds = Dataset(root=tmp_path, files=[f"{n}/{k}.jpg" for k, n in enumerate(ids)], identities=ids)
    calls = []

    def embed(files):
        calls.append(len(files))
        return emb[files]

    gal = build_gallery(ds, embed, tmp_path / "g", chunk=3, progress=False)
    assert len(gal) == 7 and gal.counts.tolist() == [3] * 7 and sum(calls) == 21
    loaded = GalleryIndex.load(tmp_path / "g")
    assert loaded.names == gal.names and np.allclose(loaded.means, gal.means)
    assert (loaded.rank(centers, true_names=[f"p{i}" for i in range(7)]) == 1).all()
    # resume: completed parts are not recomputed
    calls.clear()
    build_gallery(ds, embed, tmp_path / "g", chunk=3, progress=False)
    assert calls == []
    # interrupted build: remove one part -> only that chunk is embedded again
    (tmp_path / "g" / "parts" / "part_00001.npz").unlink()
    build_gallery(ds, embed, tmp_path / "g", chunk=3, progress=False)
    assert calls == [9]


def test_split_probes_disjoint():
    ids = ["a"] * 5 + ["b"] * 1 + ["c"] * 2
    probe, gallery = split_probes(ids, max_probes_per_identity=10, seed=0)
    assert set(probe) & set(gallery) == set()
    assert sorted(np.r_[probe, gallery].tolist()) == list(range(8))
    pids = [ids[i] for i in probe]
    assert pids.count("a") == 2 and pids.count("c") == 1 and "b" not in pids


def test_rank_probes_matches_bruteforce():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(500, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = rng.normal(size=(77, 32)).astype(np.float32)
    t = rng.integers(0, 500, 77)
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    expected = metrics.ranks_from_similarity(pn @ g.T, t)
    assert (rank_probes(g, p, t, batch=10) == expected).all()


def test_nme_shifted_landmarks():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 100, (68, 2))
    ref[36], ref[45] = (20, 40), (80, 40)   # inter-ocular 60 px
    assert metrics.nme(ref + [3.0, 4.0], ref) == pytest.approx(5.0 / 60.0)
    assert metrics.nme(ref, ref) == 0.0
    batch = np.stack([ref, ref])
    assert metrics.nme(batch + [6, 0], batch) == pytest.approx([0.1, 0.1])
    with pytest.raises(DeidError):
        metrics.nme(ref[:5], ref[:5])


def test_pixel_and_descriptor_distance():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[:2] = 10
    assert metrics.pixel_distance(a, b) == 5.0
    mask = np.zeros((4, 4))
    mask[:2] = 1
    assert metrics.pixel_distance(a, b, mask) == 10.0
    x = np.array([[1.0, 0.0]])
    assert metrics.descriptor_distance(x, x)[0] == pytest.approx(0.0, abs=1e-6)
    assert metrics.descriptor_distance(x, -x)[0] == pytest.approx(2.0)
    assert metrics.descriptor_distance(x, np.array([[0.0, 3.0]]))[0] == pytest.approx(np.sqrt(2))

"""LFW pairs parsing (any layout, bad pairs files) and Table 5 on a small LFW-a subsample."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deid_core.errors import DeidError
from deid_core.evaluate.lfw import find_lfw_root, pairs_dataset, read_pairs


def _fake_lfw(root: Path, people: dict[str, int]) -> Path:
    for name, n in people.items():
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    return root


def test_read_pairs_folds_and_layouts(tmp_path):
    lfw = _fake_lfw(tmp_path / "data" / "lfw-deepfunneled", {"Ann_A": 3, "Bob_B": 2, "Cy_C": 1})
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\nBob_B\t1\t2\nCy_C\t1\tAnn_A\t3\n")
    # nested layout: the person folders are found one level below the given folder
    assert find_lfw_root(tmp_path / "data") == lfw
    p = read_pairs(pairs, tmp_path / "data")
    assert len(p) == 4 and p.same.tolist() == [True, False, True, False]
    assert p.fold.tolist() == [0, 0, 1, 1]
    assert p.a[1] == "Ann_A/Ann_A_0001.jpg" and p.b[1] == "Bob_B/Bob_B_0001.jpg"
    ds, ia, ib = pairs_dataset(p, lfw)
    assert [ds.files[i] for i in ib] == p.b and len(ds.files) == 6


def test_bad_pairs_file_lists_missing_images(tmp_path):
    _fake_lfw(tmp_path / "lfw", {"Ann_A": 1, "Bob_B": 1})
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t1\nAnn_A\t1\t7\nBob_B\t1\tZed_Z\t2\n")
    with pytest.raises(DeidError) as err:
        read_pairs(pairs, tmp_path / "lfw")
    msg = str(err.value)
    assert "2 referenced images are missing" in msg
    assert "Ann_A/Ann_A_0007.jpg" in msg and "Zed_Z/Zed_Z_0002.jpg" in msg
    pairs.write_text("1\t2\nAnn_A\t1\t1\n")
    with pytest.raises(DeidError, match="header says"):
        read_pairs(pairs, tmp_path / "lfw")
    pairs.write_text("1\t1\nAnn_A\t1\nBob_B\t1\tAnn_A\t1\n")
    with pytest.raises(DeidError, match="expected 3 or 4 fields"):
        read_pairs(pairs, tmp_path / "lfw")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DeidError, match="no LFW person folders"):
        read_pairs(pairs, tmp_path / "empty")


@pytest.mark.shared_data
@pytest.mark.slow
def test_table5_lfw_a_subsample(shared_data, tmp_path, monkeypatch):
    """Original LFW-a pairs are verified well by SFace; blur and pixelation lower the TPR."""
    from deid_core.evaluate.baselines import blur_transform, pixelate_transform
    from deid_core.evaluate.conditions import load_evaluators
    from deid_core.evaluate.lfw import table5
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path))
    monkeypatch.setenv("DEID_CACHE", str(tmp_path / "cache"))
    pairs = read_pairs(shared_data / "lfw-a" / "pairs.txt", shared_data / "lfw-a")
    assert len(pairs) == 6000 and len(np.unique(pairs.fold)) == 10
    sub = pairs.subsample(4, seed=1)
    net = load_evaluators(["sface"])[0]
    df = table5([net], sub, shared_data / "lfw-a",
                {"blur": blur_transform(0.6), "pixelate": pixelate_transform(6)}, progress=False)
    acc = {r["condition"]: float(r["10-fold accuracy"].split(" ")[0]) for _, r in df.iterrows()}
    tpr = {r["condition"]: float(r["TPR@FAR=0.001"].split(" ")[0]) for _, r in df.iterrows()}
    assert acc["original"] >= 0.85
    assert tpr["pixelate"] < tpr["original"] and tpr["blur"] <= tpr["original"]
    assert (tmp_path / "tables" / "table5_lfw.csv").is_file()
    assert "grayscale" in (tmp_path / "tables" / "table5_lfw.md").read_text()


@pytest.mark.shared_data
@pytest.mark.slow
def test_table4_rank_lfw_a_subset(shared_data, tmp_path, monkeypatch):
    """Table 4 on a 60-identity LFW-a subset (symlinked): SFace ranks most original probes first;
    pixelation pushes the true identity down."""
    from deid_core.evaluate.baselines import pixelate_transform
    from deid_core.evaluate.conditions import load_evaluators
    from deid_core.evaluate.rank import table4
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path / "res"))
    monkeypatch.setenv("DEID_CACHE", str(tmp_path / "cache"))
    src = shared_data / "lfw-a"
    people = sorted(d for d in src.iterdir() if d.is_dir())
    multi = [d for d in people if len(list(d.glob("*.jpg"))) >= 2][:30]
    single = [d for d in people if len(list(d.glob("*.jpg"))) == 1][:30]
    sub = tmp_path / "lfw-sub"
    for d in multi + single:
        (sub / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.jpg"))[:3]:
            (sub / d.name / f.name).symlink_to(f)
    net = load_evaluators(["sface"])[0]
    df = table4(net, sub, transforms={"pixelate": pixelate_transform(6)}, max_probes_per_identity=1,
                n_person_rows=2, progress=False)
    overall = df[df.person == "overall"].set_index("condition")
    assert overall.loc["original", "probes"] == 30
    assert overall.loc["original", "rank-1"] >= 0.7
    assert overall.loc["pixelate", "median"] >= overall.loc["original", "median"]
    assert overall.loc["pixelate", "rank-1"] < overall.loc["original", "rank-1"]
    md = (tmp_path / "res" / "tables" / "table4_rank.md").read_text()
    assert "among 60 gallery identities" in md


def test_dataset_landmarks_fallback_and_cache(tmp_path, monkeypatch):
    """One landmark pass for every evaluator: detected faces keep their own landmarks; an image
    with no detectable face gets the predictor inside the median detected box (flagged), and a
    second call over a subset reads the cache instead of detecting again."""
    import cv2
    from deid_core.evaluate import faces as eval_faces
    monkeypatch.setenv("DEID_CACHE", str(tmp_path / "cache"))
    src = sorted(Path("data/sample/portraits").glob("*.jpg"))[:3]
    root = tmp_path / "ds"
    for i, f in enumerate(src):
        (root / f"p{i}").mkdir(parents=True)
        img = cv2.resize(cv2.imread(str(f)), (250, 250))
        if i == 2:
            img = np.full_like(img, 128)          # nothing to detect
        cv2.imwrite(str(root / f"p{i}" / "a.png"), img)
    ds = eval_faces.scan_folder_dataset(root)
    lms, det = eval_faces.dataset_landmarks(ds, progress=False)
    assert det.tolist() == [True, True, False]
    det_lm = eval_faces.LandmarkDetector()(eval_faces.read_image(ds.path(0)))
    np.testing.assert_allclose(lms[0], det_lm, atol=1e-3)
    # the fallback lies inside the box spanned by the detected faces' landmarks, not at (0, 0)
    lo, hi = lms[:2].reshape(-1, 2).min(0) - 30, lms[:2].reshape(-1, 2).max(0) + 30
    assert (lms[2] >= lo).all() and (lms[2] <= hi).all()

    class Refuse(eval_faces.LandmarkDetector):
        def locate(self, image):
            raise AssertionError("cache miss: detected again")
    sub, sub_det = eval_faces.dataset_landmarks(ds, indices=[2, 0], detector=Refuse(), progress=False)
    np.testing.assert_array_equal(sub, lms[[2, 0]])
    assert sub_det.tolist() == [False, True]

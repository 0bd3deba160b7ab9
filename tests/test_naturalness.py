"""Naturalness metrics (evaluate.naturalness) on real faces: known answers for the identity
transform, blur, coloured noise and a painted-over face; the lambda-sweep columns; the CLI."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from deid_core.errors import DeidError
from deid_core.evaluate import metrics
from deid_core.evaluate import naturalness as N
from deid_core.evaluate.baselines import blur_transform


@pytest.fixture(scope="module")
def faces(sample_dir):
    from deid_core.evaluate.conditions import load_faces
    ims, lms, _ = load_faces(sample_dir / "portraits", max_images=3)
    return ims, lms


@pytest.fixture(scope="module")
def meter(faces):
    return N.NaturalnessMeter(*faces)        # no identity networks: fast


def _outputs(faces, fn):
    return [fn(im, lm) for im, lm in zip(*faces)]


def _coloured_noise(image, landmarks, amp=20.0):
    """Independent noise per RGB channel (coloured) at the face-detail scale (σ = IOD / 30)."""
    import cv2
    rng = np.random.default_rng(0)
    sigma = float(metrics.inter_ocular(landmarks)) / 30
    noise = cv2.GaussianBlur(rng.normal(size=image.shape).astype(np.float32), (0, 0), sigma)
    out = image.astype(np.float32)
    m = N.hull_mask(landmarks, image.shape)
    out[m] += amp * noise[m] / noise[m].std()
    return np.clip(out, 0, 255).astype(np.uint8)


def _painted(image, landmarks):
    out = image.copy()
    m = N.hull_mask(landmarks, image.shape)
    out[m] = np.median(image[m], 0).astype(np.uint8)
    return out


def test_hull_mask_and_flat_image_have_known_energy():
    sq = np.array([[10, 10], [50, 10], [50, 50], [10, 50]] * 17, np.float32)
    m = N.hull_mask(sq, (64, 64, 3))
    assert m.sum() == 41 * 41 and m[30, 30] and not m[5, 5]
    flat = np.full((64, 64, 3), (120, 90, 60), np.uint8)
    assert N.hf_energy(flat, sq, sigmas=(1.0, 2.0)) == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)


def test_identity_gives_ratio_one_and_full_retention(faces, meter):
    res = meter.measure(_outputs(faces, N.identity_transform()))
    for f in res:
        assert f.hf.luma_ratio == pytest.approx(1.0) and f.hf.chroma_ratio == pytest.approx(1.0)
        assert f.hf.fine_ratio == pytest.approx(1.0)
        assert f.retained is True and f.nme == pytest.approx(0.0) and f.rgb_distance == 0.0
    row = N.summarize(res)
    assert row["YuNet retention"] == 1.0 and row["YuNet faces"] == 3
    assert 0.9 < row["YuNet score (median)"] <= 1.0


def test_blur_lowers_luma_detail(faces, meter):
    res = meter.measure(_outputs(faces, blur_transform(0.1)))
    assert all(f.hf.luma_ratio < 0.4 for f in res)
    assert all(f.hf.chroma_ratio < 0.5 for f in res)
    assert all(f.hf.fine_ratio < 0.2 for f in res)


def test_a_perfect_128px_model_keeps_the_band(faces, meter):
    res = meter.measure(_outputs(faces, N.round_trip_transform(128)))
    assert all(0.8 < f.hf.luma_ratio <= 1.05 and 0.8 < f.hf.chroma_ratio <= 1.05 for f in res)
    assert all(f.hf.fine_ratio < 0.7 for f in res)          # finer detail: lost to the resolution
    assert all(f.retained and f.nme < 0.02 for f in res)


def test_coloured_noise_raises_chroma_detail(faces, meter):
    res = meter.measure(_outputs(faces, _coloured_noise))
    assert all(f.hf.chroma_ratio > 5.0 for f in res)
    assert all(f.hf.chroma_ratio > 4 * f.hf.luma_ratio for f in res)
    assert all(f.retained for f in res)


def test_painted_face_is_not_retained(faces, meter):
    res = meter.measure(_outputs(faces, _painted))
    assert [f.retained for f in res] == [False, False, False]
    assert N.summarize(res)["YuNet retention"] == 0.0


def test_left_visible_follows_the_audit_rule(faces, meter):
    """An unchanged face and a re-encoded copy are reported as left visible (what `deid audit`
    says of a face the run missed); a face painted over or coarsely pixelated is not."""
    from deid_core.evaluate.baselines import pixelate_transform

    def jpeg(image, landmarks):
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 60])
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)

    for fn in (N.identity_transform(), jpeg):
        res = meter.measure(_outputs(faces, fn))
        assert all(f.left_visible for f in res)
        assert N.summarize(res)["left-visible rate"] == 1.0
    for fn in (_painted, pixelate_transform(6)):
        res = meter.measure(_outputs(faces, fn))
        assert not any(f.left_visible for f in res)
        assert N.summarize(res)["left-visible rate"] == 0.0


def _painted_nose(image, landmarks):
    """Dark nostrils and a white bridge drawn on a blurred face: the hull-wide detail ratio
    stays near 1 (detail lost everywhere, gained on the nose), the local peak does not."""
    iod = float(metrics.inter_ocular(landmarks))
    out = blur_transform(0.04)(image, landmarks).copy()
    lm = np.round(landmarks).astype(int)
    r = max(2, int(iod / 14))
    for x, y in (lm[31], lm[35]):
        cv2.circle(out, (int(x), int(y)), r, (40, 25, 20), -1)
    cv2.line(out, tuple(int(v) for v in lm[27]), tuple(int(v) for v in lm[30]), (250, 235, 225), r)
    return out


def test_local_detail_peak_sees_a_painted_nose_the_hull_ratio_misses(faces, meter):
    same = [N.local_detail_peak(im, im, lm) for im, lm in zip(*faces)]
    assert same == pytest.approx([1.0] * 3)
    trip = meter.measure(_outputs(faces, N.round_trip_transform(128)))
    assert all(0.85 < f.local_peak < 1.2 for f in trip)
    blurred = meter.measure(_outputs(faces, blur_transform(0.1)))
    assert all(f.local_peak < 1.0 for f in blurred)
    nose = meter.measure(_outputs(faces, _painted_nose))
    assert all(f.local_peak > 2.0 for f in nose)
    assert all(0.6 < f.hf.luma_ratio < 1.6 for f in nose)      # what the hull-wide ratio says
    assert N.summarize(nose)["local detail peak (median)"] > 2.0


def test_box_iou_and_source_box():
    assert N.box_iou([0, 0, 10, 10], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])[0] == \
        pytest.approx([1.0, 1 / 3, 0.0])
    lm = np.array([[2, 2], [9, 9]] * 34, np.float32)
    boxes = np.array([[40, 40, 60, 60, 0.99], [0, 0, 10, 10, 0.7]])
    assert N.source_box(boxes, lm) == pytest.approx([0, 0, 10, 10])
    assert N.source_box(boxes[:1], lm) is None


def test_missing_yunet_file_is_a_clear_error(tmp_path):
    with pytest.raises(DeidError, match="YuNet"):
        N.load_yunet(tmp_path / "absent.onnx")


def test_table_rows_and_conditions(faces, meter):
    df = N.naturalness_table(*faces, {"real": N.identity_transform(), "noise": _coloured_noise},
                             meter=meter)
    assert list(df["condition"]) == ["real", "noise"] and "paper" in df.columns
    assert df.loc[1, "chroma HF ratio (median)"] > 5 > df.loc[0, "chroma HF ratio (median)"]
    with pytest.raises(DeidError):
        N.naturalness_table(*faces, [("a", N.identity_transform()), ("a", _painted)], meter=meter)


@pytest.mark.slow
def test_lambda_sweep_rows_carry_naturalness(faces, tmp_path, monkeypatch):
    from deid_core.evaluate.lambda_sweep import lambda_sweep
    from deid_core.evaluate.conditions import load_evaluators
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path))
    ims, lms = faces
    df = lambda_sweep(ims[:2], lms[:2], {0.0: N.identity_transform(), 1.0: _coloured_noise},
                      load_evaluators(["sface"]), name="lam_nat")
    for col in ("landmark NME", "luma HF ratio", "chroma HF ratio", "YuNet retention", "same-person rate"):
        assert col in df.columns
    assert df.loc[df["lambda"] == 0.0, "chroma HF ratio"].item() == pytest.approx(1.0)
    assert df.loc[df["lambda"] == 1.0, "chroma HF ratio"].item() > 5
    assert (tmp_path / "tables" / "lam_nat.md").is_file()


def test_cli_writes_its_table(tmp_path, monkeypatch, capsys):
    from deid_core.cli import main
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path))
    rc = main(["eval", "naturalness", "--max-images", "2", "--evaluator", "sface", "--no-baselines",
               "--name", "nat_cli"])
    assert rc == 0
    md = (tmp_path / "tables" / "nat_cli.md").read_text()
    assert "real (identity)" in md and "128-px round trip" in md and "YuNet retention" in md and "sface same-person rate" in md
    assert (tmp_path / "tables" / "nat_cli.csv").is_file()
    assert main(["eval", "naturalness", "--lam", "1e-5"]) == 1      # --lam without --checkpoint
    assert "--checkpoint" in capsys.readouterr().err


def _nose_stripe(image, landmarks):
    """A bright orange band along the nose (landmarks 27-30), the shortcut a strong repeller found."""
    import cv2
    out = image.copy()
    lm = np.asarray(landmarks)
    width = max(2, int(metrics.inter_ocular(landmarks) / 5))      # about the nose's width
    for a, b in zip(lm[27:30], lm[28:31]):
        cv2.line(out, tuple(int(v) for v in a), tuple(int(v) for v in b), (240, 170, 110), width)
    return out


def test_colour_shift_sees_a_blotch_the_detail_ratios_miss(faces):
    ims, lms = faces
    for im, lm in zip(ims, lms):
        assert N.colour_shift(im, im.copy(), lm) == 0
        striped = _nose_stripe(im, lm)
        blurred = blur_transform(0.03)(im, lm)
        # the stripe leaves the detail ratios natural ...
        r = N.hf_ratio(im, striped, lm)
        assert 0.6 <= r.luma_ratio <= 1.6 and 0.6 <= r.chroma_ratio <= 1.6, r
        # ... but shifts the colour far more than a blur of the face does
        assert N.colour_shift(im, striped, lm) > 3 * max(N.colour_shift(im, blurred, lm), 1.0)

"""The natural-face gate verdicts (evaluate.gates) on hand-made tables with the columns that
``deid eval naturalness`` and ``deid eval lambda`` write."""
import pandas as pd

from deid_core.evaluate.gates import Gates, gate_table


def _nat(model: dict) -> pd.DataFrame:
    base = {"luma HF ratio (median)": 1.0, "chroma HF ratio (median)": 1.0,
            "colour shift p95 (median)": 0.0, "YuNet retention": 1.0, "landmark NME (median)": 0.0,
            "sface distance (mean)": 0.0, "sface same-person rate": 1.0,
            "facenet-casia distance (mean)": 0.0, "facenet-casia same-person rate": 1.0}
    rows = [{"condition": "real (identity)", "RGB distance": 0.0, **base},
            {"condition": "deid m λ=2e-05", "RGB distance": 1.5, **{**base, **model}},
            {"condition": "blur σ=0.027·IOD", "RGB distance": 1.5, **{**base, "sface distance (mean)": 0.36,
                                                                   "facenet-casia distance (mean)": 0.43}},
            {"condition": "pixelate 40 blocks", "RGB distance": 1.7, **{**base, "sface distance (mean)": 0.35,
                                                                     "facenet-casia distance (mean)": 0.35}}]
    return pd.DataFrame(rows)


def _verdicts(table: pd.DataFrame) -> dict:
    return {(r.gate, r.faces): r.passed for r in table.itertuples()}


def test_natural_but_same_person_fails_identity_only():
    # v2i-like: natural ratios, small colour shift, recognised by both evaluators
    nat = _nat({"luma HF ratio (median)": 0.92, "chroma HF ratio (median)": 0.78,
                "colour shift p95 (median)": 1.2, "landmark NME (median)": 0.019,
                "sface distance (mean)": 0.73, "facenet-casia distance (mean)": 0.92,
                "facenet-casia same-person rate": 0.67})
    v = _verdicts(gate_table(nat))
    for gate in ("luma detail ratio", "chroma detail ratio", "colour shift p95", "YuNet retention",
                 "landmark NME", "sface distance vs blur", "sface distance vs pixelate",
                 "facenet-casia distance vs blur"):
        assert v[(gate, "held-out")] == "yes", gate
    assert v[("sface same-person rate", "held-out")] == "NO"
    assert v[("facenet-casia same-person rate", "held-out")] == "NO"


def test_colour_texture_and_blotch_fail_naturalness():
    texture = _verdicts(gate_table(_nat({"chroma HF ratio (median)": 4.15, "sface same-person rate": 0.1,
                                         "facenet-casia same-person rate": 0.04})))
    assert texture[("chroma detail ratio", "held-out")] == "NO"
    assert texture[("sface same-person rate", "held-out")] == "yes"
    blotch = _verdicts(gate_table(_nat({"colour shift p95 (median)": 4.3})))
    assert blotch[("colour shift p95", "held-out")] == "NO"
    assert blotch[("luma detail ratio", "held-out")] == "yes"


def test_baseline_comparison_needs_an_equal_pixel_budget():
    # more identity removed than blur, but with twice blur's pixel change: not a fair win
    nat = _nat({"sface distance (mean)": 0.9})
    nat.loc[nat["condition"].str.startswith("deid"), "RGB distance"] = 3.0
    v = _verdicts(gate_table(nat))
    assert v[("sface distance vs blur", "held-out")] == "NO"


def test_dial_gate_per_independent_evaluator():
    lams = [0, 5e-6, 1e-5, 1.5e-5, 2e-5]
    sweep = pd.DataFrame(
        [{"lambda": l, "evaluator": "sface", "descriptor distance": d}
         for l, d in zip(lams, [0.0, 0.11, 0.37, 0.61, 0.73])]
        + [{"lambda": l, "evaluator": "facenet-casia", "descriptor distance": d}
           for l, d in zip(lams, [0.0, 0.17, 0.55, 0.82, 0.92])]
        + [{"lambda": l, "evaluator": "dlib", "descriptor distance": d}        # loss network: no verdict
           for l, d in zip(lams, [0.0, 0.9, 0.91, 0.92, 0.93])])
    v = _verdicts(gate_table(_nat({}), sweep))
    assert v[("sface dial", "5 positions")] == "yes"            # largest step 36%
    assert v[("facenet-casia dial", "5 positions")] == "NO"     # 41%
    assert not any(g.startswith("dlib") for g, _ in v)
    loose = _verdicts(gate_table(_nat({}), sweep, gates=Gates(dial_step_max=0.45)))
    assert loose[("facenet-casia dial", "5 positions")] == "yes"


def test_wild_faces_get_their_own_verdicts():
    held = _nat({})
    wild = _nat({"colour shift p95 (median)": 4.25})
    v = _verdicts(gate_table(held, wild=wild))
    assert v[("colour shift p95", "held-out")] == "yes"
    assert v[("colour shift p95", "in the wild")] == "NO"


def test_a_face_the_audit_would_pass_through_fails_the_privacy_gate():
    # natural and unlike blur, but SFace still matches it with little pixel change (v2k-like)
    v = _verdicts(gate_table(_nat({"left-visible rate": 0.25})))
    assert v[("left visible (deid audit)", "held-out")] == "NO"
    assert _verdicts(gate_table(_nat({"left-visible rate": 0.0})))[
        ("left visible (deid audit)", "held-out")] == "yes"
    # tables written before the column existed get no verdict rather than a made-up one
    assert ("left visible (deid audit)", "held-out") not in _verdicts(gate_table(_nat({})))


def test_a_painted_feature_fails_the_local_detail_peak():
    # hull-wide ratios near 1 (v2l-like: the nose gains what the rest of the face loses)
    v = _verdicts(gate_table(_nat({"local detail peak (median)": 2.08})))
    assert v[("local detail peak", "held-out")] == "NO"
    assert v[("luma detail ratio", "held-out")] == "yes"
    assert _verdicts(gate_table(_nat({"local detail peak (median)": 1.0})))[
        ("local detail peak", "held-out")] == "yes"

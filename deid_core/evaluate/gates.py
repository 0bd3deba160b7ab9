"""The natural-face gates: one verdict per gate for one model (``deid eval gates``).

A de-identified face must look like a real, different person (§1, Fig. 1): the identity
gates ask the independent recognisers to call it someone else, the naturalness gates ask
for a face with the source's detail, colour, pose and expression, and the dial gate asks λ
to move identity step by step (Fig. 9). The verdicts are read from the tables that
:func:`~deid_core.evaluate.naturalness.run_naturalness` (``deid eval naturalness``) and
:func:`~deid_core.evaluate.lambda_sweep.run_lambda` (``deid eval lambda``) write, so a gate
table never measures anything those commands do not show.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.evaluate.conditions import DEFAULT_EVALUATORS
from deid_core.evaluate.lambda_sweep import dial_steps, run_lambda
from deid_core.evaluate.naturalness import run_naturalness, shown_path
from deid_core.evaluate.table_writer import write_table
from deid_core.model import ModelConfig, load_checkpoint
from deid_core.pipeline import model_dial

LOSS_NETWORK = "dlib"     # the training loss network: never an independent evaluator


@dataclass
class Gates:
    """The limits. ``colour_shift_max`` is ours: the detail ratios, YuNet and NME all pass
    faces with a visible orange or white patch on the nose (colour shift 3.5-5.9), which
    the colour shift separates from real faces (0), blur (0.17) and pixelation (0.25).
    ``local_peak_max`` too (the upper end of ``hf_ratio``, per block of the face): the
    hull-wide detail ratios stay near 1 when a painted nose gains the detail the rest of the
    face loses (model card, v2j-v2l). ``left_visible_max`` is the kit's own privacy check
    (``deid audit``): no output face it would report as passed through (a natural model that
    moves identity too little fails it)."""
    hf_ratio: tuple[float, float] = (0.6, 1.6)
    yunet_min: float = 0.97
    nme_max: float = 0.05
    colour_shift_max: float = 1.5
    local_peak_max: float = 1.6
    same_person_max: dict[str, float] = field(
        default_factory=lambda: {"sface": 0.25, "facenet-casia": 0.10})
    dial_step_max: float = 0.40
    left_visible_max: float = 0.0


def _row(gate: str, where: str, measured: float | str, limit: str, passed: bool | None) -> dict:
    return {"gate": gate, "faces": where, "measured": measured, "limit": limit,
            "passed": "n/a" if passed is None else ("yes" if passed else "NO"), "paper": ""}


def model_row(nat: pd.DataFrame) -> pd.Series:
    """The de-ID model's row of a naturalness table (the first ``deid …`` condition)."""
    rows = nat[nat["condition"].str.startswith("deid")]
    if rows.empty:
        raise DeidError("the naturalness table has no de-ID row (give a checkpoint)")
    return rows.iloc[0]


def naturalness_gates(nat: pd.DataFrame, where: str, g: Gates) -> list[dict]:
    """Detail ratios (hull-wide and the local peak), colour shift, YuNet retention and landmark
    NME of the model's row."""
    m = model_row(nat)
    lo, hi = g.hf_ratio
    out = []
    for band in ("luma", "chroma"):
        v = float(m[f"{band} HF ratio (median)"])
        out.append(_row(f"{band} detail ratio", where, round(v, 3), f"{lo}-{hi}", lo <= v <= hi))
    if "local detail peak (median)" in nat.columns:
        v = float(m["local detail peak (median)"])
        out.append(_row("local detail peak", where, round(v, 3), f"≤ {g.local_peak_max}",
                        v <= g.local_peak_max))
    v = float(m["colour shift p95 (median)"])
    out.append(_row("colour shift p95", where, round(v, 2), f"≤ {g.colour_shift_max}",
                    v <= g.colour_shift_max))
    v = float(m["YuNet retention"])
    out.append(_row("YuNet retention", where, round(v, 3), f"≥ {g.yunet_min}", v >= g.yunet_min))
    v = float(m["landmark NME (median)"])
    out.append(_row("landmark NME", where, round(v, 4), f"≤ {g.nme_max}", v <= g.nme_max))
    return out


def identity_gates(nat: pd.DataFrame, where: str, g: Gates) -> list[dict]:
    """No face left visible by ``deid audit``'s rule, the same-person rate per independent
    evaluator, and more identity removed than blur and pixelation at the same pixel budget
    (Table 3: the baselines are fitted to the model's RGB distance)."""
    m = model_row(nat)
    out = []
    if "left-visible rate" in nat.columns:
        v = float(m["left-visible rate"])
        out.append(_row("left visible (deid audit)", where, round(v, 3), f"≤ {g.left_visible_max:g}",
                        v <= g.left_visible_max))
    nets = [c[: -len(" same-person rate")] for c in nat.columns if c.endswith(" same-person rate")]
    for net in nets:
        if net == LOSS_NETWORK:
            continue
        v = float(m[f"{net} same-person rate"])
        limit = g.same_person_max.get(net)
        out.append(_row(f"{net} same-person rate", where, round(v, 3),
                        f"≤ {limit}" if limit is not None else "-",
                        None if limit is None else v <= limit))
        for base in ("blur", "pixelate"):
            b = nat[nat["condition"].str.startswith(base)]
            if b.empty:
                continue
            b = b.iloc[0]
            d, db = float(m[f"{net} distance (mean)"]), float(b[f"{net} distance (mean)"])
            fair = float(m["RGB distance"]) <= float(b["RGB distance"]) * 1.05
            out.append(_row(f"{net} distance vs {base}", where,
                            f"{d:.3f} vs {db:.3f} (RGB {float(m['RGB distance']):.2f} vs "
                            f"{float(b['RGB distance']):.2f})", "model > baseline at ≤ its RGB",
                            d > db and fair))
    return out


def dial_gates(lam: pd.DataFrame, g: Gates) -> list[dict]:
    """Per independent evaluator: distance monotone along the dial, no step over
    ``dial_step_max`` of the total change (Fig. 9)."""
    out = []
    for net, d in lam.groupby("evaluator", sort=False):
        if net == LOSS_NETWORK:
            continue
        s = dial_steps(d.sort_values("lambda")["descriptor distance"].to_numpy())
        shares = " / ".join(f"{x:.0%}" for x in s["shares"])
        out.append(_row(f"{net} dial", f"{len(d)} positions", shares,
                        f"monotone, each ≤ {g.dial_step_max:.0%}",
                        s["monotone"] and s["largest"] <= g.dial_step_max))
    return out


def gate_table(nat: pd.DataFrame, lam: pd.DataFrame | None = None,
               wild: pd.DataFrame | None = None, gates: Gates | None = None,
               where: str = "held-out", wild_where: str = "in the wild") -> pd.DataFrame:
    """All verdicts: naturalness and identity on the held-out faces, the dial (when ``lam``,
    a λ sweep of a λ-conditioned model, is given), naturalness and identity in the wild."""
    g = gates or Gates()
    rows = naturalness_gates(nat, where, g) + identity_gates(nat, where, g)
    if lam is not None:
        rows += dial_gates(lam, g)
    if wild is not None:
        rows += naturalness_gates(wild, wild_where, g) + identity_gates(wild, wild_where, g)
    return pd.DataFrame(rows)


def run_gates(checkpoint: str | os.PathLike, lam: float | None = None,
              images_dir: str | os.PathLike | None = None, wild_dir: str | os.PathLike | None = None,
              max_images: int | None = 24, evaluators: Sequence[str] | None = None,
              weights: str | None = None, name: str = "gates", device: str = "cpu") -> pd.DataFrame:
    """``deid eval gates``: the naturalness table of the model at λ (default: its own), its
    λ sweep over the dial's 5 positions (λ-conditioned models), the same naturalness table on
    ``wild_dir`` (e.g. ``scripts/video_frames.py``'s stills), and the verdicts as
    ``results/tables/NAME.md|csv``."""
    nets = list(evaluators or DEFAULT_EVALUATORS)
    ck = Path(checkpoint)
    if not ck.is_file():
        raise DeidError(f"checkpoint not found: {ck}")
    saved = load_checkpoint(ck)
    positions = model_dial(ModelConfig.from_dict(saved["config"]["model"]), saved.get("lam_state"))
    images = images_dir or paths.sample_dir() / "portraits"
    nat = run_naturalness(images, [(ck, lam)], max_images, nets, weights, name=f"{name}_naturalness",
                          device=device)
    sweep = (run_lambda(str(images), {p: str(ck) for p in positions}, nets, max_images, weights,
                        name=f"{name}_dial") if len(positions) > 1 else None)
    wild = (run_naturalness(wild_dir, [(ck, lam)], max_images, nets, weights, name=f"{name}_wild",
                            device=device) if wild_dir else None)
    table = gate_table(nat, sweep, wild)
    passed = int((table["passed"] == "yes").sum())
    checked = int((table["passed"] != "n/a").sum())
    write_table(name, table, f"Natural-face gates — {ck.name}" + (f" at λ = {lam:g}" if lam else ""), [
        f"Held-out: {shown_path(images)}; in the wild: {shown_path(wild_dir) if wild_dir else '(not given)'}; "
        f"{passed} of {checked} gates pass.",
        "Tables behind each verdict: "
        + ", ".join(f"results/tables/{name}_{k}.md" for k in ("naturalness", "dial", "wild")
                    if k != "wild" or wild_dir) + "."])
    return table

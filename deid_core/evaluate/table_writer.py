"""The one table writer of ``results/tables`` (CSV + Markdown, a ``paper`` column beside ours).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from deid_core import paths
from deid_core.errors import DeidError




def _md(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if np.isnan(v) else f"{v:.4g}")
            else:
                cells.append(str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(name: str, df: pd.DataFrame, title: str = "", notes: Sequence[str] = (),
                out_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``NAME.csv`` and ``NAME.md`` (title, table, notes) atomically; returns both paths."""
    if "paper" not in df.columns:
        raise DeidError(f"table {name}: every table needs a 'paper' column (empty where the paper has no number)")
    out = Path(out_dir) if out_dir else paths.results_dir() / "tables"
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    with paths.atomic_write(csv) as tmp:
        df.to_csv(tmp, index=False)
    text = (f"### {title}\n\n" if title else "") + _md(df) + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    paths.write_text_atomic(md, text)
    return csv, md


def mean_sd(m: float, s: float, digits: int = 3) -> str:
    return f"{m:.{digits}f} ± {s:.{digits}f}"

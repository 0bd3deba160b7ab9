"""Results of a notebook run: key numbers per notebook (JSON), tables, and ``results/REPORT.md``.

Each notebook saves its key numbers with :func:`save_results` into ``<results>/<notebook>.json``
(what the tests read back); tables go to ``<results>/tables/<name>.csv|.md`` (with a ``paper``
column where the paper reports a number) and figures to ``<results>/figures/<name>.png``.
:func:`write_report` gathers them with the profile, the hardware and the wall time of each
notebook into ``REPORT.md``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deid_core import paths
from deid_core.errors import DeidError




def _jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays, paths and dataclasses to plain JSON types (NaN -> None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def save_results(notebook: str, data: dict, results: str | Path | None = None) -> Path:
    """Write a notebook's key numbers to ``<results>/<notebook>.json`` (atomically) and return the path."""
    path = paths.results_dir(results) / f"{notebook}.json"
    payload = {"notebook": notebook, "written": _dt.datetime.now().isoformat(timespec="seconds"),
               **_jsonable(data)}
    paths.write_text_atomic(path, json.dumps(payload, indent=2))
    return path


def load_results(notebook: str, results: str | Path | None = None) -> dict:
    """Read back what :func:`save_results` wrote; DeidError naming the file when it is missing."""
    path = paths.results_dir(results) / f"{notebook}.json"
    if not path.is_file():
        raise DeidError(f"results of notebook {notebook} not found: {path} (run it first)")
    return json.loads(path.read_text(encoding="utf-8"))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df) -> str:
    """A pandas DataFrame as a GitHub Markdown table (no extra dependency)."""
    df = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v if not (isinstance(v, float) and math.isnan(v)) else None)
                                       for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df, name: str, results: str | Path | None = None, caption: str = "") -> Path:
    """Write ``tables/<name>.csv`` and ``tables/<name>.md`` (caption first) and return the CSV path."""
    root = paths.results_dir(results) / "tables"
    csv_path = root / f"{name}.csv"
    with paths.atomic_write(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    md = (f"{caption}\n\n" if caption else "") + markdown_table(df)
    paths.write_text_atomic(root / f"{name}.md", md)
    return csv_path


def save_figure(fig, name: str, results: str | Path | None = None, dpi: int = 110) -> Path:
    """Save a matplotlib figure to ``figures/<name>.png`` (atomically) and return the path."""
    path = paths.results_dir(results) / "figures" / f"{name}.png"
    with paths.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def _hardware() -> dict:
    try:
        from deid_core.envcheck import environment_report  # in the try: written even if torch fails
        env = environment_report()
    except Exception as exc:  # the report must still be written
        return {"error": str(exc)}
    return {k: env.get(k) for k in ("platform", "python", "cpu_count", "torch_threads",
                                    "cuda", "cuda_device")} | {
        "torch": env.get("packages", {}).get("torch"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def _key_numbers(data: dict) -> list[str]:
    """Flat scalars of a notebook's JSON (nested one level) as Markdown bullets."""
    out = []
    for key, value in data.items():
        if key in ("notebook", "written"):
            continue
        if isinstance(value, dict):
            flat = {f"{key}.{k}": v for k, v in value.items()
                    if v is None or isinstance(v, (int, float, str, bool))}
            out += [f"- `{k}`: {_fmt(v)}" for k, v in flat.items()]
        elif value is None or isinstance(value, (int, float, str, bool)):
            out.append(f"- `{key}`: {_fmt(value)}")
        elif isinstance(value, list) and len(value) <= 12 and all(
                isinstance(v, (int, float, str)) or v is None for v in value):
            out.append(f"- `{key}`: {', '.join(_fmt(v) for v in value)}")
    return out


def write_report(results: str | Path | None = None, run_log: dict | None = None) -> Path:
    """Write ``REPORT.md``: profile, hardware, notebook status and wall times, every table
    (ours next to the paper's column) and every figure. Returns its path."""
    root = paths.results_dir(results)
    log = run_log or {}
    lines = ["# deid run report", ""]
    status = log.get("status", "unknown")
    when = _dt.datetime.now().isoformat(timespec="seconds")
    lines += [f"Written {when} by `deid_core.notebook_runner` — status: **{status}**.", ""]
    if log.get("failure"):
        f = log["failure"]
        lines += [f"**Failed** in notebook `{f.get('notebook')}`, cell {f.get('cell')}: "
                  f"{f.get('error')}", ""]
    prof = log.get("profile") or {}
    lines += ["## Profile", "", f"- profile: `{prof.get('name', '?')}`, device: `{prof.get('device', '?')}`, "
              f"seed: {prof.get('seed', '?')}, data: `{prof.get('data_dir') or 'embedded sample'}`"]
    for key in ("preset", "train_steps", "train_batch", "lams", "evaluators",
                "max_frames"):
        if key in prof:
            lines.append(f"- {key}: {_fmt(prof[key]) if not isinstance(prof[key], list) else prof[key]}")
    lines += ["", "## Hardware", ""]
    lines += [f"- {k}: {v}" for k, v in _hardware().items()]
    lines += ["", "## Notebooks", "", "| notebook | status | wall time (s) | executed |",
              "|---|---|---|---|"]
    total = 0.0
    for name, rec in (log.get("notebooks") or {}).items():
        wall = rec.get("wall_s")
        total += wall or 0.0
        executed = f"[executed/{name}.ipynb](executed/{name}.ipynb)" if (root / "executed" / f"{name}.ipynb").is_file() else ""
        lines.append(f"| {name} | {rec.get('status', '')} | {_fmt(wall)} | {executed} |")
    lines += ["", f"Total notebook wall time: {total:.0f} s"
              + (f"; whole run (incl. kernel starts, report): {log['total_wall_s']:.0f} s"
                 if log.get("total_wall_s") else ""), ""]

    lines += ["## Key numbers", ""]
    for name in (log.get("notebooks") or {}):
        path = root / f"{name}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            bullets = _key_numbers(data)
            if bullets:
                lines += [f"### {name}", "", *bullets, ""]

    tables = sorted((root / "tables").glob("*.md"))
    lines += ["## Tables", "", "Ours next to the paper's values (column `paper`, where the paper "
              "reports a number; the paper's evaluators and datasets differ, see each caption).", ""]
    if not tables:
        lines += ["(no tables were written)", ""]
    for md in tables:
        body = md.read_text(encoding="utf-8").strip()
        if body.startswith("### "):   # the table's own title, one level down
            first, _, rest = body.partition("\n")
            body = f"**{first[4:].strip()}**\n{rest}"
        lines += [f"### {md.stem}", "", f"([csv](tables/{md.stem}.csv))", "", body, ""]

    figures = sorted((root / "figures").glob("*.png"))
    lines += ["## Figures", ""]
    if not figures:
        lines += ["(no figures were written)", ""]
    for png in figures:
        lines += [f"### {png.stem}", "", f"![{png.stem}](figures/{png.name})", ""]
    path = root / "REPORT.md"
    paths.write_text_atomic(path, "\n".join(lines))
    return path

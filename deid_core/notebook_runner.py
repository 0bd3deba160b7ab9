"""Execute the notebooks in order with papermill and write ``results/REPORT.md`` (``run_all.sh``).

    python -m deid_core.notebook_runner --profile smoke --device cpu [--data DIR] [--force] [--results DIR]

Each notebook runs on the ``deid`` kernel (installed into the venv by ``scripts/bootstrap.sh``)
with its profile's parameters injected, saving after every cell, into
``<results>/executed/<name>.ipynb``. A notebook whose outputs exist from an earlier successful
run with the same profile is skipped (unless ``--force``); once one notebook is executed, every
later one is executed too (its inputs changed). The run stops at the first failing notebook and
names it and its failing cell. Wall times go to ``<results>/run_log.json`` and ``REPORT.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import nbformat
import papermill as pm
from jupyter_client.kernelspec import KernelSpecManager

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.profiles import NOTEBOOKS, Profile, get_profile, notebook_parameters
from deid_core.report import write_report


NOTEBOOK_DIR = paths.REPO_ROOT / "notebooks"
KERNEL_NAME = "deid"
_INJECTED_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


@dataclass
class CellFailure:
    """Where and why a notebook stopped."""

    notebook: str
    cell: int | None            # index in the source notebook (0-based), None if unknown
    execution_count: int | None
    source: str
    error: str
    executed_path: str

    def describe(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "an unknown cell"
        if self.execution_count:
            where += f" (In [{self.execution_count}])"
        src = "\n".join("    | " + line for line in self.source.splitlines()[:6])
        return (f"notebook {self.notebook} FAILED at {where}:\n{src}\n  {self.error}\n"
                f"  executed notebook with the traceback: {self.executed_path}")


@dataclass
class RunLog:
    """What :func:`run_notebooks` did; saved to ``<results>/run_log.json``."""

    profile: dict
    notebooks: dict[str, dict] = field(default_factory=dict)
    status: str = "running"
    failure: dict | None = None
    total_wall_s: float | None = None

    def to_dict(self) -> dict:
        return {"profile": self.profile, "notebooks": self.notebooks, "status": self.status,
                "failure": self.failure, "total_wall_s": self.total_wall_s}


def check_kernel(name: str = KERNEL_NAME) -> None:
    """DeidError with the fix when the Jupyter kernel ``name`` is not installed."""
    if name not in KernelSpecManager().find_kernel_specs():
        raise DeidError(
            f"Jupyter kernel '{name}' not found: run scripts/bootstrap.sh (it runs "
            f"`.venv/bin/python -m ipykernel install --sys-prefix --name {name}`)")


def find_failure(notebook: str, executed: Path, exc: BaseException) -> CellFailure:
    """Locate the failing cell in a (partially) executed notebook written by papermill."""
    cell_idx = count = None
    source = ""
    error = f"{type(exc).__name__}: {getattr(exc, 'evalue', None) or str(exc).strip()[-300:]}"
    if getattr(exc, "ename", None):
        error = f"{exc.ename}: {exc.evalue}"
    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:
        return CellFailure(notebook, None, getattr(exc, "exec_count", None), "", error, str(executed))
    src_index = -1
    candidates = []
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & _INJECTED_TAGS:
            continue
        src_index += 1
        state = cell.get("metadata", {}).get("papermill", {})
        if state.get("exception") or state.get("status") == "failed":
            candidates.insert(0, (src_index, cell))
        elif state.get("status") == "running":   # a timeout or a dead kernel leaves it "running"
            candidates.append((src_index, cell))
    if candidates:
        cell_idx, cell = candidates[0]
        count = cell.get("execution_count")
        source = cell.get("source", "")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                error = f"{out.get('ename')}: {out.get('evalue')}"
    return CellFailure(notebook, cell_idx, count, source, error, str(executed))


def _load_previous(log_path: Path) -> dict:
    try:
        return json.loads(log_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_log(log_path: Path, log: RunLog) -> None:
    paths.write_text_atomic(log_path, json.dumps(log.to_dict(), indent=2))


def run_notebooks(profile: Profile, results: str | Path | None = None,
                  notebooks: Sequence[str] = NOTEBOOKS, notebook_dir: str | Path = NOTEBOOK_DIR,
                  force: bool = False, kernel_name: str = KERNEL_NAME,
                  progress_bar: bool | None = None, report: bool = True) -> RunLog:
    """Execute ``notebooks`` (names without ``.ipynb``) in order; return the run log.

    Raises nothing for a failing notebook: the log has ``status == "failed"`` and ``failure``.
    """
    check_kernel(kernel_name)
    root = paths.results_dir(results)
    executed_dir = root / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    notebook_dir = Path(notebook_dir)
    log_path = root / "run_log.json"
    previous = _load_previous(log_path)
    same_profile = previous.get("profile") == profile.to_dict()
    log = RunLog(profile=profile.to_dict())
    saved_env = {k: os.environ.get(k) for k in ("DEID_RESULTS", "PYTHONPATH")}
    os.environ["DEID_RESULTS"] = str(root)            # the kernels inherit it
    # The kernels import the same deid_core as this process (even if another checkout is installed).
    pkg_root = str(paths.REPO_ROOT)
    pp = os.environ.get("PYTHONPATH", "")
    if pkg_root not in pp.split(os.pathsep):
        os.environ["PYTHONPATH"] = pkg_root + (os.pathsep + pp if pp else "")
    try:
        return _run(profile, root, notebooks, notebook_dir, force, kernel_name, progress_bar,
                    report, log_path, previous, same_profile, log)
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(profile: Profile, root: Path, notebooks: Sequence[str], notebook_dir: Path, force: bool,
         kernel_name: str, progress_bar: bool | None, report: bool, log_path: Path,
         previous: dict, same_profile: bool, log: RunLog) -> RunLog:
    executed_dir = root / "executed"
    if progress_bar is None:
        progress_bar = sys.stderr.isatty()
    t_run = time.perf_counter()
    rerun_rest = force
    for i, name in enumerate(notebooks, 1):
        src = notebook_dir / f"{name}.ipynb"
        if not src.is_file():
            raise DeidError(f"notebook not found: {src}")
        out = executed_dir / f"{name}.ipynb"
        prev = (previous.get("notebooks") or {}).get(name, {})
        done_before = (same_profile and prev.get("status") in ("ok", "skipped") and out.is_file()
                       and (root / f"{name}.json").is_file())
        if done_before and not rerun_rest:
            log.notebooks[name] = {"status": "skipped", "wall_s": prev.get("wall_s"),
                                   "note": "outputs exist from an earlier run (use --force to rerun)"}
            print(f"[{i}/{len(notebooks)}] {name}: skipped (outputs exist; --force reruns)", flush=True)
            continue
        rerun_rest = True
        if name in NOTEBOOKS:
            params = notebook_parameters(name, profile, root)
        else:  # ad-hoc notebooks (tests): the common parameters only
            params = {k: v for k, v in notebook_parameters(NOTEBOOKS[0], profile, root).items()
                      if k not in ("n_prepare",)}
        timeout = profile.timeouts.get(name, 1800)
        print(f"[{i}/{len(notebooks)}] {name}: running (cell timeout {timeout} s)", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(src), str(out), parameters=params, kernel_name=kernel_name,
                request_save_on_cell_execute=True, execution_timeout=timeout,
                progress_bar=progress_bar, cwd=str(notebook_dir), store_widget_state=True)
        except Exception as exc:  # papermill error, cell timeout, dead kernel
            wall = time.perf_counter() - t0
            failure = find_failure(name, out, exc)
            log.notebooks[name] = {"status": "failed", "wall_s": round(wall, 1)}
            log.status = "failed"
            log.failure = {"notebook": name, "cell": failure.cell,
                           "execution_count": failure.execution_count,
                           "error": failure.error, "executed": failure.executed_path}
            log.total_wall_s = round(time.perf_counter() - t_run, 1)
            print(failure.describe(), file=sys.stderr, flush=True)
            _write_log(log_path, log)
            if report:
                write_report(root, log.to_dict())
            return log
        wall = time.perf_counter() - t0
        log.notebooks[name] = {"status": "ok", "wall_s": round(wall, 1)}
        print(f"[{i}/{len(notebooks)}] {name}: ok ({wall:.0f} s)", flush=True)
        _write_log(log_path, log)
    if same_profile:  # keep the record of notebooks not part of this run (--only)
        for name, rec in (previous.get("notebooks") or {}).items():
            if name not in log.notebooks and (root / f"{name}.json").is_file():
                log.notebooks[name] = {**rec, "note": "from an earlier run"}
        order = {n: i for i, n in enumerate(NOTEBOOKS)}
        log.notebooks = dict(sorted(log.notebooks.items(), key=lambda kv: order.get(kv[0], -1)))
    log.status = "ok"
    log.total_wall_s = round(time.perf_counter() - t_run, 1)
    _write_log(log_path, log)
    if report:
        path = write_report(root, log.to_dict())
        print(f"report: {path}", flush=True)
    return log


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=["smoke", "paper"], default="smoke")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--data", default=None, help="folder with your datasets (LFW, CelebA, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rerun notebooks whose outputs exist")
    p.add_argument("--results", default=None, help="results folder (default: results/ or $DEID_RESULTS)")
    p.add_argument("--only", nargs="+", choices=list(NOTEBOOKS), default=None,
                   help="run only these notebooks (in the standard order)")
    p.add_argument("--kernel", default=os.environ.get("DEID_KERNEL", KERNEL_NAME))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        profile = get_profile(args.profile, args.device, args.data, args.seed)
        names = [n for n in NOTEBOOKS if args.only is None or n in args.only]
        log = run_notebooks(profile, args.results, names, force=args.force, kernel_name=args.kernel)
    except DeidError as exc:
        print(f"run_all: error: {exc}", file=sys.stderr)
        return 1
    if log.status != "ok":
        print(f"run_all: stopped at notebook {log.failure['notebook']}", file=sys.stderr)
        return 1
    print(f"run_all: {len(log.notebooks)} notebooks ok in {log.total_wall_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Strip outputs from notebooks/*.ipynb (the notebooks are the source; commit them clean).

    .venv/bin/python scripts/strip_notebooks.py           # strip in place
    .venv/bin/python scripts/strip_notebooks.py --check   # exit 1 if a notebook has outputs

Removes code-cell outputs and execution counts and the saved widget state; keeps cell ids,
tags (the ``parameters`` cell) and the kernelspec.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
RUN_METADATA = ("widgets", "papermill")


def strip(nb: nbformat.NotebookNode) -> bool:
    """Strip ``nb`` in place; True when anything was removed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            changed |= bool(cell.get("outputs")) or cell.get("execution_count") is not None
            cell["outputs"], cell["execution_count"] = [], None
        for key in ("execution", "papermill"):
            changed |= cell.metadata.pop(key, None) is not None
    for key in RUN_METADATA:
        changed |= nb.metadata.pop(key, None) is not None
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    ap.add_argument("--check", action="store_true", help="only report notebooks with outputs")
    args = ap.parse_args(argv)
    dirty = []
    for path in args.paths or sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            dirty.append(path.name)
            if not args.check:
                nbformat.write(nb, path)
    if dirty:
        print(("has outputs: " if args.check else "stripped: ") + ", ".join(dirty))
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())

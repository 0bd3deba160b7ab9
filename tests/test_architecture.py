"""The package's shape: layers whose imports only point down, small modules, module-level imports.

Layers (each may import the ones before it, never one after it):

    errors, paths → identity, face → recipe, transfer, model, augment, losses → pipeline, train
    → video, audit
    → evaluate → notebook helpers (envcheck, profiles, report, plots, notebook_runner) → cli
"""
from __future__ import annotations

import ast
from pathlib import Path

from deid_core import paths

PACKAGE = paths.REPO_ROOT / "deid_core"
MAX_LINES = 600
MAX_FUNCTION_IMPORT_SHARE = 0.20

#: what each unit (top-level module or sub-package of deid_core) may import besides itself
BASE = {"deid_core", "errors", "paths"}
ALLOWED = {
    "errors": set(), "paths": {"errors"},
    "identity": BASE, "face": BASE,
    "recipe": BASE, "transfer": BASE, "model": BASE | {"recipe", "transfer"}, "augment": BASE,
    "losses": BASE | {"identity", "recipe", "augment", "model", "transfer"},
    "pipeline": BASE | {"face", "identity", "model", "recipe", "transfer"},
    "train": BASE | {"face", "identity", "model", "recipe", "augment", "losses", "transfer"},
    "video": BASE | {"face"},
    "audit": BASE | {"face", "identity", "video"},
    "evaluate": BASE | {"face", "identity", "model", "recipe", "transfer", "pipeline", "video"},
}
NOTEBOOK_HELPERS = {"envcheck", "profiles", "report", "plots", "notebook_runner"}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "deid_core"


def internal_imports() -> list[tuple[str, str, bool]]:
    """(importing module, imported module, inside a function) for every deid_core import."""
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(paths.REPO_ROOT).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                targets = [node.module or ""]
                if node.module == "deid_core":      # from deid_core import paths, video
                    targets = [f"deid_core.{a.name}" for a in node.names if a.name != "__version__"] \
                        or ["deid_core"]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            q, in_function = node, False
            while q in parents:
                q = parents[q]
                if isinstance(q, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    in_function = True
                    break
            rows += [(module, t, in_function) for t in targets if t.split(".")[0] == "deid_core"]
    return rows


def test_no_module_over_600_lines():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


def test_imports_point_down():
    upward = []
    for module, target, _ in internal_imports():
        src, dst = _unit(module), _unit(target)
        if src == dst or dst == "deid_core":
            continue
        if src in ALLOWED and dst not in ALLOWED[src]:
            upward.append(f"{module} -> {target}")
        elif src in NOTEBOOK_HELPERS and dst == "cli":
            upward.append(f"{module} -> {target}")
    assert upward == []


def test_identity_is_a_leaf_and_test_time_code_imports_no_training_or_notebook_helpers():
    for module, target, _ in internal_imports():
        if _unit(module) == "identity":
            assert _unit(target) in {"identity", "errors", "paths", "deid_core"}, (module, target)
        if _unit(module) in {"pipeline", "video", "face"}:
            assert _unit(target) not in {"train", "evaluate", "cli"} | NOTEBOOK_HELPERS, (module, target)


def test_most_internal_imports_are_module_level():
    rows = internal_imports()
    share = sum(in_fn for *_, in_fn in rows) / len(rows)
    assert share <= MAX_FUNCTION_IMPORT_SHARE, f"{share:.0%} of {len(rows)} imports inside functions"

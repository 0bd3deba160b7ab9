"""The notebooks runner (papermill) and the notebooks themselves, executed in the smoke profile.

Fast tests exercise the runner on tiny throw-away notebooks (failure reporting, skip, --force,
widget state). The ``slow`` test executes notebooks/00..05 once (module-scoped fixture, into a
temporary results folder) and asserts on the key numbers each notebook saved.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from deid_core import paths
from deid_core.profiles import NOTEBOOKS, get_profile, notebook_parameters
from deid_core.report import load_results, markdown_table, save_results, write_report
from deid_core.notebook_runner import run_notebooks

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "deid", "display_name": "deid (.venv)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("profile = 'smoke'\nresults_dir = None\nseed = 0",
                                          metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, path)


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _notebook(nbdir / "a_ok.ipynb", [
        "from deid_core.report import save_results\n"
        "import ipywidgets as w\n"
        "slider = w.FloatLogSlider(value=1e-6, base=10, min=-8, max=-5, description='λ')\n"
        "display(slider)",
        "save_results('a_ok', {'answer': 6 * 7, 'seed': seed, 'profile': profile}, results_dir)",
    ])
    _notebook(nbdir / "b_fail.ipynb", [
        "x = 1",
        "raise ValueError('deliberate failure in b')",
        "never = True",
    ])
    return nbdir, tmp_path / "results"


def test_runner_skip_force_and_widget_state(tiny):
    nbdir, res = tiny
    prof = get_profile("smoke", "cpu")
    log = run_notebooks(prof, res, ["a_ok"], notebook_dir=nbdir, progress_bar=False)
    assert log.status == "ok" and log.notebooks["a_ok"]["status"] == "ok"
    assert load_results("a_ok", res)["answer"] == 42
    assert log.notebooks["a_ok"]["wall_s"] > 0
    executed = nbformat.read(res / "executed" / "a_ok.ipynb", as_version=4)
    # papermill injected the profile's parameters after the tagged cell
    tags = [c.metadata.get("tags", []) for c in executed.cells]
    assert ["injected-parameters"] in tags
    # the slider's state is saved in the notebook metadata so JupyterLab can render it offline
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for c in executed.cells for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views and all(v in state for v in views)
    assert state[views[0]]["state"]["_model_name"] == "FloatLogSliderModel"
    # second run: outputs exist -> skipped; --force -> executed again
    log2 = run_notebooks(prof, res, ["a_ok"], notebook_dir=nbdir, progress_bar=False)
    assert log2.notebooks["a_ok"]["status"] == "skipped"
    log3 = run_notebooks(prof, res, ["a_ok"], notebook_dir=nbdir, progress_bar=False, force=True)
    assert log3.notebooks["a_ok"]["status"] == "ok"
    # another profile setting invalidates the earlier outputs
    log4 = run_notebooks(get_profile("smoke", "cpu", seed=3), res, ["a_ok"], notebook_dir=nbdir,
                         progress_bar=False)
    assert log4.notebooks["a_ok"]["status"] == "ok" and load_results("a_ok", res)["seed"] == 3
    assert (res / "REPORT.md").is_file()


def test_runner_stops_at_failing_cell(tiny, capsys):
    nbdir, res = tiny
    prof = get_profile("smoke", "cpu")
    log = run_notebooks(prof, res, ["b_fail", "a_ok"], notebook_dir=nbdir, progress_bar=False)
    assert log.status == "failed"
    assert log.failure["notebook"] == "b_fail"
    assert log.failure["cell"] == 2          # 0: parameters, 1: x = 1, 2: the raise
    assert "ValueError" in log.failure["error"] and "deliberate failure" in log.failure["error"]
    assert "a_ok" not in log.notebooks       # stopped at the first failing notebook
    err = capsys.readouterr().err
    assert "b_fail FAILED at cell 2" in err and "raise ValueError" in err
    assert (res / "executed" / "b_fail.ipynb").is_file()
    report = (res / "REPORT.md").read_text()
    assert "**failed**" in report and "b_fail" in report


def test_report_helpers(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"metric": ["rank", "tpr"], "ours": [12.5, float("nan")], "paper": [1e-4, 0.03]})
    md = markdown_table(df)
    assert md.splitlines()[0] == "| metric | ours | paper |" and "| tpr |  | 0.03 |" in md
    save_results("x", {"v": 1.5, "nested": {"a": 2}}, tmp_path)
    assert load_results("x", tmp_path)["nested"]["a"] == 2
    (tmp_path / "tables" / "t.md").write_text("| a | paper |\n|---|---|\n| 1 | 2 |\n")
    rep = write_report(tmp_path, {"status": "ok", "profile": get_profile("smoke", "cpu").to_dict(),
                                  "notebooks": {"x": {"status": "ok", "wall_s": 3.0}}})
    text = rep.read_text()
    assert "| 1 | 2 |" in text and "`v`: 1.5" in text and "| x | ok | 3 |" in text


def _strip_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("strip_notebooks",
                                                  paths.REPO_ROOT / "scripts" / "strip_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebooks_are_the_source_without_outputs():
    """notebooks/*.ipynb are edited as notebooks: committed without outputs (scripts/strip_notebooks.py),
    no generator script, one tagged parameters cell each."""
    assert not (paths.REPO_ROOT / "scripts" / "build_notebooks.py").exists()
    strip = _strip_module().strip
    for name in NOTEBOOKS:
        nb = nbformat.read(paths.REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        assert not strip(nb), f"{name} is committed with outputs: run scripts/strip_notebooks.py"
        assert len({c.get("id") for c in nb.cells}) == len(nb.cells), f"{name}: duplicate cell ids"


def test_strip_notebooks_removes_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 + 1", metadata={"tags": ["parameters"]})
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    cell.execution_count = 1
    nb.cells = [cell]
    nb.metadata["widgets"] = {"state": {}}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    mod = _strip_module()
    assert mod.main([str(path), "--check"]) == 1
    assert mod.main([str(path)]) == 0 and mod.main([str(path), "--check"]) == 0
    back = nbformat.read(path, as_version=4)
    assert back.cells[0].outputs == [] and back.cells[0].metadata["tags"] == ["parameters"]
    assert "widgets" not in back.metadata


def test_notebook_03_table3_equals_cli(tmp_path, monkeypatch, sample_dir):
    """Notebook 03's Table 3 cell and `deid eval table3` give the same rows on the same data
    (one implementation: evaluate.distances.run_table3)."""
    import pandas as pd

    from deid_core.cli import main

    ckpt = paths.default_checkpoint()
    if ckpt is None:
        pytest.skip("no committed starter checkpoint in data/checkpoints/")
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path / "results"))
    nb = nbformat.read(paths.REPO_ROOT / "notebooks" / "03_identity_evaluation.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "run_table3(" in c.source)
    ns = {"sample": sample_dir, "ckpt": ckpt, "evaluators": ["sface"], "n_identities": 3,
          "lam": None, "device": "cpu"}
    exec(cell.source, ns)
    notebook_rows = ns["t3run"].table
    assert main(["eval", "table3", "--images", str(sample_dir / "portraits"), "--max-images", "3",
                 "--checkpoint", str(ckpt), "--evaluator", "sface", "--name", "table3_cli"]) == 0
    tables = tmp_path / "results" / "tables"
    cli_rows = pd.read_csv(tables / "table3_cli.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tables / "table3_distances.csv"), cli_rows)
    assert list(notebook_rows["method"]) == list(cli_rows["method"])
    assert set(cli_rows["method"]) == {"deid", "blur", "pixelate", "swap [41]"}


def test_profiles_parameters_match_notebook_cells():
    """Every notebook's parameters cell defines exactly the names the runner injects."""
    prof = get_profile("smoke", "cpu")
    for name in NOTEBOOKS:
        nb = nbformat.read(paths.REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, name
        ns: dict = {}
        exec(cells[0].source, ns)
        assert set(notebook_parameters(name, prof, "results")) <= set(ns), name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            f"{name} is committed with outputs"


# ----------------------------------------------------------------------------------------
# The real notebooks, smoke profile, as on a fresh machine (no shared data), one run.

SMOKE_TRAIN_STEPS = 8


def smoke_test_profile():
    """The smoke profile, lightened for CI: fewer training steps, faces and identities."""
    prof = get_profile("smoke", "cpu")
    prof.train_steps = SMOKE_TRAIN_STEPS
    prof.n_sweep_faces = 3
    prof.n_eval_identities = 8
    return prof


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    res = tmp_path_factory.mktemp("smoke_results")
    saved = os.environ.get("DEID_SHARED_DATA")
    os.environ["DEID_SHARED_DATA"] = str(res / "nonexistent")     # a fresh user machine
    try:
        log = run_notebooks(smoke_test_profile(), res, progress_bar=False)
    finally:
        if saved is None:
            os.environ.pop("DEID_SHARED_DATA", None)
        else:
            os.environ["DEID_SHARED_DATA"] = saved
    return res, log


def _executed(res: Path, name: str):
    return nbformat.read(res / "executed" / f"{name}.ipynb", as_version=4)


@pytest.mark.slow
def test_smoke_run_all_notebooks_ok(smoke_run):
    res, log = smoke_run
    assert log.status == "ok", log.failure
    assert list(log.notebooks) == list(NOTEBOOKS)
    assert all(r["status"] == "ok" and r["wall_s"] > 0 for r in log.notebooks.values())
    report = (res / "REPORT.md").read_text()
    for name in NOTEBOOKS:
        assert f"| {name} | ok |" in report
    for md in (res / "tables").glob("*.md"):
        assert f"### {md.stem}" in report
    for png in (res / "figures").glob("*.png"):
        assert f"figures/{png.name}" in report
    for name in NOTEBOOKS:   # no error outputs hidden anywhere
        nb = _executed(res, name)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.slow
def test_smoke_00_and_01(smoke_run):
    import pandas as pd

    res, log = smoke_run
    r0 = load_results("00_setup_and_data", res)
    assert r0["n_portraits"] == 24 and r0["n_aligned"] == 24 and r0["models_missing"] == []
    assert r0["shared_data"] is False
    assert (res / "figures" / "aligned_faces.png").stat().st_size > 10_000
    r1 = load_results("01_train", res)
    assert r1["steps"] == SMOKE_TRAIN_STEPS
    assert Path(r1["trained_checkpoint"]).is_file() and Path(r1["checkpoint"]).is_file()
    losses = pd.read_csv(Path(r1["trained_checkpoint"]).parent / "losses.csv")
    # every term the run's recipe has is logged at every step (terms of the other recipe: empty)
    logged = losses.drop(columns="step").dropna(axis=1, how="all")
    assert len(losses) == SMOKE_TRAIN_STEPS and logged.notna().all().all()
    assert {"total", "R_raw", "G", "D", "p_raw", "m", "lam"} <= set(logged.columns)
    assert set(r1["loss_last"]) >= {"R_raw", "G", "D", "p_raw", "m"}


@pytest.mark.slow
def test_smoke_05_video(smoke_run):
    res, _ = smoke_run
    r5 = load_results("05_video_demo", res)
    meta = json.loads((paths.sample_dir() / "clip" / "nasa_clip.json").read_text())
    assert r5["frames"] == meta["n_frames"] and r5["same_size"]
    assert r5["audio_in"] == r5["audio_out"] == "aac"
    assert r5["tracks"] >= 2 and r5["frames_with_faces"] >= meta["n_frames"] - meta["no_face_frames"] - 2
    assert r5["fps"] > 0 and 0 < r5["flicker_ratio"] < 10
    nb = _executed(res, "05_video_demo")
    html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any("<video" in o["data"]["text/html"] and "base64" in o["data"]["text/html"] for o in html)


@pytest.mark.slow
def test_smoke_02_lambda_sweep_and_widget_state(smoke_run):
    import numpy as np

    res, _ = smoke_run
    prof = smoke_test_profile()
    r2 = load_results("02_lambda_sweep", res)
    assert r2["lams"] == prof.lams and r2["n_sources"] == prof.n_sweep_faces
    for name in prof.evaluators:
        d = np.asarray(r2["distance"][name], dtype=float)
        assert d.shape == (len(prof.lams),) and np.isfinite(d).all() and (d >= 0).all()
        # the dial moves the identity: a model that returns its input (or ignores λ) fails here
        assert d[-1] > d[0] + 0.2, (name, d)
        assert r2["spearman"][name] > 0.5, (name, r2["spearman"])
    rgb = np.asarray(r2["rgb_distance"], dtype=float)
    assert rgb[-1] > rgb[0] + 0.5, rgb      # grey levels (0-255), Fig. 9; a warp head moves ~1
    assert (res / "figures" / "fig9_lambda_sweep_distance.png").is_file()
    assert (res / "figures" / "fig9_lambda_sweep.png").is_file()
    assert "paper" in (res / "tables" / "fig9_lambda_sweep.csv").read_text().splitlines()[0]
    # The dial's widgets (slider, pickers, rendered images) are saved in the notebook metadata,
    # so JupyterLab shows them from the file; every displayed view refers to a saved model.
    nb = _executed(res, "02_lambda_sweep")
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {m["model_name"] for m in state.values()}
    assert {"DropdownModel", "ImageModel", "VBoxModel"} <= models
    # the slider follows the model's dial: linear (deid recipe) or log-scaled (paper λ)
    assert models & {"FloatSliderModel", "FloatLogSliderModel"}, models
    views = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for c in nb.cells for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views and all(v in state for v in views)
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    # rendered once: the PNG bytes travel as base64 buffers of the Image models
    assert images and all(any(b["path"] == ["value"] and len(b["data"]) > 100
                              for b in m.get("buffers", [])) for m in images)


@pytest.mark.slow
def test_smoke_03_deid_moves_identity_more_than_nothing(smoke_run):
    """Table 3 / small Table 4 on the sample: the de-identified faces differ from the originals
    in pixels and in every evaluator's descriptor (a model that does nothing gives 0 and 0),
    are never re-identified more often than the originals, and the ranking responds to a
    change that removes identity (pixelation lowers rank-1). The committed warp-head model
    keeps rank-1 at 1.0 in this 8-identity gallery (its model card: recognisers still know
    the person)."""
    res, _ = smoke_run
    prof = smoke_test_profile()
    r3 = load_results("03_identity_evaluation", res)
    assert r3["n_images"] == prof.n_eval_identities
    for ev in prof.evaluators:
        row = r3["table3"][f"deid|{ev}"]
        assert row["rgb"] > 1.0 and row["desc"] > 0.3, (ev, row)
    rank1 = {k: v["rank1"] for k, v in r3["table4_sample"].items()}
    assert all(rank1[f"original|{ev}"] == 1.0 for ev in prof.evaluators)
    assert all(rank1[f"deid|{ev}"] <= rank1[f"original|{ev}"] for ev in prof.evaluators), rank1
    assert any(rank1[f"pixelate|{ev}"] < rank1[f"original|{ev}"] for ev in prof.evaluators), rank1


@pytest.mark.slow
def test_smoke_04_study_material_holds_changed_faces(smoke_run):
    """User-study sheet: every person's de-ID probe differs visibly from the original probe
    (a model that does nothing would put identical images on the sheet); the scores exist."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    res, _ = smoke_run
    r4 = load_results("04_user_study", res)
    study = res / "user_study" / "identify"
    key = pd.read_csv(study / "answer_key" / "key.csv", comment="#")
    assert len(key) == 2 * len(r4["persons"]) and set(key["condition"]) == {"original", "deid"}
    for truth, rows in key.groupby("truth"):
        ims = {c: np.asarray(Image.open(study / "probes" / f"{t}.jpg").convert("RGB"), dtype=float)
               for t, c in zip(rows["trial_id"], rows["condition"])}
        assert np.abs(ims["deid"] - ims["original"]).mean() > 1.0, truth
    assert 0 <= r4["auto_accuracy_deid"] <= 1 and 0 <= r4["auto_accuracy_original"] <= 1
    assert np.asarray(r4["confusion_deid"]).shape == np.asarray(r4["confusion_original"]).shape
